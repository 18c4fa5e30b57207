/** Test-only: the two HPKE suites Cloister speaks (RFC 9180 section 7). Not a test file itself. */
import {
  AEAD_AES_128_GCM,
  AEAD_CHACHA20_POLY1305,
  KDF_HKDF_SHA256,
  KEM_DHKEM_X25519_HKDF_SHA256,
} from '../../src/crypto/index.js';
import type { HpkeSuite } from '../../src/crypto/index.js';

export const AES: HpkeSuite = { kemId: KEM_DHKEM_X25519_HKDF_SHA256, kdfId: KDF_HKDF_SHA256, aeadId: AEAD_AES_128_GCM };
export const CHACHA: HpkeSuite = { kemId: KEM_DHKEM_X25519_HKDF_SHA256, kdfId: KDF_HKDF_SHA256, aeadId: AEAD_CHACHA20_POLY1305 };
