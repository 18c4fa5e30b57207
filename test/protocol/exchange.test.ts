/**
 * The request/response state machines (src/protocol/request.ts, response.ts) without any
 * transport: what the writer seals, the reader opens in any split, in order, with a verified
 * receipt; every out-of-order, truncated or forged stream fails with its code.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CloisterError } from '../../src/errors.js';
import { generateX25519KeyPair, HpkeRecipientKey, suiteFromIds } from '../../src/crypto/index.js';
import { MAX_RESPONSE_CHUNK_LENGTH, openChunkedRequest, sealChunkedRequest } from '../../src/protocol/chunked.js';
import {
  CAPABILITIES,
  encodeResponseChunk,
  encodeSealedRequest,
  generateReceiptKeyPair,
  JsonResults,
  padBucket,
  signReceipt,
  verifyReceipt,
} from '../../src/protocol/messages.js';
import type { SealedRequest } from '../../src/protocol/messages.js';
import { openRequest, sealRequest } from '../../src/protocol/request.js';
import type { RequestKey } from '../../src/protocol/request.js';
import type { ResponseWriter } from '../../src/protocol/response.js';
import { ResponseReader } from '../../src/protocol/response.js';
import { codeOf } from '../helpers/errors.js';

const kp = generateX25519KeyPair();
const receiptKeys = generateReceiptKeyPair();
const key: RequestKey = {
  recipient: HpkeRecipientKey.fromPrivateKey(kp.privateKey),
  signReceipt: (m) => signReceipt(receiptKeys.privateKey, m),
};
const otherReceiptKeys = generateReceiptKeyPair();
const suite = suiteFromIds(0x20, 1, 1);
const target = { keyId: 9, publicKey: kp.publicKey, suite };
const lookup = (id: number): RequestKey => {
  if (id !== 9) throw new CloisterError('UNKNOWN_KEY_ID');
  return key;
};
const verify = (m: Uint8Array, s: Uint8Array): boolean => verifyReceipt(receiptKeys.publicKey, m, s);

function request(over: Partial<SealedRequest> = {}): SealedRequest {
  return { v: 1, op: 'classify', model: 'm', input: 'hello', stream: false, ts: 1_700_000_000_000, id: new Uint8Array(randomBytes(16)), caps: CAPABILITIES, ...over };
}

/** A sealed request opened by the server: the client's reader and the server's opened request. */
function pair(over: Partial<SealedRequest> = {}, receipts: Uint8Array[] = []): { reader: ResponseReader; writer: ResponseWriter; decoded: SealedRequest } {
  const { bytes, reader } = sealRequest(target, request(over), { pad: true, verify, onReceipt: (_m, s) => receipts.push(s) });
  const opened = openRequest(lookup, bytes, { maxMessageBytes: 1 << 20 });
  expect(opened.key).toBe(key);
  return { reader, writer: opened.writer, decoded: opened.decode() };
}

/** Feeds `bytes` to the reader one byte at a time, then ends the stream. */
function readAll(reader: ResponseReader, pieces: readonly Uint8Array[]): unknown[] {
  const out: unknown[] = [];
  for (const p of pieces) for (let i = 0; i < p.byteLength; i++) out.push(...reader.push(p.subarray(i, i + 1)));
  out.push(...reader.finish());
  return out;
}

