import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import type { EvidenceBundle } from '../../src/core/types.js';
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

  // The sealed request body (docs/PROTOCOL.md section 3): header keyId(1) kemId(2) kdfId(2)
  // aeadId(2) at offsets 0..6, enc (32 bytes) at 7..38, then the chunks: a varint length at 39
  // and the first ciphertext byte at 40.
  const KEY_ID_OFFSET = 0;
  const FIRST_CIPHERTEXT_OFFSET = 40;

  it('a flipped byte in the sealed request ciphertext (first and last chunk bytes): DECRYPT_FAILED (opaque)', async () => {
    const c = await client();
    const completed = a.server.stats.requestsCompleted;
    relay.tamper = (m) => (m.t === 'req' ? [{ ...m, body: flip(m.body, m.body.byteLength - 3) }] : [m]);
    expect(await codeOf(c.classify('x', { model: 'fake-cls' }))).toBe('DECRYPT_FAILED');
    relay.tamper = (m) => (m.t === 'req' ? [{ ...m, body: flip(m.body, FIRST_CIPHERTEXT_OFFSET) }] : [m]);
    expect(await codeOf(c.classify('x', { model: 'fake-cls' }))).toBe('DECRYPT_FAILED');
    expect(a.server.stats.requestsCompleted).toBe(completed);
    await c.close();
  });

  it('a flipped key-id header byte: UNKNOWN_KEY_ID from the server, not resent to the same key, nothing answered as a success', async () => {
    const c = await client();
    const keyIds: number[] = [];
    relay.tamper = (m) => {
      if (m.t !== 'req') return [m];
      keyIds.push(m.body[KEY_ID_OFFSET] ?? -1);
      return [{ ...m, body: flip(m.body, KEY_ID_OFFSET) }];
    };
    const before = {
      unknown: a.server.stats.errors.get('UNKNOWN_KEY_ID') ?? 0,
      decrypt: a.server.stats.errors.get('DECRYPT_FAILED') ?? 0,
      opened: a.server.stats.requestsOpened,
      completed: a.server.stats.requestsCompleted,
    };
    const got: unknown[] = [];
    const code = await codeOf(async () => {
      for await (const x of c.request({ op: 'classify', model: 'fake-cls', input: 'x', stream: false })) got.push(x);
    });
    // The byte flipped is the key id the client sealed to (so the header path is what was hit).
    expect(keyIds[0]).toBe(c.keyConfig.keyId);
    // The server holds no key with the flipped id (a fresh server has no previous generation):
    // UNKNOWN_KEY_ID. Had it matched a previous generation, decapsulation with that key would
    // fail: DECRYPT_FAILED. Either way, a key problem, never a result.
    expect(code).toBe('UNKNOWN_KEY_ID');
    expect(got).toEqual([]);
    expect(a.server.stats.errors.get('UNKNOWN_KEY_ID')).toBe(before.unknown + 1);
    expect(a.server.stats.errors.get('DECRYPT_FAILED') ?? 0).toBe(before.decrypt);
    expect(a.server.stats.requestsOpened).toBe(before.opened);
    expect(a.server.stats.requestsCompleted).toBe(before.completed);
    // The refreshed key config is the same key: the client does not resend (the frame is unauthenticated).
    expect(keyIds).toHaveLength(1);
    relay.tamper = (m) => [m];
    expect(await c.classify('after', { model: 'fake-cls' })).toEqual(fakeClassify('after'));
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
      if (dir === 'down' && m.t === 'res') {
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
