/**
 * The native backend (./backend.ts): each primitive one call into OpenSSL through the addon
 * (native/crypto.c, wrapped by src/native/crypto.ts), which holds the same guarantees as
 * node:crypto: the AEAD tag is verified before the plaintext is returned and a failed open
 * zeroes what it decrypted. The sender's ephemeral X25519 key is generated and used inside
 * one call, so skE never reaches JavaScript. What the addon lacks (AES-192-GCM, keys made
 * under the node:crypto backend) runs on ./node-backend.ts.
 */
import { CloisterError } from '../errors.js';
import { assertBytes } from '../core/bytes.js';
import { NATIVE_AEAD_AES_128_GCM, NATIVE_AEAD_AES_256_GCM, NATIVE_AEAD_CHACHA20_POLY1305, nativeErrorCode } from '../native/crypto.js';
import type { NativeCrypto } from '../native/crypto.js';
import type { AeadCipherName, CryptoBackend } from './backend-types.js';
import { generateX25519KeyPair, nodeCryptoBackend as portable, privateKeyObject } from './node-backend.js';

const X25519_LEN = 32;

/** Ciphers the native backend implements; others (AES-192-GCM) stay on node:crypto. */
const NATIVE_ALG: Partial<Record<AeadCipherName, number>> = {
  'aes-128-gcm': NATIVE_AEAD_AES_128_GCM,
  'aes-256-gcm': NATIVE_AEAD_AES_256_GCM,
  'chacha20-poly1305': NATIVE_AEAD_CHACHA20_POLY1305,
};

function aeadError(cause: unknown): CloisterError {
  switch (nativeErrorCode(cause)) {
    case 'AEAD_OPEN_FAILED':
      return new CloisterError('HPKE_OPEN_FAILED', undefined, { cause });
    case 'INVALID_ARGUMENT':
      return new CloisterError('INVALID_ARGUMENT', cause instanceof Error ? cause.message : 'bad AEAD argument', { cause });
    default:
      return new CloisterError('INTERNAL', 'native AEAD failed', { cause });
  }
}

function hkdfError(cause: unknown): CloisterError {
  if (nativeErrorCode(cause) === 'INVALID_ARGUMENT') {
    return new CloisterError('INVALID_ARGUMENT', cause instanceof Error ? cause.message : 'bad HKDF argument', { cause });
  }
  return new CloisterError('INTERNAL', 'native HKDF failed', { cause });
}

/** A failed or all-zero DH is HPKE_DECAP_FAILED. */
function x25519Error(cause: unknown): CloisterError {
  switch (nativeErrorCode(cause)) {
    case 'DH_FAILED':
      return new CloisterError('HPKE_DECAP_FAILED', 'X25519 failed or produced the all-zero value (small-order point)', { cause });
    case 'INVALID_ARGUMENT':
      return new CloisterError('INVALID_ARGUMENT', cause instanceof Error ? cause.message : 'bad X25519 argument', { cause });
    default:
      return new CloisterError('INTERNAL', 'native X25519 failed', { cause });
  }
}

/** `fn()`, its errors mapped by `mapError`. */
function call<T>(fn: () => T, mapError: (cause: unknown) => CloisterError): T {
  try {
    return fn();
  } catch (cause) {
    throw mapError(cause);
  }
}

/** The backend over the self-tested native functions (src/native/crypto.ts loadNativeCrypto). */
export function nativeCryptoBackend(n: NativeCrypto): CryptoBackend {
  return {
    name: 'native',
    aeadSeal(cipher, key, nonce, aad, plaintext) {
      const alg = NATIVE_ALG[cipher];
      if (alg === undefined) return portable.aeadSeal(cipher, key, nonce, aad, plaintext);
      return call(() => n.aeadSeal(alg, key, nonce, aad, plaintext), aeadError);
    },
    aeadOpen(cipher, key, nonce, aad, ciphertext) {
      const alg = NATIVE_ALG[cipher];
      if (alg === undefined) return portable.aeadOpen(cipher, key, nonce, aad, ciphertext);
      return call(() => n.aeadOpen(alg, key, nonce, aad, ciphertext), aeadError);
    },
    hkdfExtract: (salt, ikm) => call(() => n.hkdfExtract(salt, ikm), hkdfError),
    hkdfExpand: (prk, info, length) => call(() => n.hkdfExpand(prk, info, length), hkdfError),
    hkdfExtractParts: (salt, ikmParts) => call(() => n.hkdfExtractParts(salt, ikmParts), hkdfError),
    hkdfExpandParts: (prk, infoParts, length) => call(() => n.hkdfExpandParts(prk, infoParts, length), hkdfError),
    x25519Recipient(raw) {
      const key = portable.x25519Recipient(raw);
      return { ...key, native: call(() => n.x25519PrivateKey(raw), x25519Error) };
    },
    x25519GenerateRecipient() {
      // Both backends need the key: take the raw scalar once, import it twice, then wipe it.
      const pair = generateX25519KeyPair();
      try {
        const keyObject = privateKeyObject(pair.privateKey);
        return { keyObject, native: call(() => n.x25519PrivateKey(pair.privateKey), x25519Error), publicKey: pair.publicKey };
      } finally {
        pair.privateKey.fill(0);
      }
    },
    x25519Ephemeral(pkRm, ephemeralRaw) {
      assertBytes(pkRm, 'X25519 public key', X25519_LEN);
      if (ephemeralRaw === undefined) {
        const both = call(() => n.x25519Ephemeral(pkRm), x25519Error);
        return { enc: both.slice(0, X25519_LEN), dh: both.subarray(X25519_LEN) };
      }
      assertBytes(ephemeralRaw, 'X25519 private key', X25519_LEN);
      const skE = call(() => n.x25519PrivateKey(ephemeralRaw), x25519Error);
      return { enc: call(() => n.x25519PublicKey(skE), x25519Error), dh: call(() => n.x25519Derive(skE, pkRm), x25519Error) };
    },
    x25519Derive(key, enc) {
      const handle = key.native;
      if (handle === undefined) return portable.x25519Derive(key, enc);
      assertBytes(enc, 'X25519 public key', X25519_LEN);
      return call(() => n.x25519Derive(handle, enc), x25519Error);
    },
  };
}
