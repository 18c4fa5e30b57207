/**
 * AEADs of RFC 9180 section 7.3 on synchronous node:crypto: AES-128-GCM (0x0001) and
 * ChaCha20-Poly1305 (0x0003). Both have Nt = 16 and Nn = 12.
 *
 * `aeadOpen` verifies the tag (in `final()`) before any plaintext leaves this module; on
 * failure the partially decrypted bytes are zeroed.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import type { CipherGCMTypes, CipherChaCha20Poly1305Types } from 'node:crypto';
import { CloisterError } from '../errors.js';

export const AEAD_TAG_LENGTH = 16;

export type AeadCipherName = CipherGCMTypes | CipherChaCha20Poly1305Types;

export function aeadSeal(
  cipher: AeadCipherName,
  key: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  plaintext: Uint8Array,
): Uint8Array {
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
