/**
 * The Cloister key config (docs/PROTOCOL.md section 1): a deterministic CBOR map with small
 * integer keys. Clients keep the exact received bytes; digests and the attestation binding
 * are computed over those bytes, never over a re-encoding.
 */
import { createHash } from 'node:crypto';
import { CloisterError } from '../errors.js';
import { PLATFORMS } from '../core/types.js';
import type { Platform } from '../core/types.js';
import { copyBytes } from '../core/bytes.js';
import { timingSafeEqualBytes } from '../crypto/ct.js';
import { AEAD_AES_128_GCM, AEAD_CHACHA20_POLY1305, KDF_HKDF_SHA256, KEM_DHKEM_X25519_HKDF_SHA256 } from '../crypto/hpke/suite.js';
import type { HpkeSuite } from '../crypto/hpke/suite.js';
import { decodeCbor, encodeCbor } from '../core/cbor.js';
import type { CborInput, CborKey, CborValue } from '../core/cbor.js';
import type { SealTarget } from './ohttp.js';

const KEY_CONFIG_VERSION = 1;
/** Bounds on attacker-supplied key configs. */
const KEY_CONFIG_LIMITS = Object.freeze({ maxBytes: 64 * 1024, maxModels: 256, maxStringBytes: 256, maxGpus: 64 });

interface KeyConfigModel {
  readonly name: string;
  readonly task: string;
  /** SHA-256 of the model, 32 bytes. */
  readonly digest: Uint8Array;
}

interface KeyConfigEngine {
  readonly kind: string;
  readonly model: string;
  readonly imageDigest?: string;
}

/**
 * One confidential GPU the engine uses (field 15, optional): digests of the GPU evidence the
 * server collected for this key config (src/protocol/gpu-evidence.ts) and the GPU's
 * confidential-computing state as NVML reported it inside the TEE. The evidence bytes
 * travel in the evidence bundle; the CPU TEE evidence binds this key config, so these
 * digests bind those bytes and the state to the TEE and to this key.
 */
export interface KeyConfigGpu {
  /** SHA-256 of the SPDM attestation report bytes, 32 bytes. */
  readonly reportDigest: Uint8Array;
  /** SHA-256 of the attestation certificate chain bytes (PEM), 32 bytes. */
  readonly certChainDigest: Uint8Array;
  /** nvmlSystemGetConfComputeState: ccFeature on. */
  readonly ccEnabled: boolean;
  /** nvmlSystemGetConfComputeState: devToolsMode on (debug: a client refuses it). */
  readonly devTools: boolean;
}

export interface KeyConfig {
  readonly version: 1;
  /** OHTTP key id, 0..255. */
  readonly keyId: number;
  readonly kemId: number;
  readonly kdfId: number;
  readonly aeadIds: readonly number[];
  /** X25519, 32 bytes. */
  readonly hpkePublicKey: Uint8Array;
  /** Ed25519, 32 bytes. */
  readonly receiptPublicKey: Uint8Array;
  readonly models: readonly KeyConfigModel[];
  /** SHA-256 of the server's effective config. */
  readonly configDigest: Uint8Array;
  readonly platform: Platform;
  /** Unix seconds. */
  readonly notBefore: number;
  readonly expiresAt: number;
  readonly engine?: KeyConfigEngine;
  /**
   * Protocol versions the server speaks (key 14, PROTOCOL.md section 11): absent means [1];
   * [1, 2] offers sessions. Sent only to clients that asked for version 2 (a v1 client's strict
   * decoder refuses the key), so the same generation has a v1 and a v2 key config.
   */
  readonly protocols?: readonly number[];
  /** Confidential GPUs (absent: the server attests none). */
  readonly gpus?: readonly KeyConfigGpu[];
  /**
   * Key 16, true: a fleet key config (docs/KEYS.md "Fleet keys"), shared by every replica.
   * Receipts are then signed by each replica's own receipt key, which that replica's evidence
   * binds through a replica key config (src/protocol/replica.ts); `receiptPublicKey` here
   * signs nothing, and a client refuses a receipt that names no replica.
   */
  readonly replicaReceipts?: true;
}

/** Most entries in `protocols`. */
export const MAX_PROTOCOLS = 8;

const K = {
  version: 1,
  keyId: 2,
  kemId: 3,
  kdfId: 4,
  aeadIds: 5,
  hpkePublicKey: 6,
  receiptPublicKey: 7,
  models: 8,
  configDigest: 9,
  platform: 10,
  notBefore: 11,
  expiresAt: 12,
  engine: 13,
  protocols: 14,
  gpus: 15,
  replicaReceipts: 16,
} as const;

