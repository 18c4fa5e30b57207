/**
 * The one CBOR codec (src/core/cbor.ts): RFC 8949 Appendix A examples, every acceptance
 * rule in each mode its callers use (protocol: strict deterministic; NSM / EIF: serde_cbor
 * output; Nitro documents: indefinite maps, tags, any heads), every limit hit, buffer
 * hygiene, and a seeded property cross-check against an independent implementation (cbor-x).
 */
import { readdirSync } from 'node:fs';
import { Decoder, Encoder, Tag } from 'cbor-x';
import { describe, expect, it } from 'vitest';
import {
  CborTagged,
  DEFAULT_CBOR_DECODE_OPTIONS,
  decodeCbor,
  encodeCbor,
  isCborMap,
  isCborTagged,
  toPlain,
} from '../../src/core/cbor.js';
import type { CborDecodeOptions, CborInput, CborKey, CborValue } from '../../src/core/cbor.js';
import { hex, toHex } from '../helpers/bytes.js';
import { codeOf } from '../helpers/errors.js';
import { mulberry32 as prng } from '../helpers/random.js'; // seeded: any failure reproduces
import { describeWithVectors, readVector, vectorPath } from '../helpers/vectors.js';

/** The option sets the callers use (see the call sites). */
const SERDE: CborDecodeOptions = { requireCanonical: false };
const SERDE_INDEFINITE: CborDecodeOptions = { requireCanonical: false, allowIndefinite: true };
const NITRO: CborDecodeOptions = { requireCanonical: false, requireShortestHeads: false, allowIndefinite: true, allowTags: true };
const MESSAGES: CborDecodeOptions = { allowFloats: true };

