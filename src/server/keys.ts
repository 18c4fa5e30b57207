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
import { createPrivateKey, createPublicKey, randomInt } from 'node:crypto';
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
import { encodeKeyConfig, keyGenerationDigest } from '../protocol/key-config.js';
import { ReceiptLog } from '../protocol/receipt-v2.js';
import type { ReceiptLogOptions } from '../protocol/receipt-v2.js';
import { generateReceiptKeyPair, signReceipt } from '../protocol/messages.js';
import type { KeyConfig } from '../protocol/key-config.js';
import { SESSION_PROTOCOL_VERSION } from '../protocol/session.js';
import { replicaKeyConfig } from '../protocol/replica.js';

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
  /**
   * The same key config with `protocols: [1, 2]` (sessions, PROTOCOL.md section 11), for
   * clients that ask for version 2; v1 clients get `keyConfig`, which their decoder accepts.
   * With fleet keys it is `keyConfig` itself: a fleet offers no sessions (see mint()).
   */
  readonly keyConfigV2: Uint8Array;
  readonly notBeforeMs: number;
  /** When this generation stops being current. */
  readonly rotateAtMs: number;
  /** Signs a receipt message with this generation's Ed25519 key. */
  signReceipt(message: Uint8Array): Uint8Array;
  /** Receipts v2: this generation's append-only log, tree heads signed with its receipt key. */
  readonly receiptLog: ReceiptLog;
  /**
   * Fleet keys only (src/protocol/replica.ts): this replica's own receipt key, which signs its
   * receipts, and the replica key config its statement (evidence) binds. The fleet key
   * config's receiptPublicKey signs nothing.
   */
  readonly replica?: { readonly receiptPublicKey: Uint8Array; readonly keyConfig: Uint8Array };
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
  /**
   * Fleet keys (docs/KEYS.md "Fleet keys"), newest first: released by the key broker and
   * shared by every replica, so all of them publish the same key config. The newest is
   * current, the one after it (if any) stays usable as the previous generation until it
   * expires; nothing rotates locally (the broker rotates, replicas restart or re-fetch).
   */
  readonly fleet?: readonly FleetKey[];
  /** Receipts v2 log bounds and tree head period (per generation). */
  readonly receiptLog?: ReceiptLogOptions;
}

export interface FleetKey {
  readonly keyId: number;
  /** Raw X25519 private key, 32 bytes. */
  readonly hpkePrivateKey: Uint8Array;
  /** Ed25519 private key seed, 32 bytes. */
  readonly receiptSeed: Uint8Array;
  readonly notBeforeMs: number;
  readonly expiresAtMs: number;
}