function bad(field: string, why: string): CloisterError {
  return new CloisterError('MALFORMED', `key config ${field}: ${why}`, { detail: { field } });
}

function checkStr(v: unknown, field: string): string {
  if (typeof v !== 'string') throw bad(field, 'must be text');
  if (Buffer.byteLength(v, 'utf8') > KEY_CONFIG_LIMITS.maxStringBytes || v.length === 0) throw bad(field, 'empty or too long');
  return v;
}

function checkBytes(v: unknown, field: string, len: number): Uint8Array {
  if (!(v instanceof Uint8Array) || v.byteLength !== len) throw bad(field, `must be ${len} bytes`);
  return v;
}

function checkUint(v: unknown, field: string, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > max) throw bad(field, 'must be an unsigned integer in range');
  return v;
}

function checkBool(v: unknown, field: string): boolean {
  if (typeof v !== 'boolean') throw bad(field, 'must be a boolean');
  return v;
}

function checkMap(v: unknown, field: string, required: readonly CborKey[], optional: readonly CborKey[] = []): Map<CborKey, CborValue> {
  if (!(v instanceof Map)) throw bad(field, 'must be a map');
  const m = v as Map<CborKey, CborValue>;
  for (const k of m.keys()) if (!required.includes(k) && !optional.includes(k)) throw bad(field, `unknown key ${String(k)}`);
  for (const k of required) if (!m.has(k)) throw bad(field, `missing key ${String(k)}`);
  return m;
}

/** Semantic validation shared by encode and decode. */
function validate(kc: KeyConfig): KeyConfig {
  if (kc.version !== KEY_CONFIG_VERSION) throw bad('version', 'unsupported');
  checkUint(kc.keyId, 'keyId', 255);
  if (kc.kemId !== KEM_DHKEM_X25519_HKDF_SHA256 || kc.kdfId !== KDF_HKDF_SHA256) {
    throw new CloisterError('UNSUPPORTED_SUITE', undefined, { detail: { kemId: kc.kemId, kdfId: kc.kdfId } });
  }
  if (kc.aeadIds.length === 0 || kc.aeadIds.length > 2) throw bad('aeadIds', 'must list 1 or 2 AEADs');
  const seen = new Set<number>();
  for (const a of kc.aeadIds) {
    if (a !== AEAD_AES_128_GCM && a !== AEAD_CHACHA20_POLY1305) throw new CloisterError('UNSUPPORTED_SUITE', undefined, { detail: { aeadId: a } });
    if (seen.has(a)) throw bad('aeadIds', 'duplicate');
    seen.add(a);
  }
  checkBytes(kc.hpkePublicKey, 'hpkePublicKey', 32);
  checkBytes(kc.receiptPublicKey, 'receiptPublicKey', 32);
  checkBytes(kc.configDigest, 'configDigest', 32);
  if (kc.models.length > KEY_CONFIG_LIMITS.maxModels) throw bad('models', 'too many');
  for (const m of kc.models) {
    checkStr(m.name, 'models.name');
    checkStr(m.task, 'models.task');
    checkBytes(m.digest, 'models.digest', 32);
  }
  if (!PLATFORMS.includes(kc.platform)) throw bad('platform', 'unknown platform');
  checkUint(kc.notBefore, 'notBefore');
  checkUint(kc.expiresAt, 'expiresAt');
  if (kc.expiresAt <= kc.notBefore) throw bad('expiresAt', 'must be after notBefore');
  if (kc.engine !== undefined) {
    checkStr(kc.engine.kind, 'engine.kind');
    checkStr(kc.engine.model, 'engine.model');
    if (kc.engine.imageDigest !== undefined) checkStr(kc.engine.imageDigest, 'engine.imageDigest');
  }
  if (kc.protocols !== undefined) {
    const p = kc.protocols;
    if (p.length === 0 || p.length > MAX_PROTOCOLS) throw bad('protocols', `must list 1 to ${MAX_PROTOCOLS} versions`);
    let last = 0;
    for (const v of p) {
      checkUint(v, 'protocols', 255);
      // One encoding per value: ascending, no duplicates, version 1 first (every server speaks it).
      if (v <= last) throw bad('protocols', 'must be ascending without duplicates');
      last = v;
    }
    if (p[0] !== 1) throw bad('protocols', 'must include version 1');
  }
  if (kc.gpus !== undefined) {
    if (kc.gpus.length === 0 || kc.gpus.length > KEY_CONFIG_LIMITS.maxGpus) throw bad('gpus', `must list 1..${KEY_CONFIG_LIMITS.maxGpus} GPUs`);
    for (const g of kc.gpus) {
      checkBytes(g.reportDigest, 'gpus.reportDigest', 32);
      checkBytes(g.certChainDigest, 'gpus.certChainDigest', 32);
      checkBool(g.ccEnabled, 'gpus.ccEnabled');
      checkBool(g.devTools, 'gpus.devTools');
    }
  }
  if (kc.replicaReceipts !== undefined && kc.replicaReceipts !== true) throw bad('replicaReceipts', 'must be true when present');
  return kc;
}

