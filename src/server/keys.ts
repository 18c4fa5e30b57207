/**
 * Key generations (DESIGN.md "Keys and the attestation binding"). Each generation holds an
 * HPKE X25519 key for requests and an Ed25519 key for receipts, both generated here, inside
 * the server process, and never exported; and the encoded key config (PROTOCOL.md section 1)
 * that the attester binds into the evidence.
 *
 * Rotation: a generation is current for `rotationIntervalMs`, then stays usable for
 * `graceMs` as the previous generation (clients that fetched evidence just before the
 * rotation still succeed). A request naming a key id that was retired gets KEY_STALE, which
 * the client answers by re-fetching and re-verifying evidence. A key id never issued is
 * UNKNOWN_KEY_ID. Rotation is driven by the clock on access, so no timer keeps the process alive.
 */
import { randomInt } from 'node:crypto';
import { CloisterError } from '../errors.js';
import type { Platform } from '../core/types.js';
import type { ModelInfo } from '../inference/types.js';
import { HpkeRecipientKey } from '../crypto/hpke/kem.js';
import {
  AEAD_AES_128_GCM,
  AEAD_CHACHA20_POLY1305,
  KDF_HKDF_SHA256,
  KEM_DHKEM_X25519_HKDF_SHA256,
} from '../crypto/hpke/suite.js';
import type { HpkeSuite } from '../crypto/hpke/suite.js';
import { encodeKeyConfig } from '../protocol/key-config.js';
import { generateReceiptKeyPair, signReceipt } from '../protocol/messages.js';
import type { KeyConfig } from '../protocol/key-config.js';

export const DEFAULT_KEY_ROTATION_INTERVAL_MS = 60 * 60 * 1000;
export const DEFAULT_KEY_GRACE_MS = 5 * 60 * 1000;
const SUPPORTED_AEAD_IDS: readonly number[] = [AEAD_AES_128_GCM, AEAD_CHACHA20_POLY1305];

export interface KeyGeneration {
  /** Increments by one per rotation (local bookkeeping; caches key off it). */
  readonly generation: number;
  readonly keyId: number;
  readonly recipient: HpkeRecipientKey;
  readonly hpkePublicKey: Uint8Array;
  readonly receiptPublicKey: Uint8Array;
  /** The exact encoded key config bytes, bound into the evidence. */
  readonly keyConfig: Uint8Array;
  readonly notBeforeMs: number;
  /** When this generation stops being current. */
  readonly rotateAtMs: number;
  /** Signs a receipt message with this generation's Ed25519 key. */
  signReceipt(message: Uint8Array): Uint8Array;
}

interface KeyManagerOptions {
  readonly platform: Platform;
  readonly models: readonly ModelInfo[];
  /** SHA-256 of the server's effective config, 32 bytes. */
  readonly configDigest: Uint8Array;
  readonly engine?: KeyConfig['engine'];
  readonly rotationIntervalMs?: number;
  readonly graceMs?: number;
  readonly now?: () => number;
  /** Called after each rotation (logging). */
  readonly onRotate?: (current: KeyGeneration) => void;
}

export class KeyManager {
  readonly rotationIntervalMs: number;
  readonly graceMs: number;
  private readonly now: () => number;
  private cur: KeyGeneration;
  private prev: { gen: KeyGeneration; until: number } | undefined;
  /** Key ids of generations that were retired (a request naming one is KEY_STALE). */
  private readonly retired = new Set<number>();
  private counter = 0;

  constructor(private readonly options: KeyManagerOptions) {
    this.rotationIntervalMs = options.rotationIntervalMs ?? DEFAULT_KEY_ROTATION_INTERVAL_MS;
    this.graceMs = options.graceMs ?? DEFAULT_KEY_GRACE_MS;
    this.now = options.now ?? Date.now;
    if (!(this.rotationIntervalMs >= 1000) || !(this.graceMs >= 0)) {
      throw new CloisterError('CONFIG_INVALID', 'key rotation interval must be at least 1 s and grace non-negative');
    }
    if (options.configDigest.byteLength !== 32) throw new CloisterError('CONFIG_INVALID', 'config digest must be 32 bytes');
    // Random first key id, so a restarted server rarely reuses the id a client still holds.
    this.cur = this.mint(randomInt(256), this.now());
  }

  /** The current generation, rotating first if its interval has passed. */
  current(): KeyGeneration {
    this.tick();
    return this.cur;
  }

  /** Forces a rotation now (operators, tests). */
  rotate(): KeyGeneration {
    const now = this.now();
    if (this.prev !== undefined) this.retired.add(this.prev.gen.keyId);
    this.prev = { gen: this.cur, until: now + this.graceMs };
    this.cur = this.mint((this.cur.keyId + 1) % 256, now);
    this.options.onRotate?.(this.cur);
    return this.cur;
  }

  /**
   * The generation a sealed request names. Throws KEY_STALE for a retired key id,
   * UNKNOWN_KEY_ID for one never issued, UNSUPPORTED_SUITE for a suite we did not publish.
   */
  lookup(keyId: number, suite: HpkeSuite): KeyGeneration {
    this.tick();
    if (suite.kemId !== KEM_DHKEM_X25519_HKDF_SHA256 || suite.kdfId !== KDF_HKDF_SHA256 || !SUPPORTED_AEAD_IDS.includes(suite.aeadId)) {
      throw new CloisterError('UNSUPPORTED_SUITE');
    }
    if (keyId === this.cur.keyId) return this.cur;
    if (this.prev !== undefined && keyId === this.prev.gen.keyId) return this.prev.gen;
    if (this.retired.has(keyId)) throw new CloisterError('KEY_STALE', undefined, { detail: { keyId } });
    throw new CloisterError('UNKNOWN_KEY_ID', undefined, { detail: { keyId } });
  }

  private tick(): void {
    const now = this.now();
    if (this.prev !== undefined && now >= this.prev.until) {
      this.retired.add(this.prev.gen.keyId);
      this.prev = undefined;
    }
    if (now >= this.cur.rotateAtMs) this.rotate();
  }

  private mint(keyId: number, now: number): KeyGeneration {
    this.retired.delete(keyId);
    const recipient = HpkeRecipientKey.generate();
    const { privateKey: receiptKey, publicKey: receiptPublicKey } = generateReceiptKeyPair();
    const hpkePublicKey = recipient.publicKey;
    const rotateAtMs = now + this.rotationIntervalMs;
    const config: KeyConfig = {
      version: 1,
      keyId,
      kemId: KEM_DHKEM_X25519_HKDF_SHA256,
      kdfId: KDF_HKDF_SHA256,
      aeadIds: [...SUPPORTED_AEAD_IDS],
      hpkePublicKey,
      receiptPublicKey,
      models: this.options.models.map((m) => ({ name: m.name, task: m.task, digest: Uint8Array.from(m.digest) })),
      configDigest: Uint8Array.from(this.options.configDigest),
      platform: this.options.platform,
      notBefore: Math.floor(now / 1000),
      // A client may use the key while it is current or in its grace period.
      expiresAt: Math.ceil((rotateAtMs + this.graceMs) / 1000),
      ...(this.options.engine === undefined ? {} : { engine: this.options.engine }),
    };
    const keyConfig = encodeKeyConfig(config);
    return Object.freeze({
      generation: this.counter++,
      keyId,
      recipient,
      hpkePublicKey,
      receiptPublicKey,
      keyConfig,
      notBeforeMs: now,
      rotateAtMs,
      signReceipt: (message: Uint8Array) => signReceipt(receiptKey, message),
    });
  }
}
