import { createPublicKey } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { generateX25519KeyPair } from '../../src/crypto/index.js';
import {
  decodeKeyConfig,
  decodeResponseChunk,
  decodeSealedRequest,
  encodeKeyConfig,
  encodeResponseChunk,
  encodeSealedRequest,
  generateReceiptKeyPair,
  keyConfigDigest,
  ReceiptHasher,
  sealTargetFromKeyConfig,
  signReceipt,
  verifyReceipt,
} from '../../src/protocol/index.js';
import type { KeyConfig, SealedRequest } from '../../src/protocol/index.js';
import { decodeCbor, encodeCbor } from '../../src/core/cbor.js';
import { toHex } from '../helpers/bytes.js';
import { codeOf } from '../helpers/errors.js';

// The codec's own tests (every rule, limits, cbor-x cross-check): test/core/cbor.test.ts.

function sampleKeyConfig(): KeyConfig {
  return {
    version: 1,
    keyId: 3,
    kemId: 0x20,
    kdfId: 1,
    aeadIds: [1, 3],
    hpkePublicKey: generateX25519KeyPair().publicKey,
    receiptPublicKey: generateReceiptKeyPair().publicKey,
    models: [{ name: 'phi-detector', task: 'token-classification', digest: new Uint8Array(32).fill(7) }],
    configDigest: new Uint8Array(32).fill(9),
    platform: 'simulated',
    notBefore: 1_700_000_000,
    expiresAt: 1_700_086_400,
    engine: { kind: 'onnx', model: 'phi-detector' },
  };
}

describe('key config', () => {
  it('round-trips, is deterministic, digests the exact bytes, gives a seal target', () => {
    const kc = sampleKeyConfig();
    const b = encodeKeyConfig(kc);
    expect(toHex(encodeKeyConfig(decodeKeyConfig(b)))).toBe(toHex(b));
    expect(decodeKeyConfig(b)).toEqual(kc);
    expect(b[0]).toBe(0xad); // map of 13 entries
    expect(b[1]).toBe(0x01); // first key is 1 (version)
    expect(toHex(keyConfigDigest(b))).toHaveLength(64);
    const t = sealTargetFromKeyConfig(kc, 3);
    expect(t.suite).toEqual({ kemId: 0x20, kdfId: 1, aeadId: 3 });
    expect(codeOf(() => sealTargetFromKeyConfig({ ...kc, aeadIds: [1] }, 3))).toBe('UNSUPPORTED_SUITE');
    const noEngine: { -readonly [K in keyof KeyConfig]?: KeyConfig[K] } = { ...kc };
    delete noEngine.engine;
    const b2 = encodeKeyConfig(noEngine as KeyConfig);
    expect(decodeKeyConfig(b2).engine).toBeUndefined();
  });

  it('rejects unknown and missing keys, wrong types and lengths, non-canonical forms, trailing bytes', () => {
    const kc = sampleKeyConfig();
    const good = encodeKeyConfig(kc);
    const m = decodeCbor(good) as Map<number, unknown>;
    const re = (mut: (x: Map<number, unknown>) => void): Uint8Array => {
      const c = new Map(m);
      mut(c);
      return encodeCbor(c as never);
    };
    expect(codeOf(() => decodeKeyConfig(re((x) => x.set(14, 1))))).toBe('MALFORMED');
    expect(codeOf(() => decodeKeyConfig(re((x) => x.delete(7))))).toBe('MALFORMED');
    expect(codeOf(() => decodeKeyConfig(re((x) => x.set(6, new Uint8Array(31)))))).toBe('MALFORMED');
    expect(codeOf(() => decodeKeyConfig(re((x) => x.set(2, 256))))).toBe('MALFORMED');
    expect(codeOf(() => decodeKeyConfig(re((x) => x.set(2, '3'))))).toBe('MALFORMED');
    expect(codeOf(() => decodeKeyConfig(re((x) => x.set(10, 'sgx'))))).toBe('MALFORMED');
    expect(codeOf(() => decodeKeyConfig(re((x) => x.set(5, [2]))))).toBe('UNSUPPORTED_SUITE');
    expect(codeOf(() => decodeKeyConfig(re((x) => x.set(5, [1, 1]))))).toBe('MALFORMED');
    expect(codeOf(() => decodeKeyConfig(re((x) => x.set(3, 0x10))))).toBe('UNSUPPORTED_SUITE');
    expect(codeOf(() => decodeKeyConfig(re((x) => x.set(12, kc.notBefore))))).toBe('MALFORMED');
    expect(codeOf(() => decodeKeyConfig(Uint8Array.of(...good, 0)))).toBe('MALFORMED');
    expect(codeOf(() => decodeKeyConfig(good.subarray(0, good.length - 1)))).toBe('MALFORMED');
    // Keys out of order: swap the first two entries by hand (valid CBOR, not deterministic).
    const entries = [...m.entries()];
    const [e0, e1] = [entries[0], entries[1]];
    if (e0 === undefined || e1 === undefined) throw new Error('entries');
    const parts = [Uint8Array.of(0xad), encodeCbor(e1[0]), encodeCbor(e1[1] as never), encodeCbor(e0[0]), encodeCbor(e0[1] as never)];
    const rest = entries.slice(2).flatMap(([k, v]) => [encodeCbor(k), encodeCbor(v as never)]);
    const swapped = Uint8Array.from(Buffer.concat([...parts, ...rest]));
    expect(swapped.length).toBe(good.length);
    expect(codeOf(() => decodeKeyConfig(swapped))).toBe('MALFORMED');
    expect(codeOf(() => decodeKeyConfig(new Uint8Array(70 * 1024)))).toBe('LIMIT_EXCEEDED');
  });
});