export function encodeKeyConfig(kc: KeyConfig): Uint8Array {
  validate(kc);
  const m = new Map<CborKey, CborInput | undefined>([
    [K.version, kc.version],
    [K.keyId, kc.keyId],
    [K.kemId, kc.kemId],
    [K.kdfId, kc.kdfId],
    [K.aeadIds, [...kc.aeadIds]],
    [K.hpkePublicKey, kc.hpkePublicKey],
    [K.receiptPublicKey, kc.receiptPublicKey],
    [K.models, kc.models.map((x) => new Map<CborKey, CborInput>([[1, x.name], [2, x.task], [3, x.digest]]))],
    [K.configDigest, kc.configDigest],
    [K.platform, kc.platform],
    [K.notBefore, kc.notBefore],
    [K.expiresAt, kc.expiresAt],
  ]);
  if (kc.engine !== undefined) {
    m.set(K.engine, new Map<CborKey, CborInput | undefined>([[1, kc.engine.kind], [2, kc.engine.model], [3, kc.engine.imageDigest]]));
  }
  if (kc.protocols !== undefined) m.set(K.protocols, [...kc.protocols]);
  if (kc.gpus !== undefined) {
    m.set(
      K.gpus,
      kc.gpus.map((g) => new Map<CborKey, CborInput>([[1, g.reportDigest], [2, g.certChainDigest], [3, g.ccEnabled], [4, g.devTools]])),
    );
  }
  if (kc.replicaReceipts === true) m.set(K.replicaReceipts, true);
  return encodeCbor(m);
}

/**
 * Strict decode: unknown or missing keys, wrong types or lengths, a non-deterministic
 * encoding (checked by re-encoding and comparing bytes) and trailing bytes all fail.
 */