describe('request and response state machines', () => {
  it('round trip: data, items and json results arrive in order, split byte by byte, with a verified receipt', () => {
    const receipts: Uint8Array[] = [];
    const { reader, writer, decoded } = pair({ input: 'text', params: { topK: 2 } }, receipts);
    expect(decoded.input).toBe('text');
    expect(decoded.params).toEqual({ topK: 2 });
    const pieces = [
      writer.start(),
      writer.results([{ a: 1 }], { json: true }),
      writer.results([1, 2, 3], { json: true }),
      writer.results([new JsonResults(['{"x":1}', '[2]'])], { json: true }),
      writer.end(),
    ];
    expect(writer.chunks).toBe(3);
    expect(readAll(reader, pieces)).toEqual([{ a: 1 }, 1, 2, 3, { x: 1 }, [2]]);
    expect(reader.complete).toBe(true);
    expect(reader.started).toBe(true);
    expect(reader.serverError).toBeUndefined();
    expect(receipts).toHaveLength(1);
  });

  it('a sealed error reaches the reader as a server-origin error after the results before it', () => {
    const { reader, writer } = pair();
    const pieces = [writer.start(), writer.results(['r'], { json: true }), writer.error('OVERLOADED', 'busy'), writer.end()];
    expect(readAll(reader, pieces)).toEqual(['r']);
    expect(reader.serverError?.code).toBe('OVERLOADED');
    expect(reader.serverError?.message).toBe('busy');
    expect(reader.serverError?.detail?.['origin']).toBe('server');
  });

  it('the writer pads chunks to their bucket only once asked', () => {
    const { writer } = pair();
    writer.start();
    const plain = writer.results(['x'], { json: true });
    writer.padChunks(true);
    const padded = writer.results(['x'], { json: true });
    // framed: a 2-byte varint length + ciphertext (plaintext + 16-byte tag); the smallest bucket
    expect(padded.byteLength - 2 - 16).toBe(padBucket(1));
    expect(plain.byteLength).toBeLessThan(padded.byteLength);
  });

  it('the writer refuses a chunk over MAX_RESPONSE_CHUNK_LENGTH by name, and any write after end', () => {
    const { writer } = pair();
    writer.start();
    let caught: unknown;
    try {
      writer.data(encodeResponseChunk({ t: 'data', data: new Uint8Array(MAX_RESPONSE_CHUNK_LENGTH) }));
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(CloisterError);
    expect((caught as CloisterError).code).toBe('LIMIT_EXCEEDED');
    expect((caught as CloisterError).detail?.['limit']).toBe('MAX_RESPONSE_CHUNK_LENGTH');
    expect(codeOf(() => writer.start())).toBe('PROTOCOL_VIOLATION');
    writer.end();
    expect(codeOf(() => writer.end())).toBe('PROTOCOL_VIOLATION');
    expect(codeOf(() => writer.results([1], { json: true }))).toBe('PROTOCOL_VIOLATION');
  });

  it('a stream without its final chunk is STREAM_TRUNCATED', () => {
    const { reader, writer } = pair();
    const start = writer.start();
    const data = writer.results([1], { json: true });
    expect(reader.push(start)).toEqual([]);
    expect(reader.push(data)).toEqual([1]);
    expect(codeOf(() => reader.finish())).toBe('STREAM_TRUNCATED');
    // terminal
    expect(codeOf(() => reader.push(new Uint8Array(1)))).toBe('PROTOCOL_VIOLATION');
  });

  it('bytes after the final chunk are a PROTOCOL_VIOLATION', () => {
    const { reader, writer } = pair();
    reader.push(writer.start());
    reader.push(writer.results([1], { json: true }));
    reader.push(writer.end());
    expect(reader.finish()).toEqual([]);
    expect(reader.complete).toBe(true);
    expect(codeOf(() => reader.push(new Uint8Array(1)))).toBe('PROTOCOL_VIOLATION');
  });

  it('a receipt by another key is RECEIPT_INVALID', () => {
    const { bytes, reader } = sealRequest(target, request(), { pad: false, verify: (m, s) => verifyReceipt(otherReceiptKeys.publicKey, m, s) });
    const { writer } = openRequest(lookup, bytes, { maxMessageBytes: 1 << 20 });
    const pieces = [writer.start(), writer.results([1], { json: true }), writer.end()];
    expect(codeOf(() => readAll(reader, pieces))).toBe('RECEIPT_INVALID');
  });

  it('a json item that is not JSON is MALFORMED', () => {
    const { reader, writer } = pair();
    reader.push(writer.start());
    expect(codeOf(() => reader.push(writer.data(encodeResponseChunk({ t: 'json', items: ['{nope'] }))))).toBe('MALFORMED');
  });

  // Chunks out of the protocol's order, sealed with the genuine keys (only the server could).
  const raw = (): { reader: ResponseReader; sealer: ReturnType<typeof openChunkedRequest>['response'] } => {
    const plaintext = encodeSealedRequest(request());
    const sealed = sealChunkedRequest(target, plaintext);
    const opened = openChunkedRequest((id) => lookup(id).recipient, sealed.bytes);
    return { reader: new ResponseReader(sealed.response, plaintext, { verify }), sealer: opened.response };
  };
  const end = encodeResponseChunk({ t: 'end', receipt: new Uint8Array(64) });

  it('data after an error chunk is a PROTOCOL_VIOLATION', () => {
    const { reader, sealer } = raw();
    reader.push(sealer.start());
    reader.push(sealer.sealChunk(encodeResponseChunk({ t: 'error', code: 'INTERNAL', message: 'x' })));
    expect(codeOf(() => reader.push(sealer.sealChunk(encodeResponseChunk({ t: 'data', data: 1 }))))).toBe('PROTOCOL_VIOLATION');
  });

  it('an end message in a non-final chunk, a final chunk that is not end, and end with data are PROTOCOL_VIOLATIONs', () => {
    let r = raw();
    r.reader.push(r.sealer.start());
    expect(codeOf(() => r.reader.push(r.sealer.sealChunk(end)))).toBe('PROTOCOL_VIOLATION');
    r = raw();
    r.reader.push(r.sealer.start());
    r.reader.push(r.sealer.sealFinal(encodeResponseChunk({ t: 'data', data: 1 })));
    expect(codeOf(() => r.reader.finish())).toBe('PROTOCOL_VIOLATION');
    r = raw();
    r.reader.push(r.sealer.start());
    r.reader.push(r.sealer.sealFinal(encodeResponseChunk({ t: 'end', data: 1, receipt: new Uint8Array(64) })));
    expect(codeOf(() => r.reader.finish())).toBe('PROTOCOL_VIOLATION');
  });

  it('openRequest: an unknown key id fails with its code; the decoder is strict', () => {
    const { bytes } = sealRequest({ ...target, keyId: 3 }, request(), { pad: false, verify });
    expect(codeOf(() => openRequest(lookup, bytes, { maxMessageBytes: 1 << 20 }))).toBe('UNKNOWN_KEY_ID');
    const sealed = sealChunkedRequest(target, new Uint8Array([0xa0]));
    const opened = openRequest(lookup, sealed.bytes, { maxMessageBytes: 1 << 20 });
    expect(codeOf(() => opened.decode())).toBe('MALFORMED');
    const big = sealChunkedRequest(target, new Uint8Array(2048).fill(1));
    expect(codeOf(() => openRequest(lookup, big.bytes, { maxMessageBytes: 1024 }))).toBe('LIMIT_EXCEEDED');
  });
});
