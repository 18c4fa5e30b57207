import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import type { EvidenceBundle } from '../../src/attestation/types.js';
import { WsClientTransport } from '../../src/client/ws-transport.js';
import { codeOf, fakeClassify, startTestServer } from './helpers.js';
import type { TestServer } from './helpers.js';
import { flip, startRelay } from './relay.js';
import type { Relay, Tamper } from './relay.js';

describe('a man in the middle is detected, never yields a wrong result', () => {
  let a: TestServer;
  let b: TestServer;
  let relay: Relay;
  beforeAll(async () => {
    // One result per sealed chunk, so a stream has several chunks to reorder (the fake engine
    // yields all results at once, which would otherwise share one chunk).
    a = await startTestServer({ limits: { maxItemsPerChunk: 1 } });
    b = await startTestServer();
    relay = await startRelay(a.wsUrl);
  });
  afterAll(async () => {
    await relay.close();
    await a.close();
    await b.close();
  });

  const client = () => connect(relay.url, { policy: a.policy, trustedRoots: a.trustedRoots });

  it('passes an untouched exchange', async () => {
    relay.tamper = (m) => [m];
    const c = await client();
    expect(await c.classify('hello there', { model: 'fake-cls' })).toEqual(fakeClassify('hello there'));
    await c.close();
  });

  it('a one-shot answer travels as one res frame with fin (nonce, chunks, final chunk together), no end frame', async () => {
    const down: string[] = [];
    relay.tamper = (m, dir) => {
      if (dir === 'down' && m.t !== 'evidence') down.push(m.t === 'res' ? `res${m.fin === true ? '+fin' : ''}` : m.t);
      return [m];
    };
    const c = await client();
    expect(await c.classify('one frame', { model: 'fake-cls' })).toEqual(fakeClassify('one frame'));
    expect(down).toEqual(['res+fin']);
    await c.close();
  });

  it('a flipped byte in the sealed request: DECRYPT_FAILED (opaque)', async () => {
    const c = await client();
    relay.tamper = (m) => (m.t === 'req' ? [{ ...m, body: flip(m.body, m.body.byteLength - 3) }] : [m]);
    expect(await codeOf(c.classify('x', { model: 'fake-cls' }))).toBe('DECRYPT_FAILED');
    // a flipped header byte (key id) is a key problem, not a wrong answer
    relay.tamper = (m) => (m.t === 'req' ? [{ ...m, body: flip(m.body, 40) }] : [m]);
    expect(await codeOf(c.classify('x', { model: 'fake-cls' }))).toBe('DECRYPT_FAILED');
    await c.close();
  });

  // The server sends a response as `res` frames carrying splits of the sealed byte stream
  // (often one frame: nonce, chunks and final chunk together), the last one with `fin`. The
  // relay collects a whole response and forwards a rewritten stream in one frame.
  const wholeResponse = (rewrite: (stream: Uint8Array) => Uint8Array): Tamper => {
    const held = new Map<number, Uint8Array[]>();
    return (m) => {
      if (m.t !== 'res') return [m];
      const parts = held.get(m.sid) ?? [];
      parts.push(m.body);
      held.set(m.sid, parts);
      if (m.fin !== true) return [];
      held.delete(m.sid);
      return [{ t: 'res', sid: m.sid, body: rewrite(Buffer.concat(parts)), fin: true }];
    };
  };
  /** Response nonce (16 bytes, AES-128-GCM), framed non-final chunks, framed final chunk. */
  const splitResponse = (stream: Uint8Array): { nonce: Uint8Array; chunks: Uint8Array[]; final: Uint8Array } => {
    const chunks: Uint8Array[] = [];
    let off = 16;
    for (;;) {
      const first = stream[off] ?? 0;
      const size = 1 << (first >> 6); // QUIC varint (RFC 9000 section 16)
      let len = first & 0x3f;
      for (let i = 1; i < size; i++) len = len * 256 + (stream[off + i] ?? 0);
      if (len === 0) return { nonce: stream.subarray(0, 16), chunks, final: stream.subarray(off) };
      chunks.push(stream.subarray(off, off + size + len));
      off += size + len;
    }
  };

  it('a flipped byte in a response chunk: HPKE_OPEN_FAILED', async () => {
    const c = await client();
    relay.tamper = wholeResponse((s) => flip(s, s.byteLength - 1));
    expect(await codeOf(c.classify('x', { model: 'fake-cls' }))).toBe('HPKE_OPEN_FAILED');
    await c.close();
  });

  it('a dropped final chunk: STREAM_TRUNCATED', async () => {
    const c = await client();
    relay.tamper = wholeResponse((s) => {
      const { nonce, chunks } = splitResponse(s);
      return Buffer.concat([nonce, ...chunks]);
    });
    expect(await codeOf(c.classify('x', { model: 'fake-cls' }))).toBe('STREAM_TRUNCATED');
    await c.close();
  });

  it('reordered chunks: HPKE_OPEN_FAILED', async () => {
    const c = await client();
    relay.tamper = wholeResponse((s) => {
      const { nonce, chunks, final } = splitResponse(s);
      const [c0, c1, ...rest] = chunks;
      if (c0 === undefined || c1 === undefined) throw new Error('expected at least two chunks');
      return Buffer.concat([nonce, c1, c0, ...rest, final]);
    });
    const got: unknown[] = [];
    const code = await codeOf(async () => {
      for await (const x of c.request({ op: 'generate', model: 'fake-gen', input: 'y', params: { n: 4 }, stream: true })) got.push(x);
    });
    expect(code).toBe('HPKE_OPEN_FAILED');
    expect(got).toEqual([]);
    await c.close();
  });

  it('a replayed request: REPLAY (inside the sealed response)', async () => {
    const c = await client();
    const OFFSET = 1_000_000;
    relay.tamper = (m, dir, send) => {
      if (dir === 'up' && m.t === 'req') {
        send('up', m);
        return [{ ...m, sid: m.sid + OFFSET }];
      }
      if (dir === 'down' && (m.t === 'res' || m.t === 'end')) {
        // deliver the replay's answer to the client, drop the original's
        if (m.sid >= OFFSET) return [{ ...m, sid: m.sid - OFFSET }];
        return [];
      }
      return [m];
    };
    const before = a.server.stats.errors.get('REPLAY') ?? 0;
    expect(await codeOf(c.classify('replay me', { model: 'fake-cls' }))).toBe('REPLAY');
    expect(a.server.stats.errors.get('REPLAY')).toBe(before + 1);
    await c.close();
  });

  it('evidence swapped in from another server, replayed, or with its key config replaced: refused before sending', async () => {
    const other = await WsClientTransport.connect(b.wsUrl);
    const fromB = await other.fetchEvidence(undefined);
    await other.close();
    const direct = await WsClientTransport.connect(a.wsUrl);
    const oldFromA = await direct.fetchEvidence(new Uint8Array(32).fill(9));
    await direct.close();
    const before = a.server.stats.sealedRequestsReceived;
    const swap = (bundle: (orig: EvidenceBundle) => EvidenceBundle) => {
      relay.tamper = (m) => (m.t === 'evidence' ? [{ t: 'evidence', bundle: bundle(m.bundle) }] : [m]);
    };
    swap(() => fromB);
    expect(await codeOf(client())).toBe('ROOT_UNTRUSTED');
    swap(() => oldFromA);
    expect(await codeOf(client())).toBe('BINDING_MISMATCH');
    swap((orig) => ({ ...orig, keyConfig: fromB.keyConfig }));
    expect(await codeOf(client())).toBe('BINDING_MISMATCH');
    relay.tamper = (m) => (m.t === 'evidence' ? [{ t: 'evidence', bundle: { ...m.bundle, evidence: flip(m.bundle.evidence, m.bundle.evidence.byteLength - 5) } }] : [m]);
    expect(await codeOf(client())).toBe('EVIDENCE_SIGNATURE_INVALID');
    expect(a.server.stats.sealedRequestsReceived).toBe(before);
    relay.tamper = (m) => [m];
  });
});