const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/** The fleet's receipt public key (named by the fleet key config; with replicaReceipts it signs nothing). */
function receiptPublicKeyFromSeed(seed: Uint8Array): Uint8Array {
  if (seed.byteLength !== 32) throw new CloisterError('CONFIG_INVALID', 'a fleet receipt seed must be 32 bytes');
  const privateKey = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  const { x } = createPublicKey(privateKey).export({ format: 'jwk' });
  if (typeof x !== 'string') throw new CloisterError('INTERNAL', 'Ed25519 public key did not export');
  return new Uint8Array(Buffer.from(x, 'base64url'));
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
    const fleet = options.fleet;
    if (fleet !== undefined) {
      const [newest, previous] = fleet;
      if (newest === undefined || fleet.length > 2) throw new CloisterError('CONFIG_INVALID', 'give one or two fleet keys, newest first');
      if (newest.expiresAtMs <= this.now()) throw new CloisterError('KEY_STALE', `the fleet key (id ${newest.keyId}) expired at ${new Date(newest.expiresAtMs).toISOString()}`);
      this.cur = this.mintFleet(newest);
      if (previous !== undefined && previous.expiresAtMs > this.now()) this.prev = { gen: this.mintFleet(previous), until: previous.expiresAtMs };
      return;
    }
    // Random first key id, so a restarted server rarely reuses the id a client still holds.
    this.cur = this.mint(randomInt(256), this.now());
  }

  /** True when the keys come from the key broker's fleet key (no local rotation). */
  get fleet(): boolean {
    return this.options.fleet !== undefined;
  }

  /** The current generation, rotating first if its interval has passed. */
  current(): KeyGeneration {
    this.tick();
    return this.cur;
  }

  /**
   * A fresh release of the fleet key (newest first, as the broker hands it out; the periodic
   * re-fetch, src/server/fleet-refresh.ts). When the newest version is new, it becomes current
   * and the version the broker still releases next to it stays usable as the previous one until
   * it expires (the overlap: clients holding the old key config keep working); versions the
   * broker no longer releases are retired (KEY_STALE). Returns whether the current key changed.
   */
  updateFleet(keys: readonly FleetKey[]): boolean {
    if (!this.fleet) throw new CloisterError('CONFIG_INVALID', 'not serving a fleet key');
    const [newest, previous] = keys;
    if (newest === undefined || keys.length > 2) throw new CloisterError('CONFIG_INVALID', 'give one or two fleet keys, newest first');
    const now = this.now();
    if (newest.keyId === this.cur.keyId) return false;
    if (newest.expiresAtMs <= now) throw new CloisterError('KEY_STALE', `the fleet key (id ${newest.keyId}) expired at ${new Date(newest.expiresAtMs).toISOString()}`);
    const old = this.cur;
    const oldPrev = this.prev;
    this.cur = this.mintFleet(newest);
    this.prev = undefined;
    if (previous !== undefined && previous.expiresAtMs > now) {
      // Keep the generation object when it is the one already served (its receipt log goes on).
      const gen = previous.keyId === old.keyId ? old : previous.keyId === oldPrev?.gen.keyId ? oldPrev.gen : this.mintFleet(previous);
      this.prev = { gen, until: previous.expiresAtMs };
    }
    for (const g of [old, oldPrev?.gen]) {
      if (g !== undefined && g.keyId !== this.cur.keyId && g.keyId !== this.prev?.gen.keyId) this.retired.add(g.keyId);
    }
    this.options.onRotate?.(this.cur);
    return true;
  }

  /** Forces a rotation now (operators, tests). Fleet keys rotate at the broker, never here. */
  rotate(): KeyGeneration {
    if (this.fleet) throw new CloisterError('CONFIG_INVALID', 'fleet keys rotate at the key broker, not in a replica');
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

  /** Whether requests may still name `gen` (current, or in its grace after a rotation). */
  isLive(gen: KeyGeneration): boolean {
    this.tick();
    return gen.generation === this.cur.generation || gen.generation === this.prev?.gen.generation;
  }

  /** The current or previous (in its grace) generation with this key id, without a suite check (public log reads). */
  byKeyId(keyId: number): KeyGeneration | undefined {
    this.tick();
    if (keyId === this.cur.keyId) return this.cur;
    if (this.prev !== undefined && keyId === this.prev.gen.keyId) return this.prev.gen;
    return undefined;
  }

  private tick(): void {
    const now = this.now();
    if (this.fleet) {
      if (this.prev !== undefined && now >= this.prev.until) {
        this.retired.add(this.prev.gen.keyId);
        this.prev = undefined;
      }
      return;
    }
    if (this.prev !== undefined && now >= this.prev.until) {
      this.retired.add(this.prev.gen.keyId);
      this.prev = undefined;
    }
    if (now >= this.cur.rotateAtMs) this.rotate();
  }

  private mintFleet(k: FleetKey): KeyGeneration {
    if (k.hpkePrivateKey.byteLength !== 32) throw new CloisterError('CONFIG_INVALID', 'a fleet HPKE key must be 32 bytes');
    // Every replica derives the same key config from the same fleet key: same times, same keys.
    return this.mint(k.keyId, k.notBeforeMs, { recipient: HpkeRecipientKey.fromPrivateKey(k.hpkePrivateKey), receiptPublicKey: receiptPublicKeyFromSeed(k.receiptSeed), expiresAtMs: k.expiresAtMs });
  }

  private mint(
    keyId: number,
    now: number,
    given?: { readonly recipient: HpkeRecipientKey; readonly receiptPublicKey: Uint8Array; readonly expiresAtMs: number },
  ): KeyGeneration {
    this.retired.delete(keyId);
    const recipient = given?.recipient ?? HpkeRecipientKey.generate();
    // A fleet key config names the fleet's receipt key, which signs nothing: a replica signs
    // with its own key, generated here and bound by its replica statement (replica.ts).
    const own = generateReceiptKeyPair();
    const receiptPublicKey = given?.receiptPublicKey ?? own.publicKey;
    const receiptKey = own.privateKey;
    const hpkePublicKey = recipient.publicKey;
    const rotateAtMs = given === undefined ? now + this.rotationIntervalMs : given.expiresAtMs;
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
      expiresAt: given === undefined ? Math.ceil((rotateAtMs + this.graceMs) / 1000) : Math.floor(given.expiresAtMs / 1000),
      ...(this.options.engine === undefined ? {} : { engine: this.options.engine }),
      ...(given === undefined ? {} : { replicaReceipts: true as const }),
    };
    const keyConfig = encodeKeyConfig(config);
    const replica = given === undefined ? undefined : { receiptPublicKey: own.publicKey, keyConfig: encodeKeyConfig(replicaKeyConfig(config, own.publicKey)) };
    // Fleet replicas behind a load balancer share keys but not session state: a session
    // request routed to another replica would be refused SESSION_UNKNOWN. So a fleet offers
    // no sessions (v2 clients then send v1 one-shot requests, which any replica can open).
    const keyConfigV2 = this.fleet ? keyConfig : encodeKeyConfig({ ...config, protocols: [1, SESSION_PROTOCOL_VERSION] });
    return Object.freeze({
      generation: this.counter++,
      keyId,
      recipient,
      hpkePublicKey,
      receiptPublicKey,
      keyConfig,
      keyConfigV2,
      notBeforeMs: now,
      rotateAtMs,
      signReceipt: (message: Uint8Array) => signReceipt(receiptKey, message),
      receiptLog: new ReceiptLog(keyGenerationDigest(config), (message) => signReceipt(receiptKey, message), this.options.receiptLog),
      ...(replica === undefined ? {} : { replica }),
    });
  }
}