export function decodeKeyConfig(bytes: Uint8Array): KeyConfig {
  if (!(bytes instanceof Uint8Array)) throw new CloisterError('INVALID_ARGUMENT', 'key config must be bytes');
  if (bytes.byteLength > KEY_CONFIG_LIMITS.maxBytes) throw new CloisterError('LIMIT_EXCEEDED', 'key config too large', { detail: { limit: 'maxBytes' } });
  const root = decodeCbor(bytes, { maxDepth: 4, maxItems: 8 + 8 * KEY_CONFIG_LIMITS.maxModels + 10 * KEY_CONFIG_LIMITS.maxGpus });
  const optional: readonly number[] = [K.engine, K.protocols, K.gpus, K.replicaReceipts];
  const all = Object.values(K).filter((k) => !optional.includes(k));
  const m = checkMap(root, 'root', all, optional);
  const aeads = m.get(K.aeadIds);
  if (!Array.isArray(aeads)) throw bad('aeadIds', 'must be an array');
  const models = m.get(K.models);
  if (!Array.isArray(models)) throw bad('models', 'must be an array');
  const platform = m.get(K.platform);
  if (typeof platform !== 'string' || !(PLATFORMS as readonly string[]).includes(platform)) throw bad('platform', 'unknown platform');
  const version = checkUint(m.get(K.version), 'version');
  if (version !== KEY_CONFIG_VERSION) throw bad('version', 'unsupported');
  let engine: KeyConfigEngine | undefined;
  const e = m.get(K.engine);
  if (e !== undefined) {
    const em = checkMap(e, 'engine', [1, 2], [3]);
    const imageDigest = em.get(3);
    engine = {
      kind: checkStr(em.get(1), 'engine.kind'),
      model: checkStr(em.get(2), 'engine.model'),
      ...(imageDigest === undefined ? {} : { imageDigest: checkStr(imageDigest, 'engine.imageDigest') }),
    };
  }
  const protocols = m.get(K.protocols);
  if (protocols !== undefined && !Array.isArray(protocols)) throw bad('protocols', 'must be an array');
  const replicaReceipts = m.get(K.replicaReceipts);
  if (replicaReceipts !== undefined && replicaReceipts !== true) throw bad('replicaReceipts', 'must be true when present');
  let gpus: KeyConfigGpu[] | undefined;
  const g = m.get(K.gpus);
  if (g !== undefined) {
    if (!Array.isArray(g) || g.length > KEY_CONFIG_LIMITS.maxGpus) throw bad('gpus', `must be an array of at most ${KEY_CONFIG_LIMITS.maxGpus}`);
    gpus = g.map((x) => {
      const gm = checkMap(x, 'gpus', [1, 2, 3, 4]);
      return {
        reportDigest: checkBytes(gm.get(1), 'gpus.reportDigest', 32),
        certChainDigest: checkBytes(gm.get(2), 'gpus.certChainDigest', 32),
        ccEnabled: checkBool(gm.get(3), 'gpus.ccEnabled'),
        devTools: checkBool(gm.get(4), 'gpus.devTools'),
      };
    });
  }
  const kc: KeyConfig = {
    version: KEY_CONFIG_VERSION,
    keyId: checkUint(m.get(K.keyId), 'keyId', 255),
    kemId: checkUint(m.get(K.kemId), 'kemId'),
    kdfId: checkUint(m.get(K.kdfId), 'kdfId'),
    aeadIds: aeads.map((a) => checkUint(a, 'aeadIds')),
    hpkePublicKey: checkBytes(m.get(K.hpkePublicKey), 'hpkePublicKey', 32),
    receiptPublicKey: checkBytes(m.get(K.receiptPublicKey), 'receiptPublicKey', 32),
    models: models.map((x) => {
      const mm = checkMap(x, 'models', [1, 2, 3]);
      return { name: checkStr(mm.get(1), 'models.name'), task: checkStr(mm.get(2), 'models.task'), digest: checkBytes(mm.get(3), 'models.digest', 32) };
    }),
    configDigest: checkBytes(m.get(K.configDigest), 'configDigest', 32),
    platform: platform as Platform,
    notBefore: checkUint(m.get(K.notBefore), 'notBefore'),
    expiresAt: checkUint(m.get(K.expiresAt), 'expiresAt'),
    ...(engine === undefined ? {} : { engine }),
    ...(protocols === undefined ? {} : { protocols: protocols.map((v) => checkUint(v, 'protocols', 255)) }),
    ...(gpus === undefined ? {} : { gpus }),
    ...(replicaReceipts === undefined ? {} : { replicaReceipts: replicaReceipts as true }),
  };
  validate(kc);
  // RFC 8949 section 4.2.1: exactly one valid encoding; anything else is refused.
  if (!timingSafeEqualBytes(encodeKeyConfig(kc), bytes)) throw new CloisterError('MALFORMED', 'key config is not deterministically encoded');
  return kc;
}

/** SHA-256 over the exact received bytes. */
export function keyConfigDigest(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(bytes).digest());
}

/**
 * The digest that names a key generation in receipts v2 (leaves and tree heads, PROTOCOL.md
 * section 12): SHA-256 of the key config encoded without `protocols` (key 14) and `gpus`
 * (key 15). A generation's v1 and v2 key configs differ only in `protocols`, and `gpus` is
 * added by the GPU attester after the generation (and its log) exist; all forms are bound by
 * the TEE evidence, so clients of any form, and an auditor holding any, name the same log.
 * The GPU evidence an answer ran under is therefore named by the evidence the audit bundle
 * carries, not by the leaf.
 */
export function keyGenerationDigest(kc: KeyConfig): Uint8Array {
  // Clients name the generation in every receipts-v2 request: computed once per key config
  // object (decoded key configs are not changed after decoding).
  const known = generationDigests.get(kc);
  if (known !== undefined) return Uint8Array.from(known);
  const { protocols: _protocols, gpus: _gpus, ...base } = kc;
  void _protocols;
  void _gpus;
  const digest = keyConfigDigest(encodeKeyConfig(base));
  generationDigests.set(kc, Uint8Array.from(digest));
  return digest;
}
const generationDigests = new WeakMap<KeyConfig, Uint8Array>();

/** Where to seal for this key config; `aeadId` defaults to the first listed. */
export function sealTargetFromKeyConfig(kc: KeyConfig, aeadId?: number): SealTarget {
  const a = aeadId ?? kc.aeadIds[0];
  if (a === undefined || !kc.aeadIds.includes(a)) throw new CloisterError('UNSUPPORTED_SUITE', 'AEAD not offered by this key config');
  const suite: HpkeSuite = { kemId: kc.kemId, kdfId: kc.kdfId, aeadId: a };
  return { keyId: kc.keyId, publicKey: copyBytes(kc.hpkePublicKey), suite };
}
