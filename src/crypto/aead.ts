/**
 * AEADs of RFC 9180 section 7.3 on synchronous node:crypto: AES-128-GCM (0x0001) and
 * ChaCha20-Poly1305 (0x0003). Both have Nt = 16 and Nn = 12.
 *
 * `aeadOpen` verifies the tag (in `final()`) before any plaintext leaves this module; on
 * failure the partially decrypted bytes are zeroed.
 *
 * With the native backend (./backend.ts) both run as one call into OpenSSL
 * (native/crypto.c), which holds the same guarantees: the tag is verified before the
 * plaintext is returned, and a failed open zeroes what it decrypted.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import type { CipherGCMTypes, CipherChaCha20Poly1305Types } from 'node:crypto';
import { CloisterError } from '../errors.js';
import { NATIVE_AEAD_AES_128_GCM, NATIVE_AEAD_AES_256_GCM, NATIVE_AEAD_CHACHA20_POLY1305, nativeErrorCode } from '../native/crypto.js';
import { activeNative } from './backend.js';

const AEAD_TAG_LENGTH = 16;

export type AeadCipherName = CipherGCMTypes | CipherChaCha20Poly1305Types;

export function aeadSeal(
  cipher: AeadCipherName,
  key: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  plaintext: Uint8Array,
): Uint8Array {
  const n = activeNative();
  const alg = NATIVE_ALG[cipher];
  if (n !== undefined && alg !== undefined) {
    try {
      return n.aeadSeal(alg, key, nonce, aad, plaintext);
    } catch (cause) {
      throw nativeAeadError(cause);
    }
  }
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

/** Throws `HPKE_OPEN_FAILED` on a short input or a bad tag. */
export function aeadOpen(
  cipher: AeadCipherName,
  key: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  ciphertext: Uint8Array,
): Uint8Array {
  if (ciphertext.byteLength < AEAD_TAG_LENGTH) {
    throw new CloisterError('HPKE_OPEN_FAILED', 'ciphertext shorter than the AEAD tag', {
      detail: { length: ciphertext.byteLength },
    });
  }
  const n = activeNative();
  const alg = NATIVE_ALG[cipher];
  if (n !== undefined && alg !== undefined) {
    try {
      return n.aeadOpen(alg, key, nonce, aad, ciphertext);
    } catch (cause) {
      throw nativeAeadError(cause);
    }
  }
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

/** Ciphers the native backend implements; others (AES-192-GCM) stay on node:crypto. */
const NATIVE_ALG: Partial<Record<AeadCipherName, number>> = {
  'aes-128-gcm': NATIVE_AEAD_AES_128_GCM,
  'aes-256-gcm': NATIVE_AEAD_AES_256_GCM,
  'chacha20-poly1305': NATIVE_AEAD_CHACHA20_POLY1305,
};

function nativeAeadError(cause: unknown): CloisterError {
  switch (nativeErrorCode(cause)) {
    case 'AEAD_OPEN_FAILED':
      return new CloisterError('HPKE_OPEN_FAILED', undefined, { cause });
    case 'INVALID_ARGUMENT':
      return new CloisterError('INVALID_ARGUMENT', cause instanceof Error ? cause.message : 'bad AEAD argument', { cause });
    default:
      return new CloisterError('INTERNAL', 'native AEAD failed', { cause });
  }
}