describe('encoder: deterministic (RFC 8949 section 4.2.1, Appendix A examples)', () => {
  it('integers, floats, strings, arrays', () => {
    expect(toHex(encodeCbor(0))).toBe('00');
    expect(toHex(encodeCbor(23))).toBe('17');
    expect(toHex(encodeCbor(24))).toBe('1818');
    expect(toHex(encodeCbor(1000))).toBe('1903e8');
    expect(toHex(encodeCbor(1000000))).toBe('1a000f4240');
    expect(toHex(encodeCbor(1000000000000))).toBe('1b000000e8d4a51000');
    expect(toHex(encodeCbor(-1))).toBe('20');
    expect(toHex(encodeCbor(-1000))).toBe('3903e7');
    expect(toHex(encodeCbor(Number.MAX_SAFE_INTEGER))).toBe('1b001fffffffffffff');
    expect(toHex(encodeCbor(18446744073709551615n))).toBe('1bffffffffffffffff');
    expect(toHex(encodeCbor(-18446744073709551616n))).toBe('3bffffffffffffffff');
    expect(toHex(encodeCbor(5n))).toBe('05'); // a bigint gets the shortest head too
    expect(toHex(encodeCbor(1.1))).toBe('fb3ff199999999999a');
    expect(toHex(encodeCbor(false))).toBe('f4');
    expect(toHex(encodeCbor(true))).toBe('f5');
    expect(toHex(encodeCbor(null))).toBe('f6');
    expect(toHex(encodeCbor(''))).toBe('60');
    expect(toHex(encodeCbor('IETF'))).toBe('6449455446');
    expect(toHex(encodeCbor('\u00fc'))).toBe('62c3bc');
    expect(toHex(encodeCbor(hex('01020304')))).toBe('4401020304');
    expect(toHex(encodeCbor([]))).toBe('80');
    expect(toHex(encodeCbor([1, [2, 3], [4, 5]]))).toBe('8301820203820405');
    expect(toHex(encodeCbor(new CborTagged(1, 1363896240)))).toBe('c11a514b67b0');
  });

  it('sorts map keys bytewise by their encodings; undefined values are omitted', () => {
    // Shorter text first, integers before text.
    expect(toHex(encodeCbor({ bb: 1, a: 2 }))).toBe('a261610262626201');
    expect(toHex(encodeCbor(new Map<CborKey, number>([['a', 1], [10, 2], [1, 3]])))).toBe('a301030a02616101');
    expect(toHex(encodeCbor(new Map<CborKey, number>([[256, 1], [24, 2], [1, 3]])))).toBe('a3010318180219010001');
    expect(toHex(encodeCbor({ a: 1, b: undefined }))).toBe('a1616101');
    expect(toHex(encodeCbor(new Map<CborKey, CborInput | undefined>([['a', undefined]])))).toBe('a0');
  });

  it('sortKeys: false keeps insertion order (serde_cbor struct field order)', () => {
    const m = new Map<CborKey, number>([['lock', 1], ['data', 2]]);
    expect(toHex(encodeCbor(m, { sortKeys: false }))).toBe('a2646c6f636b01646461746102');
    expect(toHex(encodeCbor(m))).toBe('a2646461746102646c6f636b01');
  });

  it('rejects what it cannot carry (INVALID_ARGUMENT)', () => {
    const cases: [string, () => unknown][] = [
      ['undefined at the top', () => encodeCbor(undefined as unknown as CborInput)],
      ['undefined in an array', () => encodeCbor([undefined] as unknown as CborInput)],
      ['NaN', () => encodeCbor(Number.NaN)],
      ['Infinity', () => encodeCbor(Number.POSITIVE_INFINITY)],
      ['integer beyond 2^53 - 1 as number', () => encodeCbor(2 ** 53)],
      ['bigint beyond 64 bits', () => encodeCbor(1n << 64n)],
      ['bigint below -2^64', () => encodeCbor(-(1n << 64n) - 1n)],
      ['negative map key', () => encodeCbor(new Map([[-1, 1]]))],
      ['non-integer map key', () => encodeCbor(new Map([[1.5, 1]]))],
      ['byte-string map key', () => encodeCbor(new Map([[new Uint8Array(1), 1]]) as unknown as CborInput)],
      ['class instance', () => encodeCbor(new Date(0) as unknown as CborInput)],
      ['typed array other than Uint8Array', () => encodeCbor(new Float32Array(2) as unknown as CborInput)],
      ['function', () => encodeCbor((() => 1) as unknown as CborInput)],
      ['negative tag', () => new CborTagged(-1, null)],
    ];
    for (const [name, fn] of cases) expect(codeOf(fn), name).toBe('INVALID_ARGUMENT');
  });

  it('maxDepth bounds nesting, so a cyclic value fails cleanly instead of overflowing the stack', () => {
    const cyclic: unknown[] = [];
    cyclic.push(cyclic);
    expect(codeOf(() => encodeCbor(cyclic as CborInput))).toBe('INVALID_ARGUMENT');
    let deep: CborInput = 0;
    for (let i = 0; i < 5; i++) deep = [deep];
    expect(codeOf(() => encodeCbor(deep, { maxDepth: 4 }))).toBe('INVALID_ARGUMENT');
    expect(toHex(encodeCbor(deep, { maxDepth: 5 }))).toBe('818181818100');
    expect(codeOf(() => encodeCbor(1, { maxDepth: -1 }))).toBe('INVALID_ARGUMENT');
  });

  it('copies byte strings: the output never aliases the input', () => {
    const pool = Buffer.alloc(64, 7);
    const field = pool.subarray(8, 12);
    const out = encodeCbor({ b: field });
    pool.fill(0);
    expect(toHex(out)).toBe('a161624407070707');
    expect(out.buffer).not.toBe(pool.buffer);
  });
});

