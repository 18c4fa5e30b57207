import { describe, expect, it } from 'vitest';
import { RANDOM_POOL_SIZE, randomBytesPooled } from '../../src/crypto/random.js';

describe('randomBytesPooled', () => {
  it('returns fresh, caller-owned arrays of the requested length', () => {
    for (const n of [0, 1, 12, 16, 32, 256, 257, 5000]) {
      const b = randomBytesPooled(n);
      expect(b).toBeInstanceOf(Uint8Array);
      expect(b.byteLength).toBe(n);
      // Never a view into the pool: the array owns its whole buffer.
      expect(b.byteOffset).toBe(0);
      expect(b.buffer.byteLength).toBe(n);
    }
  });

  it('never hands out the same bytes twice, across pool refills', () => {
    const seen = new Set<string>();
    // Enough 16-byte draws to cross several refills of the pool.
    const draws = Math.ceil((3 * RANDOM_POOL_SIZE) / 16) + 7;
    for (let i = 0; i < draws; i++) {
      const hex = Buffer.from(randomBytesPooled(16)).toString('hex');
      expect(seen.has(hex)).toBe(false);
      seen.add(hex);
    }
    expect(seen.size).toBe(draws);
  });

  it('mutating a returned array does not affect later output', () => {
    const a = randomBytesPooled(32);
    a.fill(0);
    const b = randomBytesPooled(32);
    expect(b.every((x) => x === 0)).toBe(false);
  });

  it('rejects invalid lengths', () => {
    for (const n of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => randomBytesPooled(n)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
  });
});
