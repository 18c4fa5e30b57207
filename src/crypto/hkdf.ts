/**
 * HKDF-SHA256 (RFC 5869), run by the crypto backend chosen once (./backend.ts). Used by the
 * HPKE key schedule (RFC 9180 section 4) and by the Oblivious HTTP response keys (RFC 9458
 * section 4.4).
 */
import { CloisterError } from '../errors.js';
import { activeBackend } from './backend.js';

const HKDF_SHA256_NH = 32;

function checkLength(length: number): void {
  if (!Number.isInteger(length) || length < 0 || length > 255 * HKDF_SHA256_NH) {
    throw new CloisterError('INVALID_ARGUMENT', 'HKDF-Expand length out of range', { detail: { length } });
  }
}

/** HKDF-Extract(salt, IKM); an empty salt means Nh zero bytes (RFC 5869 section 2.2). */
export function hkdfExtract(salt: Uint8Array, ikm: Uint8Array): Uint8Array {
  return activeBackend().hkdfExtract(salt, ikm);
}

/** HKDF-Expand(PRK, info, L), L <= 255 * Nh (RFC 5869 section 2.3). */
export function hkdfExpand(prk: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  checkLength(length);
  return activeBackend().hkdfExpand(prk, info, length);
}

/** HKDF-Extract(salt, concat(ikmParts)): the native backend skips building the concatenation. */
export function hkdfExtractParts(salt: Uint8Array, ikmParts: readonly Uint8Array[]): Uint8Array {
  return activeBackend().hkdfExtractParts(salt, ikmParts);
}

/** HKDF-Expand(PRK, concat(infoParts), L), likewise. */
export function hkdfExpandParts(prk: Uint8Array, infoParts: readonly Uint8Array[], length: number): Uint8Array {
  checkLength(length);
  return activeBackend().hkdfExpandParts(prk, infoParts, length);
}
