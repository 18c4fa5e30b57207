/**
 * DHKEM(X25519, HKDF-SHA256) (RFC 9180 section 4.1) on synchronous node:crypto.
 *
 * X25519 keys are turned into KeyObjects once (`HpkeRecipientKey` caches them) because
 * KeyObject creation costs about as much as the Diffie-Hellman itself.
 *
 * With the native backend (../backend.ts) the DH runs in one call into OpenSSL on a raw
 * 32-byte peer key (no KeyObject per request), and the sender's ephemeral key is generated
 * and used inside that call, so skE never reaches JavaScript.
 */
import { createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, KeyObject } from 'node:crypto';
import { CloisterError } from '../../errors.js';
import { assertBytes, concatBytes, copyBytes, i2osp, utf8 } from '../../core/bytes.js';
import { timingSafeEqualBytes } from '../ct.js';
import { hkdfExpandParts, hkdfExtractParts } from '../hkdf.js';
import { activeNative } from '../backend.js';
import { nativeErrorCode } from '../../native/crypto.js';
import type { NativeCrypto, NativeX25519Key } from '../../native/crypto.js';
import { KEM_DHKEM_X25519_HKDF_SHA256 } from './suite.js';

const X25519_LEN = 32;
// ASN.1 prefix of a raw X25519 private key in PKCS#8 (RFC 8410).
const PKCS8_PREFIX = Uint8Array.from(Buffer.from('302e020100300506032b656e04220420', 'hex'));
const ZERO_DH = new Uint8Array(X25519_LEN);
const HPKE_V1 = utf8('HPKE-v1');
// suite_id for the KEM = "KEM" || I2OSP(kem_id, 2) (RFC 9180 section 4.1).
const KEM_SUITE_ID = concatBytes(utf8('KEM'), i2osp(KEM_DHKEM_X25519_HKDF_SHA256, 2));
const LABEL_EAE_PRK = utf8('eae_prk');
const LABEL_SHARED_SECRET = utf8('shared_secret');
const LABEL_DKP_PRK = utf8('dkp_prk');
const LABEL_SK = utf8('sk');
const EMPTY = new Uint8Array(0);

function privateKeyObject(raw: Uint8Array): KeyObject {
  assertBytes(raw, 'X25519 private key', X25519_LEN);
  return createPrivateKey({ key: Buffer.from(concatBytes(PKCS8_PREFIX, raw)), format: 'der', type: 'pkcs8' });
}

/**
 * Deserialize a public key; any 32-byte string is a valid X25519 u-coordinate (RFC 7748).
 * JWK import/export is used on this hot path: in Node 20 it is several times faster than
 * going through SPKI DER.
 */
function publicKeyObject(raw: Uint8Array): KeyObject {
  assertBytes(raw, 'X25519 public key', X25519_LEN);
  const x = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64url');
  return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x }, format: 'jwk' });
}

function rawPublicKey(key: KeyObject): Uint8Array {
  const { x } = key.export({ format: 'jwk' });
  if (typeof x !== 'string') throw new CloisterError('INTERNAL', 'X25519 key without x');
  const raw = new Uint8Array(Buffer.from(x, 'base64url'));
  if (raw.byteLength !== X25519_LEN) throw new CloisterError('INTERNAL', 'X25519 public key of the wrong length');
  return raw;
}

export function generateX25519KeyPair(): { privateKey: Uint8Array; publicKey: Uint8Array } {
  // Both halves encoded inside the key generation job (see generateX25519Encoded).
  const { privateKey, publicKey } = generateX25519Encoded('x25519', {
    publicKeyEncoding: { type: 'spki', format: 'jwk' },
    privateKeyEncoding: { type: 'pkcs8', format: 'jwk' },
  });
  return { privateKey: jwkMember(privateKey, 'd'), publicKey: jwkMember(publicKey, 'x') };
}

/**
 * A recipient's X25519 private key with its KeyObjects cached. The raw private key is not
 * kept as a JS byte array; it lives in the KeyObject only, and, when the native backend is
 * available, also in an OpenSSL key handle (so either backend can use the key).
 */
export class HpkeRecipientKey {
  readonly #privateKey: KeyObject;
  readonly #native: NativeX25519Key | undefined;
  readonly #publicKey: Uint8Array;

  private constructor(privateKey: KeyObject, publicKey: Uint8Array, native: NativeX25519Key | undefined) {
    this.#privateKey = privateKey;
    this.#publicKey = publicKey;
    this.#native = native;
  }

  static fromPrivateKey(raw: Uint8Array): HpkeRecipientKey {
    const sk = privateKeyObject(raw);
    const n = activeNative();
    const native = n === undefined ? undefined : nativeCall(() => n.x25519PrivateKey(raw));
    return new HpkeRecipientKey(sk, rawPublicKey(createPublicKey(sk)), native);
  }

