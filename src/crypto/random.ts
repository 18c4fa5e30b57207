/**
 * Pooled CSPRNG output for the per-request hot path (response nonces, request ids).
 *
 * Each `randomBytes` call has a fixed cost whatever its size (docs/PERFORMANCE.md, "Measured
 * costs behind the code"). Here one `randomFillSync` fills
 * a pool of POOL_SIZE bytes and the bytes are handed out in order, each exactly once: a slice
 * is copied out and zeroed in the pool as it leaves, so the pool never hands out the same
 * bytes twice and never holds bytes a caller already has. The output is the same OpenSSL
 * CSPRNG output as `randomBytes`; only the call is amortised.
 *
 * One pool per module instance (per thread / isolate); Node never forks a JS heap, so a
 * pool cannot be duplicated into another process.
 */
import { randomFillSync } from 'node:crypto';
import { CloisterError } from '../errors.js';

/** Bytes drawn per refill. */
export const RANDOM_POOL_SIZE = 4096;
/** Requests larger than this bypass the pool (they gain nothing from it). */
const MAX_POOLED = 256;

const pool = new Uint8Array(RANDOM_POOL_SIZE);
let offset = RANDOM_POOL_SIZE;

/** `n` fresh random bytes in a new, caller-owned array (never a view of the pool). */
export function randomBytesPooled(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new CloisterError('INVALID_ARGUMENT', 'random length must be a non-negative integer', { detail: { length: n } });
  }
  const out = new Uint8Array(n);
  if (n > MAX_POOLED) {
    randomFillSync(out);
    return out;
  }
  if (RANDOM_POOL_SIZE - offset < n) {
    randomFillSync(pool);
    offset = 0;
  }
  const end = offset + n;
  out.set(pool.subarray(offset, end));
  pool.fill(0, offset, end);
  offset = end;
  return out;
}