describe('decoder: strict by default (protocol key config and messages)', () => {
  it('decodes what the encoder writes', () => {
    expect(decodeCbor(hex('1903e8'))).toBe(1000);
    expect(decodeCbor(hex('3903e7'))).toBe(-1000);
    expect(decodeCbor(hex('83 01 20 f6'))).toEqual([1, -1, null]);
    expect(decodeCbor(hex('a2 02 42 ab cd 61 61 01'))).toEqual(new Map<CborKey, CborValue>([[2, hex('abcd')], ['a', 1]]));
    expect(decodeCbor(hex('1b001fffffffffffff'))).toBe(Number.MAX_SAFE_INTEGER);
    expect(decodeCbor(hex('3b001ffffffffffffe'))).toBe(-Number.MAX_SAFE_INTEGER);
    expect(decodeCbor(encodeCbor(new Map<string, null>([['x', null]])))).toEqual(new Map([['x', null]]));
  });

  it('rejects, each with MALFORMED', () => {
    const cases: [string, string][] = [
      ['non-shortest 1-byte head', '1817'],
      ['non-shortest 2-byte head', '190017'],
      ['non-shortest 4-byte head', '1a0000ffff'],
      ['non-shortest 8-byte head', '1b00000000ffffffff'],
      ['non-shortest length', '5801ff'],
      ['indefinite array', '9f01ff'],
      ['indefinite map', 'bf616101ff'],
      ['tag', 'c11a514b67b0'],
      ['trailing byte', '0000'],
      ['truncated', '42ab'],
      ['truncated head', '19 01'],
      ['empty input', ''],
      ['invalid UTF-8', '62c328'],
      ['duplicate map key', 'a2616101616102'],
      ['map keys out of order', 'a2616201616102'],
      ['integer keys out of order', 'a2 02 01 01 02'],
      ['text key before integer key', 'a2 6161 01 01 02'],
      ['negative map key', 'a12001'],
      ['non-scalar map key', 'a18001'],
      ['huge array length, no bytes', '9a7fffffff'],
      ['huge map length, no bytes', 'ba7fffffff'],
      ['length beyond input', '5a00010000'],
      ['array count beyond input', '9a00010000'],
      ['unsigned beyond 2^53 - 1', '1bffffffffffffffff'],
      ['unsigned 2^53', '1b0020000000000000'],
      ['negative beyond -(2^53 - 1)', '3b001fffffffffffff'],
      ['float16', 'f93c00'],
      ['float32', 'fa47c35000'],
      ['float64', 'fb3ff199999999999a'],
      ['undefined', 'f7'],
      ['simple value (one byte)', 'f820'],
      ['simple value (immediate)', 'f0'],
      ['reserved additional info', '1c'],
      ['reserved additional info in a length', '5d'],
      ['stray break', 'ff'],
      ['break in a definite array', '8201ff'],
      ['indefinite integer', '1f'],
    ];
    for (const [name, bytes] of cases) expect(codeOf(() => decodeCbor(hex(bytes))), name).toBe('MALFORMED');
  });

  it('allowFloats (strict): finite, non-integral float64 only (one encoding per value)', () => {
    expect(decodeCbor(hex('fb3ff199999999999a'), MESSAGES)).toBe(1.1);
    expect(decodeCbor(hex('82 fb3fe0000000000000 01'), MESSAGES)).toEqual([0.5, 1]);
    for (const bad of [
      'f93c00', // float16
      'fa47c35000', // float32 100000
      'fa3fc00000', // float32 1.5
      'fb3ff0000000000000', // 1.0: the integer 1 has its own encoding
      'fb4271000000000000', // 2^40 as float64 (a `ts` in disguise)
      'fb7fe0000000000000', // 2^1023: integral, and encodeCbor refuses it as a number
      'fb8000000000000000', // -0.0
      'fb7ff8000000000000', // NaN
      'fb7ff0000000000000', // +inf
      'fbfff0000000000000', // -inf
    ]) {
      expect(codeOf(() => decodeCbor(hex(bad), MESSAGES)), bad).toBe('MALFORMED');
    }
  });

  it('allowFloats with requireCanonical: false also takes float32 and integral floats', () => {
    const relaxed: CborDecodeOptions = { allowFloats: true, requireCanonical: false };
    expect(decodeCbor(hex('fa47c35000'), relaxed)).toBe(100000);
    expect(decodeCbor(hex('fb3ff0000000000000'), relaxed)).toBe(1);
    expect(codeOf(() => decodeCbor(hex('f93c00'), relaxed))).toBe('MALFORMED');
  });

  it('the strict decoder takes back every number the encoder writes, in the one form it writes', () => {
    for (const v of [0, -1, 1.5, -0.25, 2 ** 53 - 1, -(2 ** 53 - 1), 1e-300, Number.MIN_VALUE, 123456.789]) {
      expect(decodeCbor(encodeCbor(v), MESSAGES), String(v)).toBe(v);
    }
    expect(toHex(encodeCbor(-0))).toBe('00');
  });

  it('allowBigInt returns integers beyond 2^53 - 1 as bigint (up to 64 bits)', () => {
    const big: CborDecodeOptions = { allowBigInt: true };
    expect(decodeCbor(hex('1bffffffffffffffff'), big)).toBe(18446744073709551615n);
    expect(decodeCbor(hex('1b0020000000000000'), big)).toBe(2n ** 53n);
    expect(decodeCbor(hex('3bffffffffffffffff'), big)).toBe(-18446744073709551616n);
    expect(decodeCbor(hex('3b001fffffffffffff'), big)).toBe(-(2n ** 53n));
    expect(decodeCbor(hex('1b001fffffffffffff'), big)).toBe(Number.MAX_SAFE_INTEGER); // safe range stays number
    expect(decodeCbor(encodeCbor(2n ** 60n), big)).toBe(2n ** 60n);
    expect(codeOf(() => decodeCbor(hex('5bffffffffffffffff'), big))).toBe('MALFORMED'); // a length is never a bigint
  });

  it('allowTags returns CborTagged; tags are never accepted silently', () => {
    const tagged = decodeCbor(hex('d2 80'), { allowTags: true });
    expect(tagged).toBeInstanceOf(CborTagged);
    expect(isCborTagged(tagged) && tagged.tag).toBe(18);
    expect(isCborTagged(tagged) && tagged.value).toEqual([]);
    expect(codeOf(() => decodeCbor(hex('d2')))).toBe('MALFORMED'); // tag without content (truncated)
    expect(codeOf(() => decodeCbor(hex('d2'), { allowTags: true }))).toBe('MALFORMED');
    expect(codeOf(() => decodeCbor(hex('d812 00'), { allowTags: true }))).toBe('MALFORMED'); // non-shortest tag head
    expect(codeOf(() => decodeCbor(hex('df 00'), { allowTags: true }))).toBe('MALFORMED'); // indefinite tag
  });

  it('a "__proto__" key is plain data, never a prototype', () => {
    const bytes = encodeCbor(new Map([['__proto__', new Map([['polluted', true]])]]));
    const m = decodeCbor(bytes);
    expect(isCborMap(m) && m.get('__proto__')).toEqual(new Map([['polluted', true]]));
    const plain = toPlain(m) as Record<string, unknown>;
    expect(Object.getPrototypeOf(plain)).toBe(Object.prototype);
    expect(Object.prototype.hasOwnProperty.call(plain, '__proto__')).toBe(true);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    // The encoder sees an own "__proto__" property as an ordinary key.
    expect(toHex(encodeCbor(JSON.parse('{"__proto__": 1}') as CborInput))).toBe('a1695f5f70726f746f5f5f01');
  });

  it('toPlain converts text-keyed maps and refuses integer keys', () => {
    expect(toPlain(decodeCbor(encodeCbor({ a: [1, { b: 'c' }] })))).toEqual({ a: [1, { b: 'c' }] });
    expect(codeOf(() => toPlain(decodeCbor(encodeCbor(new Map([[1, 1]])))))).toBe('MALFORMED');
  });

  it('integer and text keys stay distinct', () => {
    const m = decodeCbor(encodeCbor(new Map<CborKey, number>([[1, 1], ['1', 2]])));
    expect(isCborMap(m) && [m.get(1), m.get('1')]).toEqual([1, 2]);
  });

  it('returns private copies, never views of the input', () => {
    const pool = Buffer.alloc(64);
    const input = pool.subarray(10, 13);
    input.set(hex('42abcd'));
    const out = decodeCbor(input) as Uint8Array;
    pool.fill(0);
    expect(toHex(out)).toBe('abcd');
    expect(out.buffer).not.toBe(pool.buffer);
  });
});