  static generate(): HpkeRecipientKey {
    const n = activeNative();
    if (n === undefined) {
      // Not createPublicKey(privateKey).export(): see generateX25519Encoded (Node 20 deadlock).
      const { privateKey, publicKey } = generateX25519();
      return new HpkeRecipientKey(privateKey, publicKey, undefined);
    }
    // Both backends need the key: take the raw scalar once, import it twice, then wipe it.
    const pair = generateX25519KeyPair();
    try {
      return new HpkeRecipientKey(privateKeyObject(pair.privateKey), pair.publicKey, nativeCall(() => n.x25519PrivateKey(pair.privateKey)));
    } finally {
      pair.privateKey.fill(0);
    }
  }

  /** Raw 32-byte public key (a copy on every read, so callers cannot alter ours). */
  get publicKey(): Uint8Array {
    return copyBytes(this.#publicKey);
  }

  /** Internal: the cached KeyObject. */
  keyObject(): KeyObject {
    return this.#privateKey;
  }

  /** Internal: the OpenSSL key handle, when the native backend was available at creation. */
  nativeKey(): NativeX25519Key | undefined {
    return this.#native;
  }

  /** Internal: pkRm without a copy, for the KEM context. */
  publicKeyView(): Uint8Array {
    return this.#publicKey;
  }
}

function labeledExtractKem(salt: Uint8Array, label: Uint8Array, ikm: Uint8Array): Uint8Array {
  return hkdfExtractParts(salt, [HPKE_V1, KEM_SUITE_ID, label, ikm]);
}

function labeledExpandKem(prk: Uint8Array, label: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  return hkdfExpandParts(prk, [i2osp(length, 2), HPKE_V1, KEM_SUITE_ID, label, info], length);
}

/** A native call with its errors in our taxonomy: a failed or all-zero DH is HPKE_DECAP_FAILED. */
function nativeCall<T>(fn: () => T): T {
  try {
    return fn();
  } catch (cause) {
    switch (nativeErrorCode(cause)) {
      case 'DH_FAILED':
        throw new CloisterError('HPKE_DECAP_FAILED', 'X25519 failed or produced the all-zero value (small-order point)', { cause });
      case 'INVALID_ARGUMENT':
        throw new CloisterError('INVALID_ARGUMENT', cause instanceof Error ? cause.message : 'bad X25519 argument', { cause });
      default:
        throw new CloisterError('INTERNAL', 'native X25519 failed', { cause });
    }
  }
}

/** DH with the all-zero output check of RFC 9180 section 7.1.4. */
function dh(sk: KeyObject, pk: KeyObject): Uint8Array {
  let out: Uint8Array;
  try {
    out = diffieHellman({ privateKey: sk, publicKey: pk });
  } catch (cause) {
    throw new CloisterError('HPKE_DECAP_FAILED', 'X25519 failed', { cause });
  }
  if (timingSafeEqualBytes(out, ZERO_DH)) {
    throw new CloisterError('HPKE_DECAP_FAILED', 'X25519 produced the all-zero value (small-order point)');
  }
  return out;
}

function extractAndExpand(dhOut: Uint8Array, kemContext: Uint8Array): Uint8Array {
  const eaePrk = labeledExtractKem(EMPTY, LABEL_EAE_PRK, dhOut);
  dhOut.fill(0);
  return labeledExpandKem(eaePrk, LABEL_SHARED_SECRET, kemContext, 32);
}

/** DeriveKeyPair(ikm) for X25519 (RFC 9180 section 7.1.3): returns the raw private key. */
export function deriveX25519PrivateKey(ikm: Uint8Array): Uint8Array {
  if (ikm.byteLength < X25519_LEN) {
    throw new CloisterError('INVALID_ARGUMENT', 'ikm must be at least Nsk bytes', { detail: { length: ikm.byteLength } });
  }
  const dkpPrk = labeledExtractKem(EMPTY, LABEL_DKP_PRK, ikm);
  return labeledExpandKem(dkpPrk, LABEL_SK, EMPTY, X25519_LEN);
}

interface EncapResult {
  readonly sharedSecret: Uint8Array;
  readonly enc: Uint8Array;
}

// A client seals every request to the same few server keys: importing pkR costs about as
// much as the DH, so the KeyObjects are cached by value. Public keys only; bounded.
const RECIPIENT_KEY_CACHE_MAX = 16;
const recipientKeyCache = new Map<string, KeyObject>();

function recipientPublicKeyObject(pkRm: Uint8Array): KeyObject {
  assertBytes(pkRm, 'X25519 public key', X25519_LEN);
  const x = Buffer.from(pkRm.buffer, pkRm.byteOffset, pkRm.byteLength).toString('base64url');
  let key = recipientKeyCache.get(x);
  if (key === undefined) {
    key = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x }, format: 'jwk' });
    if (recipientKeyCache.size >= RECIPIENT_KEY_CACHE_MAX) recipientKeyCache.clear();
    recipientKeyCache.set(x, key);
  }
  return key;
}

