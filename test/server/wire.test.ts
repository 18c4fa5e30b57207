import { describe, expect, it } from 'vitest';
import { decodeWireMessage, encodeWireMessage, MAX_STREAM_ID, WIRE_DECODE_OPTIONS } from '../../src/protocol/wire.js';
import type { WireMessage } from '../../src/protocol/wire.js';
import { hex } from '../helpers/bytes.js';
import { codeOf as code } from '../helpers/errors.js';

describe('wire messages', () => {
  const samples: WireMessage[] = [
    { t: 'evidence-req' },
    { t: 'evidence-req', nonce: new Uint8Array(64).fill(7) },
    { t: 'evidence', bundle: { platform: 'simulated', evidence: Uint8Array.of(1, 2), keyConfig: Uint8Array.of(3) } },
    { t: 'evidence', bundle: { platform: 'sev-snp', evidence: Uint8Array.of(1), keyConfig: Uint8Array.of(3), certificates: Uint8Array.of(9) } },
    { t: 'req', sid: 0, body: new Uint8Array(300).fill(1) },
    { t: 'res', sid: MAX_STREAM_ID, body: new Uint8Array(0) },
    { t: 'res', sid: 5, body: Uint8Array.of(1, 2, 3), fin: true },
    { t: 'cancel', sid: 24 },
    { t: 'err', code: 'DECRYPT_FAILED' },
    { t: 'err', sid: 70000, code: 'OVERLOADED' },
  ];
  it('round-trips every message type', () => {
    for (const m of samples) expect(decodeWireMessage(encodeWireMessage(m))).toEqual(m);
  });

  it('encodes deterministically with sorted keys', () => {
    // {"t":"cancel","sid":1}: keys sorted bytewise by encoding: "t" (0x61 0x74) < "sid" (0x63 ...)
    expect(Buffer.from(encodeWireMessage({ t: 'cancel', sid: 1 })).toString('hex')).toBe('a26174' + '6663616e63656c' + '6373696401');
  });

  it('does not alias input buffers', () => {
    const frame = encodeWireMessage({ t: 'req', sid: 1, body: Uint8Array.of(5, 6, 7) });
    const m = decodeWireMessage(frame);
    frame.fill(0);
    expect(m).toEqual({ t: 'req', sid: 1, body: Uint8Array.of(5, 6, 7) });
  });

  it('rejects trailing bytes, truncation and garbage', () => {
    const good = encodeWireMessage({ t: 'req', sid: 1, body: Uint8Array.of(1, 2, 3) });
    expect(code(() => decodeWireMessage(Uint8Array.of(...good, 0)))).toBe('MALFORMED');
    for (let i = 0; i < good.byteLength; i++) expect(code(() => decodeWireMessage(good.subarray(0, i)))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(hex('ff ff ff')))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(new Uint8Array(0)))).toBe('MALFORMED');
  });

  it('rejects unknown types, unknown fields, missing fields and wrong field types', () => {
    const enc = (entries: [string, string | number | Uint8Array | boolean][]): Uint8Array => {
      // hand-rolled map of short keys/values for negative cases
      const parts: number[] = [0xa0 + entries.length];
      for (const [k, v] of entries) {
        parts.push(0x60 + k.length, ...Buffer.from(k));
        if (typeof v === 'string') parts.push(0x60 + v.length, ...Buffer.from(v));
        else if (typeof v === 'number') parts.push(v);
        else if (typeof v === 'boolean') parts.push(v ? 0xf5 : 0xf4);
        else parts.push(0x40 + v.byteLength, ...v);
      }
      return Uint8Array.from(parts);
    };
    expect(decodeWireMessage(enc([['t', 'cancel'], ['sid', 1]]))).toEqual({ t: 'cancel', sid: 1 });
    // `end` is no message (a `res` frame with fin ends a stream): refused as any unknown type
    expect(code(() => decodeWireMessage(enc([['t', 'end'], ['sid', 1]])))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(enc([['t', 'nope'], ['sid', 1]])))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(enc([['t', 'cancel'], ['sid', 1], ['x', 1]])))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(enc([['t', 'cancel']])))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(enc([['t', 'cancel'], ['sid', 'a']])))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(enc([['t', 'cancel'], ['sid', true]])))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(enc([['t', 'req'], ['sid', 1], ['body', 'text']])))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(enc([['t', 'err'], ['code', 'NOPE']])))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(enc([['t', 'evidence-req'], ['nonce', new Uint8Array(65)]])))).toBe('MALFORMED');
    // duplicate key
    expect(code(() => decodeWireMessage(enc([['t', 'cancel'], ['sid', 1], ['sid', 2]])))).toBe('MALFORMED');
    // `fin` on a res frame: present means 1, exactly; only on res
    expect(decodeWireMessage(enc([['t', 'res'], ['sid', 1], ['body', Uint8Array.of(9)], ['fin', 1]]))).toEqual({ t: 'res', sid: 1, body: Uint8Array.of(9), fin: true });
    expect(decodeWireMessage(enc([['t', 'res'], ['sid', 1], ['body', Uint8Array.of(9)]]))).toEqual({ t: 'res', sid: 1, body: Uint8Array.of(9) });
    expect(code(() => decodeWireMessage(enc([['t', 'res'], ['sid', 1], ['body', Uint8Array.of(9)], ['fin', 0]])))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(enc([['t', 'res'], ['sid', 1], ['body', Uint8Array.of(9)], ['fin', 2]])))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(enc([['t', 'res'], ['sid', 1], ['body', Uint8Array.of(9)], ['fin', true]])))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(enc([['t', 'res'], ['sid', 1], ['body', Uint8Array.of(9)], ['fin', 'y']])))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(enc([['t', 'req'], ['sid', 1], ['body', Uint8Array.of(9)], ['fin', 1]])))).toBe('MALFORMED');
  });

  it('rejects non-shortest heads, indefinite lengths, tags, floats, negative ints and deep nesting', () => {
    // {"t":"end","sid": 24-as-uint16}
    expect(code(() => decodeWireMessage(hex('a2 6174 63656e64 63736964 19 0018')))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(hex('a2 6174 63656e64 63736964 18 05')))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(hex('bf 6174 63656e64 63736964 01 ff')))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(hex('a2 6174 63656e64 63736964 c1 01')))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(hex('a2 6174 63656e64 63736964 f9 3c00')))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(hex('a2 6174 63656e64 63736964 20')))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(hex('a2 6174 63656e64 63736964 1b 0000000100000000')))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(hex('a1 6161 a1 6161 a1 6161 01')))).toBe('MALFORMED');
    // invalid UTF-8 in a text string
    expect(code(() => decodeWireMessage(hex('a1 6174 62 c328')))).toBe('MALFORMED');
    // a top-level non-map
    expect(code(() => decodeWireMessage(hex('01')))).toBe('MALFORMED');
  });

  it('rejects null, arrays, integer keys, negative values in any field and too many items', () => {
    // {"t":"end","sid": null} / [] / [1]
    expect(code(() => decodeWireMessage(hex('a2 6174 63656e64 63736964 f6')))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(hex('a2 6174 63656e64 63736964 80')))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(hex('a2 6174 63656e64 63736964 81 01')))).toBe('MALFORMED');
    // an integer map key, a negative integer under an unknown key, an undefined value
    expect(code(() => decodeWireMessage(hex('a3 6174 63656e64 63736964 01 01 01')))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(hex('a3 6174 63656e64 63736964 01 6178 20')))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(hex('a2 6174 63656e64 63736964 f7')))).toBe('MALFORMED');
    // a top-level array, a byte string length with a 64-bit head, a nested map in a top field
    expect(code(() => decodeWireMessage(hex('82 6174 01')))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(hex('a3 6174 63726571 63736964 01 64626f6479 5b 0000000000000001 00')))).toBe('MALFORMED');
    expect(code(() => decodeWireMessage(hex('a2 6174 63656e64 63736964 a0')))).toBe('MALFORMED');
    // past WIRE_DECODE_OPTIONS.maxItems: a bundle with 30 entries (the limit is hit before the schema)
    const parts: number[] = [0xa2, 0x61, 0x74, 0x68, ...Buffer.from('evidence'), 0x66, ...Buffer.from('bundle'), 0xb8, 30];
    for (let i = 0; i < 30; i++) parts.push(0x62, 0x6b, 0x41 + i, 0x01);
    let caught: unknown;
    try {
      decodeWireMessage(Uint8Array.from(parts));
    } catch (err) {
      caught = err;
    }
    expect(code(() => {
      throw caught;
    })).toBe('MALFORMED');
    // The codec's limit fired (not the schema): its LIMIT_EXCEEDED is the cause.
    expect(code(() => {
      throw (caught as Error).cause;
    })).toBe('LIMIT_EXCEEDED');
    expect(WIRE_DECODE_OPTIONS.maxItems).toBeLessThan(61);
  });

  it('rejects a bad evidence bundle', () => {
    const good = encodeWireMessage({ t: 'evidence', bundle: { platform: 'nitro', evidence: Uint8Array.of(1), keyConfig: Uint8Array.of(2) } });
    const bad = Buffer.from(good).toString('hex').replace(Buffer.from('nitro').toString('hex'), Buffer.from('nitrx').toString('hex'));
    expect(code(() => decodeWireMessage(hex(bad)))).toBe('MALFORMED');
  });

  it('refuses to encode invalid messages', () => {
    expect(code(() => encodeWireMessage({ t: 'cancel', sid: -1 }))).toBe('INVALID_ARGUMENT');
    expect(code(() => encodeWireMessage({ t: 'cancel', sid: MAX_STREAM_ID + 1 }))).toBe('INVALID_ARGUMENT');
    expect(code(() => encodeWireMessage({ t: 'evidence-req', nonce: new Uint8Array(65) }))).toBe('INVALID_ARGUMENT');
  });
});
