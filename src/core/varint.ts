/**
 * QUIC variable-length integers (RFC 9000 section 16), as used for chunk lengths in
 * chunked OHTTP (draft-ietf-ohai-chunked-ohttp-08 section 3).
 *
 * We only ever need values below 2^53; the decoder rejects larger values and, to keep one
 * canonical encoding per value, non-minimal encodings.
 */
import { CloisterError } from '../errors.js';

export function varintLength(value: number): 1 | 2 | 4 | 8 {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new CloisterError('INVALID_ARGUMENT', 'varint out of range');
  }
  if (value < 0x40) return 1;
  if (value < 0x4000) return 2;
  if (value < 0x4000_0000) return 4;
  return 8;
}

/** Write `value` at `out[offset]`; returns bytes written. */
export function writeVarint(out: Uint8Array, offset: number, value: number): number {
  const n = varintLength(value);
  const v = new DataView(out.buffer, out.byteOffset, out.byteLength);
  if (n === 1) v.setUint8(offset, value);
  else if (n === 2) v.setUint16(offset, 0x4000 | value);
  else if (n === 4) v.setUint32(offset, 0x8000_0000 + value);
  else {
    v.setUint32(offset, 0xc000_0000 + Math.floor(value / 0x1_0000_0000));
    v.setUint32(offset + 4, value >>> 0);
  }
  return n;
}

export function encodeVarint(value: number): Uint8Array {
  const out = new Uint8Array(varintLength(value));
  writeVarint(out, 0, value);
  return out;
}

/** Bytes the varint starting with `first` occupies. */
export function varintSizeFromFirstByte(first: number): 1 | 2 | 4 | 8 {
  return (1 << (first >> 6)) as 1 | 2 | 4 | 8;
}

/**
 * Decode a varint at `offset`. Returns undefined when more bytes are needed.
 * Throws MALFORMED for non-minimal encodings or values above 2^53 - 1.
 */
export function readVarint(b: Uint8Array, offset: number): { value: number; size: number } | undefined {
  if (offset >= b.byteLength) return undefined;
  const first = b[offset] ?? 0;
  const size = varintSizeFromFirstByte(first);
  if (offset + size > b.byteLength) return undefined;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let value: number;
  if (size === 1) value = first & 0x3f;
  else if (size === 2) value = v.getUint16(offset) & 0x3fff;
  else if (size === 4) value = v.getUint32(offset) & 0x3fff_ffff;
  else {
    const hi = v.getUint32(offset) & 0x3fff_ffff;
    if (hi >= 0x20_0000) throw new CloisterError('MALFORMED', 'varint above 2^53 - 1');
    value = hi * 0x1_0000_0000 + v.getUint32(offset + 4);
  }
  if (varintLength(value) !== size) throw new CloisterError('MALFORMED', 'non-minimal varint encoding');
  return { value, size };
}
