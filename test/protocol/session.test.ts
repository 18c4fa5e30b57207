/**
 * Protocol v2 sessions (src/protocol/session.ts) without transports: open, per-request keys,
 * and the tamper suite: replayed, reordered, dropped, duplicated and cross-session spliced
 * requests and responses; strict decoders for every new message.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CloisterError } from '../../src/errors.js';
import { generateX25519KeyPair, HpkeRecipientKey, suiteFromIds } from '../../src/crypto/index.js';
import { openChunkedRequest } from '../../src/protocol/chunked.js';
import { encodeCbor } from '../../src/core/cbor.js';
import { CAPABILITIES, generateReceiptKeyPair, signReceipt, verifyReceipt } from '../../src/protocol/messages.js';
import type { SealedRequest } from '../../src/protocol/messages.js';
import type { RequestKey } from '../../src/protocol/request.js';
import type { ResponseReader } from '../../src/protocol/response.js';
import {
  acceptSessionOpen,
  decodeSessionOpen,
  decodeSessionOpenReply,
  encodeSessionOpenReply,
  openSessionRequest,
  parseSessionRequestHeader,
  SESSION_REPLAY_WINDOW,
  SequenceWindow,
  SessionOpening,
} from '../../src/protocol/session.js';
import type { ClientSession, SessionState } from '../../src/protocol/session.js';
import { decodeWireMessage, encodeWireMessage } from '../../src/protocol/wire.js';
import { codeOf } from '../helpers/errors.js';

const kp = generateX25519KeyPair();
const receiptKeys = generateReceiptKeyPair();
const recipient = HpkeRecipientKey.fromPrivateKey(kp.privateKey);
const key: RequestKey = { recipient, signReceipt: (m) => signReceipt(receiptKeys.privateKey, m) };
const suite = suiteFromIds(0x20, 1, 1);
const target = { keyId: 4, publicKey: kp.publicKey, suite };
const bounds = { maxAgeS: 600, maxBytes: 1 << 30, idleS: 120 };
const verify = (m: Uint8Array, s: Uint8Array): boolean => verifyReceipt(receiptKeys.publicKey, m, s);
const limits = { maxMessageBytes: 1 << 20 };

/** A session opened end to end: the client's half and the server's state. */
function open(): { client: ClientSession; server: SessionState } {
  const opening = new SessionOpening(target);
  const req = openChunkedRequest(() => recipient, opening.bytes);
  const { reply, state } = acceptSessionOpen(req.suite, req.plaintext, bounds);
  opening.push(req.response.start());
  opening.push(req.response.sealFinal(reply));
  return { client: opening.finish(Date.now()), server: state };
}

function request(input = 'hello'): SealedRequest {
  return { v: 1, op: 'classify', model: 'm', input, stream: false, ts: Date.now(), id: new Uint8Array(randomBytes(16)), caps: CAPABILITIES };
}

/** The server answers `body` with `results`; returns the response stream. */
function serve(server: SessionState, body: Uint8Array, results: unknown[] = ['ok']): Uint8Array {
  const opened = openSessionRequest(server, key, body, limits);
  const w = opened.writer;
  return Buffer.concat([w.start(), w.results(results, { json: true }), w.end()]);
}

function read(reader: ResponseReader, bytes: Uint8Array): unknown[] {
  return [...reader.push(bytes), ...reader.finish()];
}

