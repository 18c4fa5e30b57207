/** The crypto backend strategy (./backend.ts chooses one): the primitives every backend has. */
import type { CipherChaCha20Poly1305Types, CipherGCMTypes, KeyObject } from 'node:crypto';
import type { NativeX25519Key } from '../native/crypto.js';

export type AeadCipherName = CipherGCMTypes | CipherChaCha20Poly1305Types;

export type CryptoBackendName = 'native' | 'node';

/**
 * A recipient's X25519 private key as the backends hold it: always a KeyObject (so the
 * node:crypto backend can use it), and an OpenSSL handle when it was made under the native
 * backend (so a key outlives a backend switch).
 */
export interface X25519Recipient {
  readonly keyObject: KeyObject;
  readonly native: NativeX25519Key | undefined;
  readonly publicKey: Uint8Array;
}

/**
 * One implementation of the primitives. Arguments are checked by the callers (./aead.ts,
 * ./hkdf.ts, ./hpke/kem.ts) where the check is the same for every backend; errors are
 * CloisterErrors (HPKE_OPEN_FAILED, HPKE_DECAP_FAILED, INVALID_ARGUMENT, INTERNAL).
 */
export interface CryptoBackend {
  readonly name: CryptoBackendName;
  aeadSeal(cipher: AeadCipherName, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array;
  /** `ciphertext` is at least the 16-byte tag long; a bad tag is HPKE_OPEN_FAILED, no plaintext. */
  aeadOpen(cipher: AeadCipherName, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array): Uint8Array;
  hkdfExtract(salt: Uint8Array, ikm: Uint8Array): Uint8Array;
  /** `length` is in 0..255 * 32. */
  hkdfExpand(prk: Uint8Array, info: Uint8Array, length: number): Uint8Array;
  hkdfExtractParts(salt: Uint8Array, ikmParts: readonly Uint8Array[]): Uint8Array;
  hkdfExpandParts(prk: Uint8Array, infoParts: readonly Uint8Array[], length: number): Uint8Array;
  /** Import a raw 32-byte private key. */
  x25519Recipient(raw: Uint8Array): X25519Recipient;
  x25519GenerateRecipient(): X25519Recipient;
  /** enc = pkE and DH(skE, pkR) for a fresh skE (or `ephemeralRaw`, for test vectors). */
  x25519Ephemeral(pkRm: Uint8Array, ephemeralRaw?: Uint8Array): { readonly enc: Uint8Array; readonly dh: Uint8Array };
  /** DH(skR, enc), refusing the all-zero result (RFC 9180 section 7.1.4). */
  x25519Derive(key: X25519Recipient, enc: Uint8Array): Uint8Array;
}
