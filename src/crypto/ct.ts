import { timingSafeEqual } from 'node:crypto';

/**
 * Constant-time equality for secrets, MACs and measurements.
 * A length mismatch returns false at once: lengths are public in every use we make of it.
 */
export function timingSafeEqualBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  return timingSafeEqual(a, b);
}