describe('sessions', () => {
  it('open, then requests with only symmetric work: results and a verified receipt per request', () => {
    const { client, server } = open();
    expect(client.reply.maxAgeS).toBe(600);
    for (let i = 1; i <= 3; i++) {
      const receipts: Uint8Array[] = [];
      const sealed = client.seal(request(`text ${i}`), { pad: true, verify, onReceipt: (_m, s) => receipts.push(s) });
      expect(sealed.seq).toBe(i);
      const opened = openSessionRequest(server, key, sealed.bytes, limits);
      expect(opened.decode().input).toBe(`text ${i}`);
      const w = opened.writer;
      const bytes = Buffer.concat([w.start(), w.results([i], { json: true }), w.end()]);
      expect(read(sealed.reader, bytes)).toEqual([i]);
      expect(receipts).toHaveLength(1);
    }
  });

  it('a replayed request is REPLAY, and is not run twice', () => {
    const { client, server } = open();
    const sealed = client.seal(request(), { pad: false, verify });
    serve(server, sealed.bytes);
    expect(codeOf(() => openSessionRequest(server, key, sealed.bytes, limits))).toBe('REPLAY');
  });

  it('reordered and dropped requests: each accepted once within the window, none older', () => {
    const { client, server } = open();
    const all = Array.from({ length: SESSION_REPLAY_WINDOW + 4 }, () => client.seal(request(), { pad: false, verify }));
    const at = (i: number): Uint8Array => (all[i] as { bytes: Uint8Array }).bytes;
    // seq 2 before seq 1 (reordered), seq 3 dropped for now
    serve(server, at(1));
    serve(server, at(0));
    expect(codeOf(() => openSessionRequest(server, key, at(0), limits))).toBe('REPLAY');
    // far ahead: seq SESSION_REPLAY_WINDOW + 4
    serve(server, at(SESSION_REPLAY_WINDOW + 3));
    // seq 3 is now more than the window behind: refused
    expect(codeOf(() => openSessionRequest(server, key, at(2), limits))).toBe('REPLAY');
    // seq 4 is exactly at the window's edge: still accepted, once
    serve(server, at(3));
    expect(codeOf(() => openSessionRequest(server, key, at(3), limits))).toBe('REPLAY');
  });

  it('a request whose body is damaged fails to open and does not use up its sequence number', () => {
    const { client, server } = open();
    const sealed = client.seal(request(), { pad: false, verify });
    const bad = Uint8Array.from(sealed.bytes);
    bad[bad.byteLength - 1] = (bad[bad.byteLength - 1] as number) ^ 1;
    expect(codeOf(() => openSessionRequest(server, key, bad, limits))).toBe('HPKE_OPEN_FAILED');
    serve(server, sealed.bytes);
  });

  it('cross-session splicing fails: a request spliced into another session, a response into another request', () => {
    const a = open();
    const b = open();
    const reqA = a.client.seal(request(), { pad: false, verify });
    // session B's id on session A's body
    const spliced = Uint8Array.from(reqA.bytes);
    spliced.set(b.client.id, 0);
    expect(codeOf(() => openSessionRequest(b.server, key, spliced, limits))).toBe('HPKE_OPEN_FAILED');
    // B's response to B's seq 1 fed to A's reader for A's seq 1
    const reqB = b.client.seal(request(), { pad: false, verify });
    const resB = serve(b.server, reqB.bytes);
    expect(codeOf(() => read(reqA.reader, resB))).toBe('HPKE_OPEN_FAILED');
  });

  it('responses: one for another sequence number fails, a duplicated one and a truncated one are refused', () => {
    const { client, server } = open();
    const one = client.seal(request(), { pad: false, verify });
    const two = client.seal(request(), { pad: false, verify });
    const res1 = serve(server, one.bytes);
    const res2 = serve(server, two.bytes);
    // reordered: seq 1's response delivered as seq 2's
    expect(codeOf(() => read(two.reader, res1))).toBe('HPKE_OPEN_FAILED');
    // duplicated: the genuine response twice (the final chunk runs to the end of the stream)
    expect(one.reader.push(res1)).toEqual(['ok']);
    one.reader.push(res1);
    expect(codeOf(() => one.reader.finish())).toBe('HPKE_OPEN_FAILED');
    // and after a complete response, any byte more
    const four = client.seal(request(), { pad: false, verify });
    expect(read(four.reader, serve(server, four.bytes))).toEqual(['ok']);
    expect(codeOf(() => four.reader.push(Uint8Array.of(0)))).toBe('PROTOCOL_VIOLATION');
    // dropped final chunk
    const three = client.seal(request(), { pad: false, verify });
    const opened = openSessionRequest(server, key, three.bytes, limits);
    const w = opened.writer;
    three.reader.push(Buffer.concat([w.start(), w.results([1], { json: true })]));
    expect(codeOf(() => three.reader.finish())).toBe('STREAM_TRUNCATED');
    expect(res2.byteLength).toBeGreaterThan(0);
  });

  it('a damaged open answer fails; two sessions to the same key have different keys', () => {
    const opening = new SessionOpening(target);
    const req = openChunkedRequest(() => recipient, opening.bytes);
    const { reply } = acceptSessionOpen(req.suite, req.plaintext, bounds);
    opening.push(req.response.start());
    const fin = req.response.sealFinal(reply);
    fin[5] = (fin[5] as number) ^ 1;
    opening.push(fin);
    expect(codeOf(() => opening.finish(Date.now()))).toBe('HPKE_OPEN_FAILED');
    const a = open();
    const b = open();
    expect(Buffer.from(a.client.id).equals(Buffer.from(b.client.id))).toBe(false);
  });

  it('strict decoders for the open messages and the request header', () => {
    const share = new Uint8Array(32).fill(9);
    expect(decodeSessionOpen(encodeCbor({ v: 2, share })).share).toEqual(share);
    expect(codeOf(() => decodeSessionOpen(encodeCbor({ v: 2, share, x: 1 })))).toBe('MALFORMED');
    expect(codeOf(() => decodeSessionOpen(encodeCbor({ v: 2, share: share.subarray(1) })))).toBe('MALFORMED');
    expect(codeOf(() => decodeSessionOpen(encodeCbor({ v: 3, share })))).toBe('VERSION_UNSUPPORTED');
    expect(codeOf(() => decodeSessionOpen(encodeCbor({ share })))).toBe('MALFORMED');
    expect(codeOf(() => decodeSessionOpen(Buffer.concat([encodeCbor({ v: 2, share }), Buffer.of(0)])))).toBe('MALFORMED');
    const reply = { v: 2 as const, id: new Uint8Array(16), share, maxAgeS: 1, maxBytes: 2, idleS: 3 };
    expect(decodeSessionOpenReply(encodeSessionOpenReply(reply))).toEqual(reply);
    expect(codeOf(() => decodeSessionOpenReply(encodeCbor({ ...reply, maxAgeS: 0 })))).toBe('MALFORMED');
    expect(codeOf(() => decodeSessionOpenReply(encodeCbor({ ...reply, id: new Uint8Array(15) })))).toBe('MALFORMED');
    expect(codeOf(() => parseSessionRequestHeader(new Uint8Array(23)))).toBe('MALFORMED');
    expect(codeOf(() => parseSessionRequestHeader(new Uint8Array(24)))).toBe('MALFORMED');
    const big = new Uint8Array(24);
    big.fill(0xff, 16);
    expect(codeOf(() => parseSessionRequestHeader(big))).toBe('MALFORMED');
  });

  it('a small-order client share is refused', () => {
    const zero = encodeCbor({ v: 2, share: new Uint8Array(32) });
    let err: unknown;
    try {
      acceptSessionOpen(suite, zero, bounds);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CloisterError);
    expect((err as CloisterError).code).toBe('DECRYPT_FAILED');
  });

  it('SequenceWindow: exact bounds', () => {
    const w = new SequenceWindow();
    w.accept(5);
    expect([w.fresh(5), w.fresh(4), w.fresh(6)]).toEqual([false, true, true]);
    w.accept(5 + SESSION_REPLAY_WINDOW);
    expect(w.fresh(5)).toBe(false);
    expect(w.fresh(4)).toBe(false);
    expect(w.fresh(6)).toBe(true);
    w.accept(6);
    expect(w.fresh(6)).toBe(false);
    w.accept(5 + 2 * SESSION_REPLAY_WINDOW);
    expect(w.fresh(5 + SESSION_REPLAY_WINDOW)).toBe(false);
    expect(w.fresh(6 + SESSION_REPLAY_WINDOW)).toBe(true);
    expect(codeOf(() => w.accept(6))).toBe('REPLAY');
  });

  it('wire: sopen and sreq frames, evidence-req v, strictly', () => {
    const body = Uint8Array.of(1, 2, 3);
    for (const t of ['sopen', 'sreq'] as const) expect(decodeWireMessage(encodeWireMessage({ t, sid: 7, body }))).toEqual({ t, sid: 7, body });
    expect(codeOf(() => decodeWireMessage(encodeCbor({ t: 'sreq', sid: 7 })))).toBe('MALFORMED');
    expect(codeOf(() => decodeWireMessage(encodeCbor({ t: 'sopen', sid: 7, body, x: 1 })))).toBe('MALFORMED');
    expect(decodeWireMessage(encodeWireMessage({ t: 'evidence-req', v: 2 }))).toEqual({ t: 'evidence-req', v: 2 });
    expect(decodeWireMessage(encodeWireMessage({ t: 'evidence-req' }))).toEqual({ t: 'evidence-req' });
    for (const v of [0, 1, 3]) expect(codeOf(() => decodeWireMessage(encodeCbor({ t: 'evidence-req', v })))).toBe('MALFORMED');
    expect(codeOf(() => encodeWireMessage({ t: 'evidence-req', v: 3 }))).toBe('INVALID_ARGUMENT');
  });
});
