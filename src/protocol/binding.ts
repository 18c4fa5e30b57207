/**
 * The attestation binding between a key config and hardware evidence (docs/PROTOCOL.md
 * section 2). Attesters and verifiers both call these functions, so the two sides cannot
 * drift apart.
 *
 * - Nitro and simulated: public_key = hpkePublicKey, user_data = SHA-512(keyConfig bytes),
 *   nonce = the client's nonce (null when none was asked).
 * - SEV-SNP and TDX: report_data (64 bytes) = SHA-512("cloister/attest/v1\0" || keyConfig || nonce).
 *   The label separates this use of SHA-512 from any other, and the nonce comes last so
 *   an absent nonce and an empty one hash the same.
 *
 * Every digest is over the exact received key config bytes, never a re-encoding.
 */
import { createHash } from 'node:crypto';
import { CloisterError } from '../errors.js';
import { timingSafeEqualBytes } from '../crypto/ct.js';

/** Domain-separation label for report_data, NUL included. */
export const REPORT_DATA_LABEL: Uint8Array = new TextEncoder().encode('cloister/attest/v1\0');
/** The nonce a client may ask for: 0..64 bytes (types.ts AttestationRequest). */
const MAX_BINDING_NONCE_BYTES = 64;
/** Length of SEV-SNP / TDX report_data. */
export const REPORT_DATA_BYTES = 64;
/** X25519 public key length (RFC 7748). */
const HPKE_PUBLIC_KEY_BYTES = 32;

function checkNonce(nonce: Uint8Array | undefined): Uint8Array {
  if (nonce === undefined) return new Uint8Array(0);
  if (!(nonce instanceof Uint8Array) || nonce.byteLength > MAX_BINDING_NONCE_BYTES) {
    throw new CloisterError('INVALID_ARGUMENT', `nonce must be 0..${MAX_BINDING_NONCE_BYTES} bytes`);
  }
  return Uint8Array.from(nonce);
}

function checkKeyConfig(keyConfig: Uint8Array): void {
  if (!(keyConfig instanceof Uint8Array) || keyConfig.byteLength === 0) {
    throw new CloisterError('INVALID_ARGUMENT', 'key config must be non-empty bytes');
  }
}

/** SHA-512("cloister/attest/v1\0" || keyConfig || nonce): the 64-byte SEV-SNP / TDX report_data. */
export function reportDataFor(keyConfig: Uint8Array, nonce?: Uint8Array): Uint8Array {
  checkKeyConfig(keyConfig);
  const n = checkNonce(nonce);
  return new Uint8Array(createHash('sha512').update(REPORT_DATA_LABEL).update(keyConfig).update(n).digest());
}

/** What a Nitro (or simulated) attestation document must carry. */
interface NitroBinding {
  readonly publicKey: Uint8Array;
  readonly userData: Uint8Array;
  /** null when the client asked for no nonce (an empty nonce counts as none). */
  readonly nonce: Uint8Array | null;
}

/** The public_key / user_data / nonce an NSM request carries for this key config. */
export function nitroBindingFor(keyConfig: Uint8Array, hpkePublicKey: Uint8Array, nonce?: Uint8Array): NitroBinding {
  checkKeyConfig(keyConfig);
  if (!(hpkePublicKey instanceof Uint8Array) || hpkePublicKey.byteLength !== HPKE_PUBLIC_KEY_BYTES) {
    throw new CloisterError('INVALID_ARGUMENT', `HPKE public key must be ${HPKE_PUBLIC_KEY_BYTES} bytes`);
  }
  const n = checkNonce(nonce);
  return {
    publicKey: Uint8Array.from(hpkePublicKey),
    userData: new Uint8Array(createHash('sha512').update(keyConfig).digest()),
    nonce: n.byteLength === 0 ? null : n,
  };
}

/**
 * Check SEV-SNP / TDX report_data against the key config and nonce, in constant time.
 * Throws CloisterError(BINDING_MISMATCH).
 */
export function checkReportDataBinding(reportData: Uint8Array, keyConfig: Uint8Array, nonce?: Uint8Array): void {
  const expected = reportDataFor(keyConfig, nonce);
  if (!timingSafeEqualBytes(reportData, expected)) {
    throw new CloisterError('BINDING_MISMATCH', 'report_data does not bind the key config and nonce');
  }
}
