/**
 * Padding to size buckets (PROTOCOL.md section 4, "Padding"): the bucket function, the `pad`
 * field the sender adds and the strict decoders' checks on it.
 */
import { describe, expect, it } from 'vitest';
import { encodeCbor } from '../../src/core/cbor.js';
import {
  PAD_MIN_BUCKET, decodeResponseChunk, decodeSealedRequest, encodeResponseChunk, encodeSealedRequest, maxPadFor, padBucket,
  padChunkPlaintext, padLengthFor, padStep,
} from '../../src/protocol/messages.js';
import type { ResponseChunk } from '../../src/protocol/messages.js';

const id = new Uint8Array(16).fill(3);
const request = (input: string) => ({ v: 1 as const, op: 'classify' as const, model: 'm', input, stream: false, ts: 1_767_225_630_000, id });

describe('size buckets', () => {
  it('256-byte steps up to 4 KiB, then 16 buckets per doubling', () => {
    expect(padBucket(1)).toBe(256);
    expect(padBucket(256)).toBe(256);
    expect(padBucket(257)).toBe(512);
    expect(padBucket(4096)).toBe(4096);
    expect(padBucket(4097)).toBe(4352);
    expect(padBucket(8193)).toBe(8704);
    expect(padBucket(1 << 20)).toBe(1 << 20);
    expect(padBucket((1 << 20) + 1)).toBe((1 << 20) + (1 << 16));
    for (let n = 1; n < 200_000; n += 97) {
      const b = padBucket(n);
      expect(b).toBeGreaterThanOrEqual(n);
      expect(padBucket(b)).toBe(b);
      expect(b - n).toBeLessThan(Math.max(PAD_MIN_BUCKET, n / 16));
    }
    expect(padStep(4096)).toBe(256);
    expect(padStep(8192)).toBe(512);
  });

  it('every response chunk length pads to exactly a bucket, decodes to the same chunk, with a bounded pad', () => {
    for (let n = 0; n < 70_000; n += n < 5_000 ? 3 : 257) {
      const chunk: ResponseChunk = { t: 'data', data: 'x'.repeat(n) };
      const plain = encodeResponseChunk(chunk);
      const padded = padChunkPlaintext(plain);
      expect(padded.byteLength).toBe(padBucket(padded.byteLength));
      expect(padded.byteLength).toBeGreaterThan(plain.byteLength);
      const p = padLengthFor(plain.byteLength) ?? -1;
      expect(p).toBeLessThanOrEqual(maxPadFor(padded.byteLength));
      // The same bytes as encoding the map with the pad field (deterministic key order).
      if (n % 9 === 0) expect(padded).toEqual(encodeCbor({ t: 'data', data: 'x'.repeat(n), pad: new Uint8Array(p) }));
      expect(decodeResponseChunk(padded)).toEqual(chunk);
    }
  });

  it('pads every chunk type; an end chunk too', () => {
    const chunks: ResponseChunk[] = [
      { t: 'items', items: [1, 'two'] },
      { t: 'json', items: ['{"a":1}'] },
      { t: 'error', code: 'REPLAY', message: 'replayed' },
      { t: 'end', data: 'x', receipt: new Uint8Array(64).fill(1) },
    ];
    for (const c of chunks) {
      const padded = padChunkPlaintext(encodeResponseChunk(c));
      expect(padded.byteLength).toBe(256);
      expect(decodeResponseChunk(padded)).toEqual(c);
    }
  });

  it('stays within a limit: a chunk near it pads to the limit, one at it is left as it is', () => {
    const plain = encodeResponseChunk({ t: 'data', data: 'x'.repeat(5000) });
    expect(padChunkPlaintext(plain, plain.byteLength + 100).byteLength).toBe(plain.byteLength + 100);
    expect(padChunkPlaintext(plain, plain.byteLength)).toBe(plain);
  });

  it('requests of different lengths within one bucket encode to the same length', () => {
    const a = encodeSealedRequest(request('short'), { pad: true });
    const b = encodeSealedRequest(request('a much longer input text, still well inside the first bucket'), { pad: true });
    expect(a.byteLength).toBe(256);
    expect(b.byteLength).toBe(256);
    for (let n = 0; n < 9_000; n += 7) {
      const r = encodeSealedRequest(request('y'.repeat(n)), { pad: true });
      expect(r.byteLength).toBe(padBucket(r.byteLength));
      expect(decodeSealedRequest(r).input).toBe('y'.repeat(n));
    }
    // Without the option (and for the protocol example): unpadded, as before.
    expect(encodeSealedRequest(request('short')).byteLength).toBeLessThan(256);
  });
});

describe('strict decoding of pad', () => {
  const withPad = (pad: unknown): Uint8Array => encodeCbor({ t: 'data', data: 1, pad } as never);
  it('refuses a pad that is not all zeros, not a byte string, or too long', () => {
    const nonzero = new Uint8Array(100);
    nonzero[57] = 1;
    expect(() => decodeResponseChunk(withPad(nonzero))).toThrow(/pad: must be all zeros/);
    expect(() => decodeResponseChunk(withPad('zeros'))).toThrow(/pad: must be a byte string/);
    expect(() => decodeResponseChunk(withPad(new Uint8Array(600)))).toThrow(/pad: 600 bytes exceed the bound of 511/);
    expect(decodeResponseChunk(withPad(new Uint8Array(500)))).toEqual({ t: 'data', data: 1 });
    const req = encodeCbor({ ...request('x'), pad: new Uint8Array(10).fill(9) });
    expect(() => decodeSealedRequest(req)).toThrow(/pad: must be all zeros/);
    // caps in ascending order only (one encoding per value; the fuzz target's canonical check).
    expect(() => decodeSealedRequest(encodeCbor({ ...request('x'), caps: ['pad', 'json'] }))).toThrow(/caps: names must be in ascending order/);
    expect(decodeSealedRequest(encodeCbor({ ...request('x'), caps: ['json', 'pad'] })).caps).toEqual(['json', 'pad']);
    const long = encodeCbor({ ...request('x'), pad: new Uint8Array(4000) });
    expect(() => decodeSealedRequest(long)).toThrow(/pad: 4000 bytes exceed/);
  });
});
