/**
 * The node:crypto backend (./backend.ts): the portable implementation of every primitive the
 * strategy carries, on synchronous node:crypto. AEADs of RFC 9180 section 7.3, HKDF-SHA256
 * (RFC 5869) on HMAC, and X25519 on KeyObjects.
 *
 * `aeadOpen` verifies the tag (in `final()`) before any plaintext leaves this module; on
 * failure the partially decrypted bytes are zeroed.
 *
 * X25519 keys are turned into KeyObjects once (`HpkeRecipientKey` caches them) because
 * KeyObject creation costs about as much as the Diffie-Hellman itself.
 */
import { createCipheriv, createDecipheriv, createHmac, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, KeyObject } from 'node:crypto';
import { CloisterError } from '../errors.js';
import { assertBytes, concatBytes } from '../core/bytes.js';
import { timingSafeEqualBytes } from './ct.js';
import type { AeadCipherName, CryptoBackend, X25519Recipient } from './backend-types.js';

const AEAD_TAG_LENGTH = 16;
const HKDF_SHA256_NH = 32;
const X25519_LEN = 32;
// ASN.1 prefix of a raw X25519 private key in PKCS#8 (RFC 8410).
const PKCS8_PREFIX = Uint8Array.from(Buffer.from('302e020100300506032b656e04220420', 'hex'));
const ZERO_DH = new Uint8Array(X25519_LEN);
const ZERO_SALT = new Uint8Array(HKDF_SHA256_NH);
// The one-byte counters 1..255 (index 0 unused), so no allocation per block.
const COUNTER: readonly Uint8Array[] = Array.from({ length: 256 }, (_, i) => Uint8Array.of(i));

function aeadSeal(cipher: AeadCipherName, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array {
  const c = createCipheriv(cipher as 'aes-128-gcm', key, nonce, { authTagLength: AEAD_TAG_LENGTH });
  if (aad.byteLength > 0) c.setAAD(aad, { plaintextLength: plaintext.byteLength });
  const body = c.update(plaintext);
  const tail = c.final();
  const tag = c.getAuthTag();
  const out = new Uint8Array(body.byteLength + tail.byteLength + AEAD_TAG_LENGTH);
  out.set(body, 0);
  out.set(tail, body.byteLength);
  out.set(tag, body.byteLength + tail.byteLength);
  return out;
}

/** `ciphertext` is at least the tag long (checked by ./aead.ts). */
function aeadOpen(cipher: AeadCipherName, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
  const ctLen = ciphertext.byteLength - AEAD_TAG_LENGTH;
  const d = createDecipheriv(cipher as 'aes-128-gcm', key, nonce, { authTagLength: AEAD_TAG_LENGTH });
  d.setAuthTag(ciphertext.subarray(ctLen));
  if (aad.byteLength > 0) d.setAAD(aad, { plaintextLength: ctLen });
  const out = new Uint8Array(ctLen);
  const body = d.update(ciphertext.subarray(0, ctLen));
  out.set(body, 0);
  body.fill(0);
  try {
    const tail = d.final();
    out.set(tail, body.byteLength);
  } catch (cause) {
    out.fill(0);
    throw new CloisterError('HPKE_OPEN_FAILED', undefined, { cause });
  }
  return out;
}

function hkdfExtract(salt: Uint8Array, ikm: Uint8Array): Uint8Array {
  const h = createHmac('sha256', salt.byteLength === 0 ? ZERO_SALT : salt);
  h.update(ikm);
  return new Uint8Array(h.digest());
}

/** `length` is in range (checked by ./hkdf.ts). */
function hkdfExpand(prk: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let prev: Uint8Array | undefined;
  let off = 0;
  for (let i = 1; off < length; i++) {
    // T(i) = HMAC(PRK, T(i-1) || info || i), T(0) empty.
    const h = createHmac('sha256', prk);
    if (prev !== undefined) h.update(prev);
    h.update(info);
    h.update(COUNTER[i] ?? Uint8Array.of(i));
    prev = h.digest();
    const take = Math.min(prev.byteLength, length - off);
    out.set(prev.subarray(0, take), off);
    off += take;
  }
  return out;
}

export function privateKeyObject(raw: Uint8Array): KeyObject {
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

export function rawPublicKey(key: KeyObject): Uint8Array {
  const { x } = key.export({ format: 'jwk' });
  if (typeof x !== 'string') throw new CloisterError('INTERNAL', 'X25519 key without x');
  const raw = new Uint8Array(Buffer.from(x, 'base64url'));
  if (raw.byteLength !== X25519_LEN) throw new CloisterError('INTERNAL', 'X25519 public key of the wrong length');
  return raw;
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

export function generateX25519KeyPair(): { privateKey: Uint8Array; publicKey: Uint8Array } {
  // Both halves encoded inside the key generation job (see generateX25519Encoded).
  const { privateKey, publicKey } = generateX25519Encoded('x25519', {
    publicKeyEncoding: { type: 'spki', format: 'jwk' },
    privateKeyEncoding: { type: 'pkcs8', format: 'jwk' },
  });
  return { privateKey: jwkMember(privateKey, 'd'), publicKey: jwkMember(publicKey, 'x') };
}

function generateX25519(): { privateKey: KeyObject; publicKey: Uint8Array } {
  const { privateKey, publicKey } = generateX25519Encoded('x25519', { publicKeyEncoding: { type: 'spki', format: 'jwk' } });
  if (!(privateKey instanceof KeyObject)) throw new CloisterError('INTERNAL', 'X25519 private key is not a KeyObject');
  return { privateKey, publicKey: jwkMember(publicKey, 'x') };
}

/** node:crypto, always available; also the fallback of the native backend for what it lacks. */
export const nodeCryptoBackend: CryptoBackend = {
  name: 'node',
  aeadSeal,
  aeadOpen,
  hkdfExtract,
  hkdfExpand,
  hkdfExtractParts: (salt, ikmParts) => hkdfExtract(salt, concatBytes(...ikmParts)),
  hkdfExpandParts: (prk, infoParts, length) => hkdfExpand(prk, concatBytes(...infoParts), length),
  x25519Recipient(raw) {
    const sk = privateKeyObject(raw);
    return { keyObject: sk, native: undefined, publicKey: rawPublicKey(createPublicKey(sk)) };
  },
  x25519GenerateRecipient() {
    // Not createPublicKey(privateKey).export(): see generateX25519Encoded (Node 20 deadlock).
    const { privateKey, publicKey } = generateX25519();
    return { keyObject: privateKey, native: undefined, publicKey };
  },
  x25519Ephemeral(pkRm, ephemeralRaw) {
    const pkR = recipientPublicKeyObject(pkRm);
    if (ephemeralRaw === undefined) {
      const { privateKey, publicKey } = generateX25519();
      return { enc: publicKey, dh: dh(privateKey, pkR) };
    }
    const skE = privateKeyObject(ephemeralRaw);
    return { enc: rawPublicKey(createPublicKey(skE)), dh: dh(skE, pkR) };
  },
  x25519Derive(key: X25519Recipient, enc) {
    return dh(key.keyObject, publicKeyObject(enc));
  },
};