describe('decoder limits (LIMIT_EXCEEDED, each a named option)', () => {
  it('maxDepth', () => {
    expect(codeOf(() => decodeCbor(hex('818181818100'), { maxDepth: 3, maxItems: 100 }))).toBe('LIMIT_EXCEEDED');
    expect(decodeCbor(hex('818181818100'), { maxDepth: 5 })).toEqual([[[[[0]]]]]);
    expect(codeOf(() => decodeCbor(hex('8181818101'), { ...SERDE, maxDepth: 2 }))).toBe('LIMIT_EXCEEDED');
    const deep = hex('81'.repeat(10) + '00');
    expect(codeOf(() => decodeCbor(deep, { ...NITRO, maxDepth: 8 }))).toBe('LIMIT_EXCEEDED');
    expect(decodeCbor(deep, { ...NITRO, maxDepth: 10 })).toBeInstanceOf(Array);
    expect(codeOf(() => decodeCbor(hex('d2 d2 d2 00'), { allowTags: true, maxDepth: 2 }))).toBe('LIMIT_EXCEEDED'); // tags nest too
    // Default: 16.
    expect(codeOf(() => decodeCbor(hex('81'.repeat(17) + '00')))).toBe('LIMIT_EXCEEDED');
    expect(decodeCbor(hex('81'.repeat(16) + '00'))).toBeInstanceOf(Array);
    // A break is not an item: an empty indefinite array at the deepest level still fits.
    expect(decodeCbor(hex('81 9f ff'), { ...SERDE_INDEFINITE, maxDepth: 1 })).toEqual([[]]);
  });

  it('maxItems (map keys count)', () => {
    expect(codeOf(() => decodeCbor(hex('83010203'), { maxDepth: 3, maxItems: 3 }))).toBe('LIMIT_EXCEEDED');
    expect(decodeCbor(hex('83010203'), { maxItems: 4 })).toEqual([1, 2, 3]);
    expect(codeOf(() => decodeCbor(hex('a1616101'), { maxItems: 2 }))).toBe('LIMIT_EXCEEDED');
    const many = encodeCbor(Array.from({ length: 100 }, (_, i) => i));
    expect(codeOf(() => decodeCbor(many, { ...NITRO, maxItems: 100 }))).toBe('LIMIT_EXCEEDED');
    expect((decodeCbor(many, { ...NITRO, maxItems: 101 }) as unknown[]).length).toBe(100);
    // An indefinite array cannot dodge the count.
    expect(codeOf(() => decodeCbor(hex('9f' + '00'.repeat(50) + 'ff'), { ...SERDE_INDEFINITE, maxItems: 50 }))).toBe('LIMIT_EXCEEDED');
  });

  it('maxBytes (checked before any read)', () => {
    expect(codeOf(() => decodeCbor(hex('43010203'), { maxBytes: 3 }))).toBe('LIMIT_EXCEEDED');
    expect(decodeCbor(hex('43010203'), { maxBytes: 4 })).toEqual(hex('010203'));
    expect(DEFAULT_CBOR_DECODE_OPTIONS.maxBytes).toBe(16 * 1024 * 1024);
    expect(codeOf(() => decodeCbor(new Uint8Array(DEFAULT_CBOR_DECODE_OPTIONS.maxBytes + 1)))).toBe('LIMIT_EXCEEDED');
  });

  it('rejects invalid or contradictory options (INVALID_ARGUMENT)', () => {
    for (const o of [{ maxDepth: -1 }, { maxItems: 1.5 }, { maxBytes: Number.POSITIVE_INFINITY }, { maxBytes: Number.NaN }]) {
      expect(codeOf(() => decodeCbor(hex('00'), o)), JSON.stringify(o)).toBe('INVALID_ARGUMENT');
    }
    expect(codeOf(() => decodeCbor(hex('00'), { allowIndefinite: true }))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => decodeCbor(hex('00'), { requireShortestHeads: false }))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => decodeCbor('00' as unknown as Uint8Array))).toBe('INVALID_ARGUMENT');
  });
});