function sampleRequest(): SealedRequest {
  return {
    v: 1,
    op: 'chat',
    model: 'llama',
    input: { messages: [{ role: 'user', content: 'hi' }], temperature: 0.7 },
    params: { max_tokens: 16 },
    stream: true,
    ts: 1_700_000_000_123,
    id: new Uint8Array(16).fill(1),
  };
}

describe('inner messages', () => {
  it('a sealed request with `ts` or `v` encoded as a float (float64 or float32, even integral) is MALFORMED', () => {
    const good = encodeSealedRequest(sampleRequest());
    const buf = Buffer.from(good);
    // `ts` 1_700_000_000_123 is a uint64 item: key "ts" (62 74 73), head 1b, 8 bytes.
    const tsKey = buf.indexOf(Buffer.from([0x62, 0x74, 0x73, 0x1b]));
    expect(tsKey).toBeGreaterThanOrEqual(0);
    const tsFloat = Buffer.from(buf);
    tsFloat[tsKey + 3] = 0xfb; // the same value as a float64: same length, otherwise identical bytes
    tsFloat.writeDoubleBE(1_700_000_000_123, tsKey + 4);
    expect(decodeCbor(tsFloat, { allowFloats: true, requireCanonical: false }) instanceof Map).toBe(true); // valid CBOR
    expect(codeOf(() => decodeSealedRequest(tsFloat))).toBe('MALFORMED');
    // `v`: key "v" (61 76) then 01; as float64 1.0 and as float32 1.0.
    const vAt = buf.indexOf(Buffer.from([0x61, 0x76, 0x01]));
    expect(vAt).toBeGreaterThanOrEqual(0);
    const head = buf.subarray(0, vAt + 2);
    const tail = buf.subarray(vAt + 3);
    const v64 = Buffer.concat([head, Buffer.from([0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]), tail]);
    const v32 = Buffer.concat([head, Buffer.from([0xfa, 0x3f, 0x80, 0, 0]), tail]);
    expect(codeOf(() => decodeSealedRequest(v64))).toBe('MALFORMED');
    expect(codeOf(() => decodeSealedRequest(v32))).toBe('MALFORMED');
    expect(decodeSealedRequest(good).ts).toBe(1_700_000_000_123);
  });

  it('sealed request round-trips', () => {
    const r = sampleRequest();
    // The encoder declares this implementation's capabilities unless told otherwise.
    expect(decodeSealedRequest(encodeSealedRequest(r))).toEqual({ ...r, caps: ['json', 'pad', 'report'] });
    expect(decodeSealedRequest(encodeSealedRequest({ ...r, caps: [] }))).toEqual({ ...r, caps: [] });
    const noParams: { -readonly [K in keyof SealedRequest]?: SealedRequest[K] } = { ...r };
    delete noParams.params;
    const np = { ...(noParams as SealedRequest), input: ['a', 'b'] };
    expect(decodeSealedRequest(encodeSealedRequest(np))).toEqual({ ...np, caps: ['json', 'pad', 'report'] });
  });

  it('capabilities: optional, bounded, strict; unknown names are kept for the server to ignore', () => {
    const r = sampleRequest();
    const base = { v: 1, op: r.op, model: r.model, input: 'x', stream: false, ts: 5, id: r.id };
    expect(decodeSealedRequest(encodeCbor(base)).caps).toEqual([]);
    expect(decodeSealedRequest(encodeCbor({ ...base, caps: ['future-thing', 'json'] })).caps).toEqual(['future-thing', 'json']);
    // In ascending order only (one encoding per value, as the encoder writes them).
    expect(codeOf(() => decodeSealedRequest(encodeCbor({ ...base, caps: ['json', 'future-thing'] })))).toBe('MALFORMED');
    expect(codeOf(() => decodeSealedRequest(encodeCbor({ ...base, caps: [] })))).toBe('MALFORMED');
    expect(codeOf(() => decodeSealedRequest(encodeCbor({ ...base, caps: 'json' })))).toBe('MALFORMED');
    expect(codeOf(() => decodeSealedRequest(encodeCbor({ ...base, caps: ['json', 'json'] })))).toBe('MALFORMED');
    expect(codeOf(() => decodeSealedRequest(encodeCbor({ ...base, caps: ['JSON'] })))).toBe('MALFORMED');
    expect(codeOf(() => decodeSealedRequest(encodeCbor({ ...base, caps: ['a'.repeat(33)] })))).toBe('MALFORMED');
    expect(codeOf(() => decodeSealedRequest(encodeCbor({ ...base, caps: Array.from({ length: 17 }, (_, i) => `c${i}`) })))).toBe('MALFORMED');
    expect(codeOf(() => encodeSealedRequest({ ...r, caps: ['Bad Name'] }))).toBe('INVALID_ARGUMENT');
    // The encoding is deterministic: sorted, without duplicates.
    expect(decodeSealedRequest(encodeSealedRequest({ ...r, caps: ['z', 'json', 'z'] })).caps).toEqual(['json', 'z']);
  });

  it('a later inner-message version is VERSION_UNSUPPORTED (clear), not MALFORMED', () => {
    const r = sampleRequest();
    const base = { v: 2, op: r.op, model: r.model, input: 'x', stream: false, ts: 5, id: r.id, newField: true };
    expect(codeOf(() => decodeSealedRequest(encodeCbor(base)))).toBe('VERSION_UNSUPPORTED');
  });

  it('sealed request decoder is strict and bounded', () => {
    const r = sampleRequest();
    const base = { v: 1, op: r.op, model: r.model, input: 'x', stream: false, ts: 5, id: r.id };
    expect(decodeSealedRequest(encodeCbor(base)).input).toBe('x');
    expect(codeOf(() => decodeSealedRequest(encodeCbor({ ...base, extra: 1 })))).toBe('MALFORMED');
    const noId: Partial<typeof base> = { ...base };
    delete noId.id;
    expect(codeOf(() => decodeSealedRequest(encodeCbor(noId)))).toBe('MALFORMED');
    expect(codeOf(() => decodeSealedRequest(encodeCbor({ ...base, id: new Uint8Array(15) })))).toBe('MALFORMED');
    expect(codeOf(() => decodeSealedRequest(encodeCbor({ ...base, v: 2 })))).toBe('VERSION_UNSUPPORTED');
    expect(codeOf(() => decodeSealedRequest(encodeCbor({ ...base, v: 'one' })))).toBe('MALFORMED');
    expect(codeOf(() => decodeSealedRequest(encodeCbor({ ...base, op: 'rm -rf' })))).toBe('UNKNOWN_OPERATION');
    expect(codeOf(() => decodeSealedRequest(encodeCbor({ ...base, stream: 1 })))).toBe('MALFORMED');
    expect(codeOf(() => decodeSealedRequest(encodeCbor({ ...base, ts: -1 })))).toBe('MALFORMED');
    expect(codeOf(() => decodeSealedRequest(encodeCbor({ ...base, params: [1] })))).toBe('MALFORMED');
    expect(codeOf(() => decodeSealedRequest(Uint8Array.of(...encodeCbor(base), 0)))).toBe('MALFORMED');
    expect(codeOf(() => decodeSealedRequest(encodeCbor({ ...base, input: ['a', 'b', 'c'] }), { maxInputItems: 2 }))).toBe('LIMIT_EXCEEDED');
    expect(codeOf(() => decodeSealedRequest(encodeCbor(base), { maxRequestBytes: 10 }))).toBe('LIMIT_EXCEEDED');
    expect(codeOf(() => decodeSealedRequest(encodeCbor({ ...base, input: [[[['deep']]]] }), { maxDepth: 3 }))).toBe('LIMIT_EXCEEDED');
    expect(codeOf(() => decodeSealedRequest(encodeCbor({ ...base, model: 'm'.repeat(300) })))).toBe('MALFORMED');
    // A "__proto__" key in input stays plain data.
    const proto = decodeSealedRequest(encodeCbor({ ...base, input: new Map([['__proto__', { polluted: true }]]) }));
    expect(Object.getPrototypeOf(proto.input)).toBe(Object.prototype);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  it('response chunks round-trip and decode strictly', () => {
    const receipt = new Uint8Array(64).fill(2);
    for (const c of [
      { t: 'data', data: { token: 'he' } } as const,
      { t: 'items', items: [{ token: 'he' }, { token: 'llo' }, null] } as const,
      { t: 'error', code: 'ENGINE_FAILED', message: 'engine failed' } as const,
      { t: 'end', receipt } as const,
      { t: 'end', data: [0.5, 1], receipt } as const,
    ]) {
      expect(decodeResponseChunk(encodeResponseChunk(c))).toEqual(c);
    }
    expect(codeOf(() => decodeResponseChunk(encodeCbor({ t: 'what' })))).toBe('MALFORMED');
    expect(codeOf(() => decodeResponseChunk(encodeCbor({ t: 'data', data: 1, x: 2 })))).toBe('MALFORMED');
    // items: a non-empty array, nothing else
    expect(codeOf(() => decodeResponseChunk(encodeCbor({ t: 'items', items: [] })))).toBe('MALFORMED');
    expect(codeOf(() => decodeResponseChunk(encodeCbor({ t: 'items', items: { a: 1 } })))).toBe('MALFORMED');
    expect(codeOf(() => decodeResponseChunk(encodeCbor({ t: 'items' })))).toBe('MALFORMED');
    expect(codeOf(() => decodeResponseChunk(encodeCbor({ t: 'items', items: [1], data: 2 })))).toBe('MALFORMED');
    expect(codeOf(() => encodeResponseChunk({ t: 'items', items: [] }))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => decodeResponseChunk(encodeCbor({ t: 'error', code: 'NOPE', message: '' })))).toBe('MALFORMED');
    expect(codeOf(() => decodeResponseChunk(encodeCbor({ t: 'end', receipt: new Uint8Array(63) })))).toBe('MALFORMED');
    expect(codeOf(() => decodeResponseChunk(encodeCbor({ t: 'data', data: 'x'.repeat(100) }), { maxChunkBytes: 50 }))).toBe('LIMIT_EXCEEDED');
  });

  it('generateReceiptKeyPair: the raw public key is the private key\'s, 32 bytes, fresh each time', () => {
    const kp = generateReceiptKeyPair();
    expect(kp.publicKey.byteLength).toBe(32);
    const x = createPublicKey(kp.privateKey).export({ format: 'jwk' }).x;
    expect(Buffer.from(kp.publicKey).toString('base64url')).toBe(x);
    expect(generateReceiptKeyPair().publicKey).not.toEqual(kp.publicKey);
    // Many generations with garbage in between: the loop that used to hang on the export path.
    let last = kp.publicKey;
    for (let i = 0; i < 2000; i++) {
      last = generateReceiptKeyPair().publicKey;
      if (i % 100 === 0) void new Array(10_000).fill({ i });
    }
    expect(last.byteLength).toBe(32);
  });

  it('receipts sign and verify over request and chunks; any change fails', () => {
    const kp = generateReceiptKeyPair();
    const req = encodeSealedRequest(sampleRequest());
    const chunks = [encodeResponseChunk({ t: 'data', data: 'a' }), encodeResponseChunk({ t: 'data', data: 'b' })];
    const server = new ReceiptHasher(req);
    for (const c of chunks) server.update(c);
    const sig = signReceipt(kp.privateKey, server.message());
    expect(codeOf(() => server.message())).toBe('PROTOCOL_VIOLATION');
    const client = (cs: Uint8Array[], r = req): Uint8Array => {
      const hh = new ReceiptHasher(r);
      for (const c of cs) hh.update(c);
      return hh.message();
    };
    expect(verifyReceipt(kp.publicKey, client(chunks), sig)).toBe(true);
    expect(verifyReceipt(kp.publicKey, client([...chunks].reverse()), sig)).toBe(false);
    expect(verifyReceipt(kp.publicKey, client(chunks.slice(0, 1)), sig)).toBe(false);
    expect(verifyReceipt(kp.publicKey, client(chunks, Uint8Array.of(...req, 0)), sig)).toBe(false);
    expect(verifyReceipt(generateReceiptKeyPair().publicKey, client(chunks), sig)).toBe(false);
    const badSig = Uint8Array.from(sig);
    badSig[0] = (badSig[0] ?? 0) ^ 1;
    expect(verifyReceipt(kp.publicKey, client(chunks), badSig)).toBe(false);
    expect(verifyReceipt(kp.publicKey.subarray(1), client(chunks), sig)).toBe(false);
    expect(verifyReceipt(kp.publicKey, client(chunks), sig.subarray(1))).toBe(false);
  });
});
