/**
 * Byte helpers shared by crypto and protocol code. Internal: not re-exported from the
 * package index.
 *
 * Every helper returns a fresh, non-pooled `Uint8Array` so that the public API never hands
 * out a view into Node's shared Buffer pool or into a caller's buffer.
 */
import { CloisterError } from '../errors.js';

const textEncoder = new TextEncoder();

export function utf8(s: string): Uint8Array {
  return textEncoder.encode(s);
}

/** Fresh copy, never a view (defends against callers mutating or pooling their buffers). */
export function copyBytes(b: Uint8Array): Uint8Array {
  const out = new Uint8Array(b.byteLength);
  out.set(b);
  return out;
}

export function concatBytes(...parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.byteLength;
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}

/** I2OSP (RFC 8017 section 4.1) for small widths: big-endian, fails on overflow. */
export function i2osp(n: number, w: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0 || (w < 7 && n >= 2 ** (8 * w))) {
    throw new CloisterError('INVALID_ARGUMENT', 'integer out of range for I2OSP', { detail: { width: w } });
  }
  const out = new Uint8Array(w);
  let v = n;
  for (let i = w - 1; i >= 0 && v > 0; i--) {
    out[i] = v % 256;
    v = Math.floor(v / 256);
  }
  return out;
}

/** Type and exact-length guard with a precise, content-free error. */
export function assertBytes(value: unknown, name: string, length?: number): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new CloisterError('INVALID_ARGUMENT', `${name} must be a Uint8Array`, { detail: { field: name } });
  }
  if (length !== undefined && value.byteLength !== length) {
    throw new CloisterError('INVALID_ARGUMENT', `${name} must be exactly ${length} bytes`, {
      detail: { field: name, expected: length, actual: value.byteLength },
    });
  }
}