describe('decoder modes of the other callers', () => {
  it('serde_cbor output (NSM messages, EIF signature section): any key order, shortest heads, nothing else relaxed', () => {
    expect(decodeCbor(hex('a2616201616102'), SERDE)).toEqual(new Map([['b', 1], ['a', 2]]));
    const cases: [string, string][] = [
      ['non-shortest', '1817'],
      ['indefinite not allowed unless asked', '9f01ff'],
      ['duplicate key', 'a2616101616102'],
      ['tag', 'c101'],
      ['float', 'f93c00'],
      ['length beyond input', '5a00010000'],
      ['array count beyond input', '9a00010000'],
      ['invalid UTF-8', '62c328'],
      ['negative map key', 'a12001'],
      ['trailing', '0000'],
    ];
    for (const [name, bytes] of cases) expect(codeOf(() => decodeCbor(hex(bytes), SERDE)), name).toBe('MALFORMED');
    expect(decodeCbor(hex('9f01ff'), SERDE_INDEFINITE)).toEqual([1]);
  });

  it('Nitro documents: indefinite maps and arrays, tag 18, long heads; everything else still rejected', () => {
    expect(decodeCbor(hex('bf 61 61 01 ff'), NITRO)).toEqual(new Map([['a', 1]]));
    expect(decodeCbor(hex('9f 01 02 ff'), NITRO)).toEqual([1, 2]);
    expect(decodeCbor(hex('9f ff'), NITRO)).toEqual([]);
    expect(decodeCbor(hex('bf ff'), NITRO)).toEqual(new Map());
    expect(decodeCbor(hex('9f 9f ff bf ff ff'), NITRO)).toEqual([[], new Map()]);
    expect(decodeCbor(hex('18 01'), NITRO)).toBe(1);
    expect(decodeCbor(hex('a2 61 62 01 61 61 02'), NITRO)).toEqual(new Map([['b', 1], ['a', 2]]));
    expect(decodeCbor(hex('d2 80'), NITRO)).toEqual(new CborTagged(18, []));
    const cases: [string, string][] = [
      ['trailing byte', '01 00'],
      ['truncated', '42 ab'],
      ['float', 'f9 3c 00'],
      ['float64', 'fb 3f f0 00 00 00 00 00 00'],
      ['undefined', 'f7'],
      ['simple value', 'f0'],
      ['indefinite byte string', '5f 41 00 ff'],
      ['indefinite text string', '7f 61 61 ff'],
      ['indefinite integer', '1f'],
      ['indefinite negative integer', '3f'],
      ['reserved additional info', '1c'],
      ['stray break', 'ff'],
      ['break in definite array', '82 01 ff'],
      ['break as a map value', 'bf 61 61 ff'],
      ['break as tag content', '9f d2 ff'],
      ['unterminated indefinite array', '9f 01 02'],
      ['duplicate map key', 'a2 61 61 01 61 61 02'],
      ['duplicate map key, different head lengths', 'a2 01 01 18 01 02'],
      ['duplicate key in an indefinite map', 'bf 61 61 01 61 61 02 ff'],
      ['non-scalar map key', 'a1 80 01'],
      ['invalid UTF-8', '62 c3 28'],
      ['integer beyond 2^53', '1b 00 20 00 00 00 00 00 00'],
      ['tag without content', 'd2'],
    ];
    for (const [name, bytes] of cases) expect(codeOf(() => decodeCbor(hex(bytes), NITRO)), name).toBe('MALFORMED');
  });

  const nitroDir = 'nitro';
  describeWithVectors(nitroDir, 'real Nitro documents (test/vectors/nitro)', () => {
    it('decode in Nitro mode, and every one also meets the shortest-head rule', () => {
      const files = readdirSync(vectorPath(nitroDir)).filter((f) => f.endsWith('.cbor'));
      expect(files.length).toBeGreaterThan(0);
      for (const f of files) {
        const bytes = readVector(`${nitroDir}/${f}`);
        const envelope = decodeCbor(bytes, { ...NITRO, requireShortestHeads: true });
        const arr = isCborTagged(envelope) ? envelope.value : envelope;
        expect(Array.isArray(arr), f).toBe(true);
        const payload = (arr as CborValue[])[2];
        expect(payload, f).toBeInstanceOf(Uint8Array);
        const doc = decodeCbor(payload as Uint8Array, { ...SERDE_INDEFINITE, maxItems: 4096 });
        expect(isCborMap(doc) && typeof doc.get('module_id'), f).toBe('string');
      }
    });
  });
});

