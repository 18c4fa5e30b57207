/**
 * AEADs of RFC 9180 section 7.3: AES-128-GCM (0x0001) and ChaCha20-Poly1305 (0x0003), both
 * with Nt = 16 and Nn = 12, run by the crypto backend chosen once (./backend.ts).
 *
 * `aeadOpen` verifies the tag before any plaintext leaves the backend; on failure the
 * partially decrypted bytes are zeroed (./node-backend.ts, ./native-backend.ts).
 */
import { CloisterError } from '../errors.js';
import { activeBackend } from './backend.js';
import type { AeadCipherName } from './backend-types.js';

export type { AeadCipherName } from './backend-types.js';

const AEAD_TAG_LENGTH = 16;

export function aeadSeal(
  cipher: AeadCipherName,
  key: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  plaintext: Uint8Array,
): Uint8Array {
  return activeBackend().aeadSeal(cipher, key, nonce, aad, plaintext);
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
  return activeBackend().aeadOpen(cipher, key, nonce, aad, ciphertext);
}
