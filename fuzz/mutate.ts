/**
 * Byte-level mutations for the fuzz campaigns: fast-check arbitraries that start from valid
 * seed inputs (real vectors, or messages the project's own code produced) and damage them the
 * way a hostile host would: bit flips, byte overwrites, insertions, deletions, truncation,
 * duplicated ranges, splices of two seeds, and plain random bytes. fast-check shrinks a
 * failing case to a small list of operations, which the runner prints with the seed.
 */
import fc from 'fast-check';
import { concatBytes } from '../src/core/bytes.js';

export type Mutation =
  | { readonly op: 'flip'; readonly at: number; readonly bit: number }
  | { readonly op: 'set'; readonly at: number; readonly value: number }
  | { readonly op: 'insert'; readonly at: number; readonly bytes: Uint8Array }
  | { readonly op: 'delete'; readonly at: number; readonly length: number }
  | { readonly op: 'truncate'; readonly at: number }
  | { readonly op: 'duplicate'; readonly at: number; readonly length: number }
  | { readonly op: 'splice'; readonly at: number; readonly other: number; readonly from: number };

/** Positions are drawn as fractions of the current length so they stay meaningful while shrinking. */
const position = fc.integer({ min: 0, max: 0xffff });

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('flip' as const), at: position, bit: fc.integer({ min: 0, max: 7 }) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('set' as const),
      at: position,
      // Boundary values first: lengths, CBOR heads and varint prefixes live at these edges.
      value: fc.oneof(fc.constantFrom(0x00, 0x01, 0x17, 0x18, 0x1f, 0x3f, 0x40, 0x7f, 0x80, 0x9f, 0xbf, 0xc0, 0xf9, 0xfb, 0xff), fc.integer({ min: 0, max: 255 })),
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('insert' as const), at: position, bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('delete' as const), at: position, length: fc.integer({ min: 1, max: 32 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('truncate' as const), at: position }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('duplicate' as const), at: position, length: fc.integer({ min: 1, max: 64 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('splice' as const), at: position, other: fc.nat(), from: position }) },
);

function scale(at: number, length: number): number {
  return length === 0 ? 0 : Math.floor((at / 0x10000) * length);
}

/** Apply one mutation; `seeds` feeds splices. Never mutates its inputs. */
export function applyMutation(input: Uint8Array, m: Mutation, seeds: readonly Uint8Array[]): Uint8Array {
  const n = input.byteLength;
  switch (m.op) {
    case 'flip': {
      if (n === 0) return input;
      const out = input.slice();
      const i = scale(m.at, n);
      out[i] = (out[i] ?? 0) ^ (1 << m.bit);
      return out;
    }
    case 'set': {
      if (n === 0) return input;
      const out = input.slice();
      out[scale(m.at, n)] = m.value;
      return out;
    }
    case 'insert': {
      const i = scale(m.at, n + 1);
      return concatBytes(input.subarray(0, i), m.bytes, input.subarray(i));
    }
    case 'delete': {
      const i = scale(m.at, n);
      return concatBytes(input.subarray(0, i), input.subarray(Math.min(n, i + m.length)));
    }
    case 'truncate':
      return input.slice(0, scale(m.at, n));
    case 'duplicate': {
      const i = scale(m.at, n);
      const piece = input.subarray(i, Math.min(n, i + m.length));
      return concatBytes(input.subarray(0, i), piece, input.subarray(i));
    }
    case 'splice': {
      const other = seeds.length === 0 ? input : (seeds[m.other % seeds.length] ?? input);
      const i = scale(m.at, n);
      return concatBytes(input.subarray(0, i), other.subarray(scale(m.from, other.byteLength)));
    }
  }
}

export interface MutatedInput {
  readonly seedIndex: number;
  readonly mutations: readonly Mutation[];
  /** The mutated bytes. */
  readonly bytes: Uint8Array;
  /** True when the result equals a seed (a flip undone by another, a splice that rebuilt a seed). */
  readonly unchanged: boolean;
}

/**
 * Inputs for one target: mostly mutated seeds (1 to 8 mutations), some raw random bytes
 * (`randomWeight`), so decoders also see inputs that share nothing with a valid message.
 */
export function mutatedInputs(seeds: readonly Uint8Array[], options: { readonly randomWeight?: number; readonly maxRandomLength?: number } = {}): fc.Arbitrary<MutatedInput> {
  if (seeds.length === 0) throw new Error('a fuzz target needs at least one seed');
  const fromSeed = fc
    .record({ seedIndex: fc.nat({ max: seeds.length - 1 }), mutations: fc.array(mutation, { minLength: 1, maxLength: 8 }) })
    .map(({ seedIndex, mutations }): MutatedInput => {
      const seed = seeds[seedIndex] ?? new Uint8Array(0);
      let bytes = seed;
      for (const m of mutations) bytes = applyMutation(bytes, m, seeds);
      // A splice can rebuild another seed exactly: "unchanged" means equal to any seed.
      return { seedIndex, mutations, bytes, unchanged: equalBytes(bytes, seed) || seeds.some((s) => equalBytes(s, bytes)) };
    });
  const random = fc
    .uint8Array({ maxLength: options.maxRandomLength ?? 256 })
    .map((bytes): MutatedInput => ({ seedIndex: -1, mutations: [], bytes, unchanged: seeds.some((s) => equalBytes(s, bytes)) }));
  return fc.oneof({ weight: 9, arbitrary: fromSeed }, { weight: options.randomWeight ?? 1, arbitrary: random });
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}
