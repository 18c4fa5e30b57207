/**
 * The HPKE suites Cloister speaks (RFC 9180 section 7): DHKEM(X25519, HKDF-SHA256),
 * HKDF-SHA256, and AES-128-GCM or ChaCha20-Poly1305. Anything else is UNSUPPORTED_SUITE.
 */
import { CloisterError } from '../../errors.js';
import type { AeadCipherName } from '../aead.js';
import { concatBytes, i2osp, utf8 } from '../../core/bytes.js';

export const KEM_DHKEM_X25519_HKDF_SHA256 = 0x0020;
export const KDF_HKDF_SHA256 = 0x0001;
export const AEAD_AES_128_GCM = 0x0001;
export const AEAD_CHACHA20_POLY1305 = 0x0003;

export interface HpkeSuite {
  readonly kemId: number;
  readonly kdfId: number;
  readonly aeadId: number;
}

/** Suite constants (RFC 9180 section 7, tables 2-5). Internal. */
export interface SuiteParams {
  readonly suite: HpkeSuite;
  readonly cipher: AeadCipherName;
  /** AEAD key, nonce and tag lengths. */
  readonly nk: number;
  readonly nn: number;
  readonly nt: number;
  /** KDF output length. */
  readonly nh: number;
  /** KEM: encapsulated key, public key, private key, shared secret lengths. */
  readonly nenc: number;
  readonly npk: number;
  readonly nsk: number;
  readonly nsecret: number;
  /** suite_id = "HPKE" || I2OSP(kem_id, 2) || I2OSP(kdf_id, 2) || I2OSP(aead_id, 2) (section 5.1). */
  readonly suiteId: Uint8Array;
}

function params(aeadId: number, cipher: AeadCipherName): SuiteParams {
  const suite: HpkeSuite = Object.freeze({ kemId: KEM_DHKEM_X25519_HKDF_SHA256, kdfId: KDF_HKDF_SHA256, aeadId });
  return Object.freeze({
    suite,
    cipher,
    nk: cipher === 'aes-128-gcm' ? 16 : 32,
    nn: 12,
    nt: 16,
    nh: 32,
    nenc: 32,
    npk: 32,
    nsk: 32,
    nsecret: 32,
    suiteId: concatBytes(utf8('HPKE'), i2osp(KEM_DHKEM_X25519_HKDF_SHA256, 2), i2osp(KDF_HKDF_SHA256, 2), i2osp(aeadId, 2)),
  });
}

const AES = params(AEAD_AES_128_GCM, 'aes-128-gcm');
const CHACHA = params(AEAD_CHACHA20_POLY1305, 'chacha20-poly1305');

/** Validate identifiers (e.g. straight off the wire) into a supported suite. */
export function suiteFromIds(kemId: number, kdfId: number, aeadId: number): HpkeSuite {
  return suiteParams({ kemId, kdfId, aeadId }).suite;
}

/** Internal: the constants for a suite; throws UNSUPPORTED_SUITE. */
export function suiteParams(suite: HpkeSuite): SuiteParams {
  if (suite.kemId === KEM_DHKEM_X25519_HKDF_SHA256 && suite.kdfId === KDF_HKDF_SHA256) {
    if (suite.aeadId === AEAD_AES_128_GCM) return AES;
    if (suite.aeadId === AEAD_CHACHA20_POLY1305) return CHACHA;
  }
  throw new CloisterError('UNSUPPORTED_SUITE', undefined, {
    detail: { kemId: numOr(suite.kemId), kdfId: numOr(suite.kdfId), aeadId: numOr(suite.aeadId) },
  });
}

function numOr(v: unknown): number {
  return typeof v === 'number' ? v : -1;
}
