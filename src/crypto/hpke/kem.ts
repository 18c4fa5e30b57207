/**
 * DHKEM(X25519, HKDF-SHA256) (RFC 9180 section 4.1) over the crypto backend chosen once
 * (../backend.ts): the DH runs in the backend, the key derivation here.
 */
import { CloisterError } from '../../errors.js';
import { concatBytes, copyBytes, i2osp, utf8 } from '../../core/bytes.js';
import { hkdfExpandParts, hkdfExtractParts } from '../hkdf.js';
import { activeBackend } from '../backend.js';
import type { X25519Recipient } from '../backend-types.js';
import { KEM_DHKEM_X25519_HKDF_SHA256 } from './suite.js';

export { generateX25519KeyPair } from '../node-backend.js';

const X25519_LEN = 32;
const HPKE_V1 = utf8('HPKE-v1');
// suite_id for the KEM = "KEM" || I2OSP(kem_id, 2) (RFC 9180 section 4.1).
const KEM_SUITE_ID = concatBytes(utf8('KEM'), i2osp(KEM_DHKEM_X25519_HKDF_SHA256, 2));
const LABEL_EAE_PRK = utf8('eae_prk');
const LABEL_SHARED_SECRET = utf8('shared_secret');
const LABEL_DKP_PRK = utf8('dkp_prk');
const LABEL_SK = utf8('sk');
const EMPTY = new Uint8Array(0);

/**
 * A recipient's X25519 private key with its KeyObjects cached. The raw private key is not
 * kept as a JS byte array; it lives in the KeyObject only, and, when the native backend is
 * available, also in an OpenSSL key handle (so either backend can use the key).
 */
export class HpkeRecipientKey {
  readonly #key: X25519Recipient;

  private constructor(key: X25519Recipient) {
    this.#key = key;
  }

  static fromPrivateKey(raw: Uint8Array): HpkeRecipientKey {
    return new HpkeRecipientKey(activeBackend().x25519Recipient(raw));
  }

  static generate(): HpkeRecipientKey {
    return new HpkeRecipientKey(activeBackend().x25519GenerateRecipient());
  }

  /** Raw 32-byte public key (a copy on every read, so callers cannot alter ours). */
  get publicKey(): Uint8Array {
    return copyBytes(this.#key.publicKey);
  }

  /** Internal: the key as the backends hold it. */
  backendKey(): X25519Recipient {
    return this.#key;
  }

  /** Internal: pkRm without a copy, for the KEM context. */
  publicKeyView(): Uint8Array {
    return this.#key.publicKey;
  }
}

function labeledExtractKem(salt: Uint8Array, label: Uint8Array, ikm: Uint8Array): Uint8Array {
  return hkdfExtractParts(salt, [HPKE_V1, KEM_SUITE_ID, label, ikm]);
}

function labeledExpandKem(prk: Uint8Array, label: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  return hkdfExpandParts(prk, [i2osp(length, 2), HPKE_V1, KEM_SUITE_ID, label, info], length);
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

/** Encap(pkR) (section 4.1); `ephemeralRaw` pins the raw skE for test vectors. */
export function encap(pkRm: Uint8Array, ephemeralRaw?: Uint8Array): EncapResult {
  const { enc, dh } = activeBackend().x25519Ephemeral(pkRm, ephemeralRaw);
  return { sharedSecret: extractAndExpand(dh, concatBytes(enc, pkRm)), enc };
}

/** Decap(enc, skR) (section 4.1). `enc` must be exactly Nenc bytes, checked by the caller. */
export function decap(enc: Uint8Array, key: HpkeRecipientKey): Uint8Array {
  return extractAndExpand(activeBackend().x25519Derive(key.backendKey(), enc), concatBytes(enc, key.publicKeyView()));
}
