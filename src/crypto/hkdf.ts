/**
 * HKDF-SHA256 (RFC 5869) on synchronous node:crypto HMAC, or one native call per Extract or
 * Expand with the native backend (./backend.ts). Used by the HPKE key schedule (RFC 9180
 * section 4) and by the Oblivious HTTP response keys (RFC 9458 section 4.4).
 */
import { createHmac } from 'node:crypto';
import { CloisterError } from '../errors.js';
import { concatBytes } from '../core/bytes.js';
import { nativeErrorCode } from '../native/crypto.js';
import { activeNative } from './backend.js';

const HKDF_SHA256_NH = 32;

/** HKDF-Extract(salt, IKM); an empty salt means Nh zero bytes (RFC 5869 section 2.2). */
export function hkdfExtract(salt: Uint8Array, ikm: Uint8Array): Uint8Array {
  const n = activeNative();
  if (n !== undefined) {
    try {
      return n.hkdfExtract(salt, ikm);
    } catch (cause) {
      throw nativeHkdfError(cause);
    }
  }
  const h = createHmac('sha256', salt.byteLength === 0 ? ZERO_SALT : salt);
  h.update(ikm);
  return new Uint8Array(h.digest());
}

/** HKDF-Expand(PRK, info, L), L <= 255 * Nh (RFC 5869 section 2.3). */
export function hkdfExpand(prk: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  if (!Number.isInteger(length) || length < 0 || length > 255 * HKDF_SHA256_NH) {
    throw new CloisterError('INVALID_ARGUMENT', 'HKDF-Expand length out of range', { detail: { length } });
  }
  const n = activeNative();
  if (n !== undefined) {
    try {
      return n.hkdfExpand(prk, info, length);
    } catch (cause) {
      throw nativeHkdfError(cause);
    }
  }
  const out = new Uint8Array(length);
  let prev: Uint8Array | undefined;
  let off = 0;
  for (let i = 1; off < length; i++) {
    // T(i) = HMAC(PRK, T(i-1) || info || i), T(0) empty.
    const h = createHmac('sha256', prk);
    if (prev !== undefined) h.update(prev);
    h.update(info);
    h.update(COUNTER[i] ?? Uint8Array.of(i));
    prev = h.digest();
    const take = Math.min(prev.byteLength, length - off);
    out.set(prev.subarray(0, take), off);
    off += take;
  }
  return out;
}

/** HKDF-Extract(salt, concat(ikmParts)): the native backend skips building the concatenation. */
export function hkdfExtractParts(salt: Uint8Array, ikmParts: readonly Uint8Array[]): Uint8Array {
  const n = activeNative();
  if (n === undefined) return hkdfExtract(salt, concatBytes(...ikmParts));
  try {
    return n.hkdfExtractParts(salt, ikmParts);
  } catch (cause) {
    throw nativeHkdfError(cause);
  }
}

/** HKDF-Expand(PRK, concat(infoParts), L), likewise. */
export function hkdfExpandParts(prk: Uint8Array, infoParts: readonly Uint8Array[], length: number): Uint8Array {
  const n = activeNative();
  if (n === undefined) return hkdfExpand(prk, concatBytes(...infoParts), length);
  if (!Number.isInteger(length) || length < 0 || length > 255 * HKDF_SHA256_NH) {
    throw new CloisterError('INVALID_ARGUMENT', 'HKDF-Expand length out of range', { detail: { length } });
  }
  try {
    return n.hkdfExpandParts(prk, infoParts, length);
  } catch (cause) {
    throw nativeHkdfError(cause);
  }
}

const ZERO_SALT = new Uint8Array(HKDF_SHA256_NH);
// The one-byte counters 1..255 (index 0 unused), so no allocation per block.
const COUNTER: readonly Uint8Array[] = Array.from({ length: 256 }, (_, i) => Uint8Array.of(i));

function nativeHkdfError(cause: unknown): CloisterError {
  if (nativeErrorCode(cause) === 'INVALID_ARGUMENT') {
    return new CloisterError('INVALID_ARGUMENT', cause instanceof Error ? cause.message : 'bad HKDF argument', { cause });
  }
  return new CloisterError('INTERNAL', 'native HKDF failed', { cause });
}