// ---------------------------------------------------------------------------------------
// Cross-check against cbor-x, an independent implementation.

const EDGE_INTS = [0, 1, 23, 24, 255, 256, 65535, 65536, 0xffff_ffff, 0x1_0000_0000, Number.MAX_SAFE_INTEGER];
const WORDS = ['', 'a', 'model', '__proto__', 'constructor', 'caf\u00e9', '\u20ac', '\ud834\udd1e', 'x'.repeat(30), 'y'.repeat(300)];

interface Shape {
  /** Allow integers beyond 32 bits (cbor-x writes those as float64, so not for byte equality). */
  readonly wideInts: boolean;
}

function randomValue(r: () => number, depth: number, s: Shape): CborValue {
  const pick = Math.floor(r() * (depth >= 4 ? 6 : 8));
  const uint = (): number => {
    const edge = EDGE_INTS[Math.floor(r() * EDGE_INTS.length)] ?? 0;
    const n = r() < 0.5 ? edge : Math.floor(r() * 2 ** Math.floor(r() * 53));
    return s.wideInts ? n : n % 0x1_0000_0000;
  };
  const int = (): number => (r() < 0.3 ? -1 - Math.min(uint(), Number.MAX_SAFE_INTEGER - 1) : uint());
  switch (pick) {
    case 0:
      return int();
    case 1: {
      const f = (r() - 0.5) * 10 ** Math.floor(r() * 12 - 4);
      return Number.isInteger(f) ? f + 0.5 : f;
    }
    case 2:
      return r() < 0.5 ? (WORDS[Math.floor(r() * WORDS.length)] ?? '') : String.fromCodePoint(...Array.from({ length: Math.floor(r() * 8) }, () => 0x20 + Math.floor(r() * 0x2000)));
    case 3:
      return Uint8Array.from({ length: Math.floor(r() * (r() < 0.1 ? 300 : 30)) }, () => Math.floor(r() * 256));
    case 4:
      return r() < 0.5;
    case 5:
      return null;
    case 6:
      return Array.from({ length: Math.floor(r() * 6) }, () => randomValue(r, depth + 1, s));
    default: {
      const m = new Map<CborKey, CborValue>();
      const n = Math.floor(r() * 6);
      for (let i = 0; i < n; i++) {
        const k = r() < 0.5 ? uint() : (WORDS[Math.floor(r() * WORDS.length)] ?? '') + String(i % 3);
        m.set(k, randomValue(r, depth + 1, s));
      }
      return m;
    }
  }
}

