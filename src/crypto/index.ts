export { timingSafeEqualBytes } from './ct.js';
export {
  KEM_DHKEM_X25519_HKDF_SHA256,
  KDF_HKDF_SHA256,
  AEAD_AES_128_GCM,
  AEAD_CHACHA20_POLY1305,
  suiteFromIds,
} from './hpke/suite.js';
export type { HpkeSuite } from './hpke/suite.js';
export { generateX25519KeyPair, HpkeRecipientKey } from './hpke/kem.js';
export { setupBaseSender, setupBaseRecipient } from './hpke/setup.js';