/**
 * generateKeyPairSync with only the public half encoded (JWK) and the private half left a
 * KeyObject, which Node supports but @types/node does not declare.
 *
 * Why not `createPublicKey(privateKey).export({ format: 'jwk' })` on a freshly generated key:
 * in Node 20 that export holds the key's mutex while allocating the string; a GC at that
 * moment finalizes the (now unreferenced) KeyGenJob, whose destructor takes the same mutex,
 * and the thread deadlocks (seen after a few thousand client requests; reproduced in a plain
 * loop). Encoding inside the job runs while the job is still alive, so it cannot deadlock;
 * it is also the fastest way to get the raw public key.
 */
const generateX25519Encoded = generateKeyPairSync as unknown as (
  type: 'x25519',
  options: {
    readonly publicKeyEncoding: { readonly type: 'spki'; readonly format: 'jwk' };
    readonly privateKeyEncoding?: { readonly type: 'pkcs8'; readonly format: 'jwk' };
  },
) => { readonly privateKey: unknown; readonly publicKey: unknown };

function jwkMember(jwk: unknown, name: 'x' | 'd'): Uint8Array {
  const v: unknown = typeof jwk === 'object' && jwk !== null ? (jwk as Record<string, unknown>)[name] : undefined;
  if (typeof v !== 'string') throw new CloisterError('INTERNAL', `X25519 JWK without ${name}`);
  const raw = new Uint8Array(Buffer.from(v, 'base64url'));
  if (raw.byteLength !== X25519_LEN) throw new CloisterError('INTERNAL', 'X25519 key of the wrong length');
  return raw;
}

function generateX25519(): { privateKey: KeyObject; publicKey: Uint8Array } {
  const { privateKey, publicKey } = generateX25519Encoded('x25519', { publicKeyEncoding: { type: 'spki', format: 'jwk' } });
  if (!(privateKey instanceof KeyObject)) throw new CloisterError('INTERNAL', 'X25519 private key is not a KeyObject');
  return { privateKey, publicKey: jwkMember(publicKey, 'x') };
}

/** A fresh ephemeral pair (skE, enc = SerializePublicKey(pkE)). */
function generateEphemeral(): { skE: KeyObject; enc: Uint8Array } {
  const { privateKey, publicKey } = generateX25519();
  return { skE: privateKey, enc: publicKey };
}

/** Encap(pkR) (section 4.1); `ephemeralRaw` pins the raw skE for test vectors. */
export function encap(pkRm: Uint8Array, ephemeralRaw?: Uint8Array): EncapResult {
  const n = activeNative();
  if (n !== undefined) return encapNative(n, pkRm, ephemeralRaw);
  const pkR = recipientPublicKeyObject(pkRm);
  const { skE, enc } =
    ephemeralRaw === undefined ? generateEphemeral() : (() => {
      const sk = privateKeyObject(ephemeralRaw);
      return { skE: sk, enc: rawPublicKey(createPublicKey(sk)) };
    })();
  const sharedSecret = extractAndExpand(dh(skE, pkR), concatBytes(enc, pkRm));
  return { sharedSecret, enc };
}

function encapNative(n: NativeCrypto, pkRm: Uint8Array, ephemeralRaw: Uint8Array | undefined): EncapResult {
  assertBytes(pkRm, 'X25519 public key', X25519_LEN);
  let enc: Uint8Array;
  let dhOut: Uint8Array;
  if (ephemeralRaw === undefined) {
    const both = nativeCall(() => n.x25519Ephemeral(pkRm));
    enc = both.slice(0, X25519_LEN);
    dhOut = both.subarray(X25519_LEN);
  } else {
    assertBytes(ephemeralRaw, 'X25519 private key', X25519_LEN);
    const skE = nativeCall(() => n.x25519PrivateKey(ephemeralRaw));
    enc = nativeCall(() => n.x25519PublicKey(skE));
    dhOut = nativeCall(() => n.x25519Derive(skE, pkRm));
  }
  return { sharedSecret: extractAndExpand(dhOut, concatBytes(enc, pkRm)), enc };
}

/** Decap(enc, skR) (section 4.1). `enc` must be exactly Nenc bytes, checked by the caller. */
export function decap(enc: Uint8Array, key: HpkeRecipientKey): Uint8Array {
  const n = activeNative();
  const handle = key.nativeKey();
  if (n !== undefined && handle !== undefined) {
    assertBytes(enc, 'X25519 public key', X25519_LEN);
    return extractAndExpand(nativeCall(() => n.x25519Derive(handle, enc)), concatBytes(enc, key.publicKeyView()));
  }
  const pkE = publicKeyObject(enc);
  return extractAndExpand(dh(key.keyObject(), pkE), concatBytes(enc, key.publicKeyView()));
}