/** cbor-x output -> our value model: Buffer -> Uint8Array, safe bigint -> number, Tag -> CborTagged. */
function normalize(v: unknown): unknown {
  if (typeof v === 'bigint') return v >= -BigInt(Number.MAX_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  if (v instanceof Uint8Array) return Uint8Array.from(v);
  if (Array.isArray(v)) return v.map(normalize);
  if (v instanceof Map) return new Map([...v].map(([k, x]) => [normalize(k), normalize(x)]));
  if (v instanceof Tag) return new CborTagged(v.tag, normalize(v.value) as CborValue);
  return v;
}

describe('cross-check with cbor-x', () => {
  // mapsAsObjects: false also leaves Maps untagged (no tag 259).
  const cborxEncoder = new Encoder({ useRecords: false, mapsAsObjects: false, variableMapSize: true, tagUint8Array: false });
  const cborxDecoder = new Decoder({ useRecords: false, mapsAsObjects: false });
  const N = 400;

  it('our encoding decodes identically with cbor-x (sorted and insertion order)', () => {
    const r = prng(0xc1015);
    for (let i = 0; i < N; i++) {
      const v = randomValue(r, 0, { wideInts: true });
      for (const sortKeys of [true, false]) {
        const bytes = encodeCbor(v, { sortKeys });
        expect(normalize(cborxDecoder.decode(bytes)), `value ${i}`).toEqual(v);
        // And our own strict decoder reads it back (sorted maps are canonical).
        expect(decodeCbor(bytes, sortKeys ? MESSAGES : { ...SERDE, allowFloats: true }), `value ${i}`).toEqual(v);
      }
    }
  });

  it('cbor-x encodings decode identically with ours', () => {
    const r = prng(0x5eed);
    for (let i = 0; i < N; i++) {
      const v = randomValue(r, 0, { wideInts: true });
      const bytes = new Uint8Array(cborxEncoder.encode(v));
      // cbor-x keeps insertion order and writes integers beyond 32 bits as float64.
      expect(decodeCbor(bytes, { ...SERDE, allowFloats: true }), `value ${i}`).toEqual(v);
    }
  });

  it('for values in deterministic key order, cbor-x writes byte-identical output that our strict decoder accepts', () => {
    const r = prng(0xd37);
    for (let i = 0; i < N; i++) {
      const ours = encodeCbor(randomValue(r, 0, { wideInts: false }));
      // Our decoder returns maps in encoded (sorted) order: feed that back to cbor-x.
      const canonical = decodeCbor(ours, MESSAGES);
      const theirs = new Uint8Array(cborxEncoder.encode(canonical));
      expect(toHex(theirs), `value ${i}`).toBe(toHex(ours));
      expect(decodeCbor(theirs, MESSAGES)).toEqual(canonical);
    }
  });

  it('tags and bigints agree; cbor-x non-shortest bigint heads are caught by the strict decoder', () => {
    const tagged = encodeCbor(new CborTagged(18, [hex('a10138'), new Map(), hex('a0'), new Uint8Array(4)]));
    expect(normalize(cborxDecoder.decode(tagged))).toEqual(new CborTagged(18, [hex('a10138'), new Map(), hex('a0'), new Uint8Array(4)]));
    const theirTag = new Uint8Array(cborxEncoder.encode(new Tag([1, 'a'], 18)));
    expect(decodeCbor(theirTag, { allowTags: true })).toEqual(new CborTagged(18, [1, 'a']));
    expect(codeOf(() => decodeCbor(theirTag))).toBe('MALFORMED');

    const big = 2n ** 60n + 7n;
    expect(cborxDecoder.decode(encodeCbor(big))).toBe(big);
    expect(cborxDecoder.decode(encodeCbor(-big))).toBe(-big);
    expect(decodeCbor(new Uint8Array(cborxEncoder.encode(big)), { allowBigInt: true })).toBe(big);
    // cbor-x always writes a bigint with an 8-byte head: not the shortest form for 5n.
    const five = new Uint8Array(cborxEncoder.encode(5n));
    expect(toHex(five)).toBe('1b0000000000000005');
    expect(codeOf(() => decodeCbor(five))).toBe('MALFORMED');
    expect(decodeCbor(five, { requireCanonical: false, requireShortestHeads: false })).toBe(5);
  });
});

describe('encoder fast paths (text written in place, cached keys, scratch buffer)', () => {
  const cborxDecoder = new Decoder({ useRecords: false, mapsAsObjects: false });
  const refText = (s: string): string => {
    const b = Buffer.from(s, 'utf8');
    const n = b.byteLength;
    const head = n < 24 ? [0x60 + n] : n < 0x100 ? [0x78, n] : n < 0x10000 ? [0x79, n >> 8, n & 0xff] : [0x7a, n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
    return Buffer.from(head).toString('hex') + b.toString('hex');
  };

  it('text of every head size, ASCII and not, matches the reference encoding', () => {
    const samples: string[] = [''];
    for (const n of [1, 7, 8, 22, 23, 24, 25, 63, 64, 65, 85, 86, 255, 256, 21_845, 21_846, 65_535, 65_536, 70_000]) {
      samples.push('a'.repeat(n), 'é'.repeat(n), 'x'.repeat(Math.max(0, n - 1)) + '€', '😀'.repeat(Math.ceil(n / 2)));
    }
    samples.push('\ud800', 'a\udfffb'); // lone surrogates: U+FFFD, as TextEncoder writes them
    for (const s of samples) {
      expect(toHex(encodeCbor(s)), `length ${s.length}`).toBe(refText(s));
      expect(decodeCbor(encodeCbor(s))).toBe(Buffer.from(s, 'utf8').toString('utf8'));
    }
  });

  it('strings written while the buffer grows keep every byte', () => {
    // Many strings of mixed sizes in one value: the writer grows in the middle of them.
    const r = prng(0x7e47);
    for (let round = 0; round < 20; round++) {
      const arr: string[] = [];
      for (let i = 0; i < 60; i++) {
        const n = Math.floor(r() * 90);
        arr.push(Array.from({ length: n }, () => String.fromCharCode(r() < 0.9 ? 0x20 + Math.floor(r() * 90) : 0xe0 + Math.floor(r() * 400))).join(''));
      }
      const bytes = encodeCbor(arr);
      expect(cborxDecoder.decode(bytes)).toEqual(arr);
      expect(decodeCbor(bytes)).toEqual(arr);
    }
  });

  it('results never share the scratch buffer; a nested encode (a getter) is correct too', () => {
    const first = encodeCbor({ a: 'one', b: new Uint8Array(100).fill(1) });
    const copy = Uint8Array.from(first);
    const second = encodeCbor({ a: 'two', b: new Uint8Array(100).fill(2) });
    expect(first).toEqual(copy);
    expect(first.buffer).not.toBe(second.buffer);
    let inner: Uint8Array | undefined;
    const withGetter = {
      get x(): number {
        inner = encodeCbor({ y: 'inner' });
        return 1;
      },
      z: 'outer',
    };
    const outer = encodeCbor(withGetter);
    expect(toPlain(decodeCbor(outer))).toEqual({ x: 1, z: 'outer' });
    expect(inner === undefined ? undefined : toPlain(decodeCbor(inner))).toEqual({ y: 'inner' });
    // A large value (scratch grows past what is kept), then small ones again.
    const big = new Uint8Array(200_000).fill(9);
    expect(decodeCbor(encodeCbor({ big }))).toEqual(new Map([['big', big]]));
    expect(toHex(encodeCbor({ t: 'end' }))).toBe('a16174' + '63656e64');
  });

  it('a failed encode leaves the encoder usable', () => {
    expect(codeOf(() => encodeCbor({ a: 'x', b: Number.NaN }))).toBe('INVALID_ARGUMENT');
    expect(toHex(encodeCbor({ a: 'x' }))).toBe('a16161' + '6178');
  });

  it('many distinct keys (past the key cache bound) still encode correctly and in order', () => {
    const obj: Record<string, number> = {};
    for (let i = 0; i < 2000; i++) obj[`k${i}`] = i;
    obj['é-key'] = -1;
    obj['x'.repeat(40)] = -2; // longer than cached keys
    for (let pass = 0; pass < 2; pass++) {
      const bytes = encodeCbor(obj);
      const back = decodeCbor(bytes);
      expect(toPlain(back)).toEqual(obj);
    }
  });

  it('toPlain keeps prototype names as own data properties', () => {
    const plain = toPlain(decodeCbor(encodeCbor(new Map<CborKey, CborInput>([['__proto__', { p: 1 }], ['toString', 'x'], ['constructor', 2], ['a', 'é']])))) as Record<string, unknown>;
    expect(Object.getPrototypeOf(plain)).toBe(Object.prototype);
    expect(Object.keys(plain).sort()).toEqual(['__proto__', 'a', 'constructor', 'toString']);
    expect(Object.getOwnPropertyDescriptor(plain, '__proto__')?.value).toEqual({ p: 1 });
    expect(plain['toString']).toBe('x');
    expect(plain['a']).toBe('é');
  });
});
