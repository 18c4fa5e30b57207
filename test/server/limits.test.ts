import { afterEach, describe, expect, it } from 'vitest';
import { createConnection } from 'node:net';
import { WebSocket } from 'ws';
import { connect } from '../../src/client/client.js';
import type { CloisterClient } from '../../src/client/client.js';
import { decodeWireMessage, encodeWireMessage } from '../../src/protocol/wire.js';
import type { WireMessage } from '../../src/protocol/wire.js';
import { sealChunkedRequest } from '../../src/protocol/chunked.js';
import { sealTargetFromKeyConfig } from '../../src/protocol/key-config.js';
import { encodeCbor } from '../../src/core/cbor.js';
import { WsClientTransport } from '../../src/client/ws-transport.js';
import { codeOfAsync } from '../helpers/errors.js';
import { fakeClassify, FakeEngine } from '../helpers/engines.js';
import { startTestServer } from '../helpers/test-server.js';
import { until } from '../helpers/until.js';
import type { TestServer } from '../helpers/test-server.js';
import type { ServerLimits } from '../../src/server/options.js';

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close().catch(() => undefined);
});

async function server(limits: Partial<ServerLimits> = {}, engine?: FakeEngine): Promise<TestServer> {
  const t = await startTestServer({ limits, ...(engine === undefined ? {} : { engine }) });
  open.push(t);
  return t;
}
async function client(t: TestServer, url = t.wsUrl): Promise<CloisterClient> {
  const c = await connect(url, { policy: t.policy, trustedRoots: t.trustedRoots });
  open.push(c);
  return c;
}

/** A raw WebSocket that collects decoded server messages. */
async function raw(t: TestServer): Promise<{ ws: WebSocket; got: WireMessage[]; closed: Promise<number> }> {
  const ws = new WebSocket(t.wsUrl, { perMessageDeflate: false });
  const got: WireMessage[] = [];
  ws.on('message', (d: Buffer) => got.push(decodeWireMessage(new Uint8Array(d))));
  const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
  ws.on('error', () => undefined);
  await new Promise<void>((r, j) => {
    ws.once('open', () => r());
    ws.once('error', j);
  });
  open.push({ close: async () => ws.terminate() });
  return { ws, got, closed };
}

const block = (c: CloisterClient, signal?: AbortSignal) =>
  codeOfAsync(async () => {
    for await (const _ of c.request({ op: 'generate', model: 'fake-gen', input: 'block', ...(signal === undefined ? {} : { signal }) })) void _;
  });

describe('server limits, each hit', () => {
  it('maxFrameBytes: an oversized frame closes that connection (1009); others are served', async () => {
    const t = await server({ maxFrameBytes: 4096 });
    const r = await raw(t);
    r.ws.send(encodeWireMessage({ t: 'req', sid: 1, body: new Uint8Array(5000) }));
    expect(await r.closed).toBe(1009);
    const c = await client(t);
    expect(await c.classify('still fine', { model: 'fake-cls' })).toEqual(fakeClassify('still fine'));
  });

  it('maxRequestBytes: an oversized HTTP body is LIMIT_EXCEEDED (413)', async () => {
    const t = await server({ maxRequestBytes: 1024 });
    const res = await fetch(`${t.httpUrl}/v1/sealed`, { method: 'POST', body: new Uint8Array(2048) });
    expect(res.status).toBe(413);
    expect(decodeWireMessage(new Uint8Array(await res.arrayBuffer()))).toEqual({ t: 'err', code: 'LIMIT_EXCEEDED' });
    // and a sealed request whose plaintext is over the limit is refused too (over WebSocket)
    const c = await client(t);
    expect(await codeOfAsync(c.classify('y'.repeat(2000), { model: 'fake-cls' }))).toBe('LIMIT_EXCEEDED');
  });

  it('maxInFlightPerConnection: LIMIT_EXCEEDED beyond; cancel aborts the engine', async () => {
    const t = await server({ maxInFlightPerConnection: 2 });
    const c = await client(t);
    const ac = new AbortController();
    const p1 = block(c, ac.signal);
    const p2 = block(c, ac.signal);
    await until(() => t.engine.controls.running === 2);
    expect(await block(c)).toBe('LIMIT_EXCEEDED');
    ac.abort();
    expect(await p1).toBe('CANCELLED');
    expect(await p2).toBe('CANCELLED');
    await until(() => t.engine.controls.aborted === 2);
    await until(() => t.server.stats.requestsCancelled === 2);
    expect(await c.classify('after', { model: 'fake-cls' })).toEqual(fakeClassify('after'));
  });

  it('maxInFlightTotal: OVERLOADED beyond, over WebSocket and HTTP', async () => {
    const t = await server({ maxInFlightTotal: 2 });
    const c1 = await client(t);
    const c2 = await client(t);
    const ac = new AbortController();
    const ps = [block(c1, ac.signal), block(c2, ac.signal)];
    await until(() => t.engine.controls.running === 2);
    expect(await block(await client(t))).toBe('OVERLOADED');
    expect(await codeOfAsync((await client(t, t.httpUrl)).classify('x', { model: 'fake-cls' }))).toBe('OVERLOADED');
    ac.abort();
    await Promise.all(ps);
  });

  it('engine queue depth: the engine’s OVERLOADED comes back sealed', async () => {
    const engine = new FakeEngine();
    engine.controls.maxQueueDepth = 1;
    const t = await server({}, engine);
    const c = await client(t);
    const ac = new AbortController();
    const p = block(c, ac.signal);
    await until(() => engine.controls.running === 1);
    expect(await codeOfAsync(c.classify('x', { model: 'fake-cls' }))).toBe('OVERLOADED');
    ac.abort();
    await p;
  });

  it('requestTimeoutMs: TIMEOUT inside the sealed response, engine aborted', async () => {
    const t = await server({ requestTimeoutMs: 150 });
    const c = await client(t);
    expect(await block(c)).toBe('TIMEOUT');
    await until(() => t.engine.controls.aborted === 1);
  });

  it('client requestTimeoutMs: TIMEOUT on the client, the server engine sees the cancel', async () => {
    const t = await server();
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots, requestTimeoutMs: 150 });
    open.push(c);
    expect(await block(c)).toBe('TIMEOUT');
    await until(() => t.engine.controls.aborted === 1);
  });

  it('a caller signal cancels a request before the client deadline', async () => {
    const t = await server();
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots, requestTimeoutMs: 60_000 });
    open.push(c);
    const ac = new AbortController();
    const p = block(c, ac.signal);
    await until(() => t.engine.controls.running === 1);
    ac.abort();
    expect(await p).toBe('CANCELLED');
    await until(() => t.engine.controls.aborted === 1);
  });

  it('idleTimeoutMs: an idle connection is closed', async () => {
    const t = await server({ idleTimeoutMs: 100 });
    const r = await raw(t);
    expect(await r.closed).toBe(1000);
  });

  it('evidenceRequestsPerMinutePerConnection and evidenceRequestsPerMinute: RATE_LIMITED', async () => {
    const t = await server({ evidenceRequestsPerMinutePerConnection: 2, evidenceRequestsPerMinute: 3 });
    const tr = await WsClientTransport.connect(t.wsUrl);
    open.push(tr);
    const nonce = new Uint8Array(8).fill(1);
    await tr.fetchEvidence(nonce);
    await tr.fetchEvidence(nonce);
    expect(await codeOfAsync(tr.fetchEvidence(nonce))).toBe('RATE_LIMITED');
    // nonce-less evidence is cached per key generation, not rate-limited
    await tr.fetchEvidence(undefined);
    const tr2 = await WsClientTransport.connect(t.wsUrl);
    open.push(tr2);
    await tr2.fetchEvidence(nonce);
    expect(await codeOfAsync(tr2.fetchEvidence(nonce))).toBe('RATE_LIMITED'); // global budget of 3 spent
    const res = await fetch(`${t.httpUrl}/v1/evidence?nonce=0102`);
    expect(res.status).toBe(429);
  });

  it('maxConnections: OVERLOADED (HTTP 503) on upgrade beyond', async () => {
    const t = await server({ maxConnections: 2 });
    await raw(t);
    await raw(t);
    expect(await codeOfAsync(WsClientTransport.connect(t.wsUrl))).toBe('OVERLOADED');
  });

  it('maxConnections counts HTTP connections too: a keep-alive HTTP socket holds a slot', async () => {
    const t = await server({ maxConnections: 1 });
    // One HTTP connection, kept alive after its request.
    const sock = createConnection({ host: '127.0.0.1', port: t.urls.port ?? 0 });
    open.push({ close: async () => void sock.destroy() });
    let reply = '';
    sock.on('data', (d: Buffer) => (reply += d.toString('latin1')));
    sock.write('GET /v1/evidence HTTP/1.1\r\nhost: x\r\nconnection: keep-alive\r\n\r\n');
    await until(() => reply.startsWith('HTTP/1.1 200'));
    // Now a second connection, HTTP or WebSocket, is over the limit: 503 OVERLOADED.
    const res = await fetch(`${t.httpUrl}/v1/evidence`);
    expect(res.status).toBe(503);
    expect(decodeWireMessage(new Uint8Array(await res.arrayBuffer()))).toEqual({ t: 'err', code: 'OVERLOADED' });
    expect(await codeOfAsync(WsClientTransport.connect(t.wsUrl))).toBe('OVERLOADED');
    expect(t.server.stats.connectionsRejected).toBeGreaterThanOrEqual(2);
    expect(t.server.stats.connectionsOpen).toBe(1);
    // Closing the HTTP connection frees its slot.
    sock.destroy();
    await until(() => t.server.stats.connectionsOpen === 0);
    const c = await client(t);
    expect(await c.classify('slot free', { model: 'fake-cls' })).toEqual(fakeClassify('slot free'));
  });

  it('maxConnections: sockets waiting for their 503 are bounded at twice the limit, then dropped at accept', async () => {
    const t = await server({ maxConnections: 1 });
    const port = t.urls.port ?? 0;
    const idle = (send?: string): Promise<{ closed: Promise<void> }> =>
      new Promise((resolve, reject) => {
        const s = createConnection({ host: '127.0.0.1', port });
        open.push({ close: async () => void s.destroy() });
        const closed = new Promise<void>((r) => s.on('close', () => r()));
        s.on('error', () => undefined);
        s.once('connect', () => {
          if (send === undefined) return resolve({ closed });
          // A connection that completed a request is never evicted for a newcomer.
          s.once('data', () => resolve({ closed }));
          s.write(send);
        });
        s.once('error', reject);
      });
    await idle('GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n'); // admitted, and spoke
    await idle(); // accepted over the limit: waits for its first request
    await until(() => t.server.stats.connectionsRejected === 1);
    const third = await idle(); // beyond 2 x maxConnections: closed at once, unanswered
    await third.closed;
    expect(t.server.stats.connectionsOpen).toBe(1);
    expect(t.server.stats.connectionsRejected).toBe(1); // the third never reached the server's handler
  });

  it('maxBadFramesPerConnection: one malformed frame too many closes that connection with 1008; others are served', async () => {
    const t = await server({ maxBadFramesPerConnection: 3 });
    const r = await raw(t);
    r.ws.send(Buffer.from([0xff]));
    r.ws.send('text');
    r.ws.send(encodeWireMessage({ t: 'res', sid: 1, body: new Uint8Array(0) })); // server-to-client only
    await until(() => r.got.length === 3);
    expect(r.got).toEqual([
      { t: 'err', code: 'MALFORMED' },
      { t: 'err', code: 'MALFORMED' },
      { t: 'err', code: 'PROTOCOL_VIOLATION' },
    ]);
    r.ws.send(Buffer.from([0xfe]));
    expect(await r.closed).toBe(1008);
    expect(r.got[3]).toEqual({ t: 'err', code: 'LIMIT_EXCEEDED' });
    expect(t.server.stats.errors.get('LIMIT_EXCEEDED')).toBe(1);
    // another connection is unaffected, and the closed one freed its slot
    await until(() => t.server.stats.connectionsOpen === 0);
    const c = await client(t);
    expect(await c.classify('still serving', { model: 'fake-cls' })).toEqual(fakeClassify('still serving'));
  });

  it('maxBadFramesPerConnection: well-formed traffic never counts', async () => {
    const t = await server({ maxBadFramesPerConnection: 1 });
    const r = await raw(t);
    for (let i = 0; i < 5; i++) r.ws.send(encodeWireMessage({ t: 'evidence-req' }));
    await until(() => r.got.length === 5);
    expect(r.got.every((m) => m.t === 'evidence')).toBe(true);
    r.ws.send(Buffer.from([0xff]));
    await until(() => r.got.length === 6);
    expect(r.got[5]).toEqual({ t: 'err', code: 'MALFORMED' });
    expect(r.ws.readyState).toBe(WebSocket.OPEN);
  });

  it('maxReplayEntries: OVERLOADED once the replay window is full', async () => {
    const t = await server({ maxReplayEntries: 2 });
    // v1 one-shot requests: session requests use their sequence numbers, not this window.
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots, sessions: false });
    open.push(c);
    await c.classify('a', { model: 'fake-cls' });
    await c.classify('b', { model: 'fake-cls' });
    expect(await codeOfAsync(c.classify('c', { model: 'fake-cls' }))).toBe('OVERLOADED');
  });

  it('maxReplayEntriesPerSource: one source at its share of the replay window is RATE_LIMITED, naming the limit, while the window has room', async () => {
    const t = await server({ maxReplayEntries: 10, maxReplayEntriesPerSource: 2 });
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots, sessions: false });
    open.push(c);
    await c.classify('a', { model: 'fake-cls' });
    await c.classify('b', { model: 'fake-cls' });
    await expect(c.classify('c', { model: 'fake-cls' })).rejects.toMatchObject({ code: 'RATE_LIMITED', detail: { origin: 'server' }, message: expect.stringContaining('maxReplayEntriesPerSource 2') });
  });

  it('maxItemsPerChunk: results available together share a sealed chunk, at most this many; the client sees each in order', async () => {
    const sealedChunks = async (t: TestServer, n: number): Promise<unknown[][]> => {
      const c = await client(t);
      const sealed = sealChunkedRequest(
        sealTargetFromKeyConfig(c.keyConfig),
        encodeCbor({ v: 1, op: 'generate', model: 'fake-gen', input: 'x', params: { n, size: 2 }, stream: true, ts: Date.now(), id: new Uint8Array(16).fill(n) }),
      );
      const tr = await WsClientTransport.connect(t.wsUrl);
      open.push(tr);
      const opened = [];
      for await (const piece of tr.exchange(sealed.bytes).pieces) opened.push(...sealed.response.push(piece));
      opened.push(...sealed.response.finish());
      const { decodeResponseChunk } = await import('../../src/protocol/messages.js');
      const groups: unknown[][] = [];
      for (const ch of opened.slice(0, -1)) {
        const m = decodeResponseChunk(ch.plaintext);
        if (m.t === 'data') groups.push([m.data]);
        else if (m.t === 'items') groups.push([...m.items]);
        else throw new Error(`unexpected ${m.t}`);
      }
      // and through the SDK, one result per yielded value, in order
      const got: unknown[] = [];
      for await (const x of c.request({ op: 'generate', model: 'fake-gen', input: 'x', params: { n, size: 2 }, stream: true })) got.push(x);
      expect(got).toEqual(Array.from({ length: n }, (_, i) => ({ i, text: String(i % 10).repeat(2) })));
      return groups;
    };
    // The fake engine yields all its results at once. The first chunk of a stream carries
    // the first result alone (time to first token); the rest share one chunk (64 >= 9)...
    const all = await sealedChunks(await server(), 10);
    expect(all.map((g) => g.length)).toEqual([1, 9]);
    // ...and at most maxItemsPerChunk per chunk when lower.
    const capped = await sealedChunks(await server({ maxItemsPerChunk: 3 }), 10);
    expect(capped.map((g) => g.length)).toEqual([1, 3, 3, 3]);
    expect(capped.flat()).toEqual(all.flat());
  });

  it('maxChunkTextChars: relayed JSON batches share a sealed json chunk up to this much text', async () => {
    const jsonChunks = async (t: TestServer, n: number, size: number): Promise<number[]> => {
      const c = await client(t);
      const params = { n, size };
      const sealed = sealChunkedRequest(
        sealTargetFromKeyConfig(c.keyConfig),
        encodeCbor({ v: 1, op: 'generate', model: 'fake-gen', input: 'json', params, stream: true, ts: Date.now(), id: new Uint8Array(16).fill(n), caps: ['json'] }),
      );
      const tr = await WsClientTransport.connect(t.wsUrl);
      open.push(tr);
      const opened = [];
      for await (const piece of tr.exchange(sealed.bytes).pieces) opened.push(...sealed.response.push(piece));
      opened.push(...sealed.response.finish());
      const { decodeResponseChunk } = await import('../../src/protocol/messages.js');
      const sizes: number[] = [];
      for (const ch of opened.slice(0, -1)) {
        const m = decodeResponseChunk(ch.plaintext);
        if (m.t !== 'json') throw new Error(`unexpected ${m.t}`);
        sizes.push(m.items.length);
      }
      // Through the SDK: every text parsed, in order.
      const got: unknown[] = [];
      for await (const x of c.request({ op: 'generate', model: 'fake-gen', input: 'json', params, stream: true })) got.push(x);
      expect(got).toEqual(Array.from({ length: n }, (_, i) => [{ i, part: 0, text: 'a'.repeat(size) }, { i, part: 1 }]).flat());
      return sizes;
    };
    // Each batch is two texts, 126 + 16 = 142 characters. The first chunk of a stream carries
    // the first batch alone; by default the other nine share one chunk.
    expect(await jsonChunks(await server(), 10, 100)).toEqual([2, 18]);
    // Budget 300: a chunk takes batches until it holds 300 characters or more (142, 284, 426).
    expect(await jsonChunks(await server({ maxChunkTextChars: 300 }), 10, 100)).toEqual([2, 6, 6, 6]);
  });

  it('highWaterMarkBytes: a client that stops reading stops the engine; all chunks arrive afterwards', async () => {
    const t = await server({ highWaterMarkBytes: 64 * 1024 });
    const c = await client(t);
    const n = 2000;
    const it = c.request({ op: 'generate', model: 'fake-gen', input: 'big', params: { n, size: 8192 }, stream: true })[Symbol.asyncIterator]();
    const first = await it.next();
    expect(first.done).toBe(false);
    await until(() => t.server.stats.backpressureWaits > 0);
    expect(t.engine.controls.pulled).toBeLessThan(n);
    let count = 1;
    for (;;) {
      const s = await it.next();
      if (s.done === true) break;
      count++;
    }
    expect(count).toBe(n);
    expect(t.engine.controls.pulled).toBe(n);
  });
});

describe('hostile frames: coded errors, and the server keeps serving', () => {
  it('garbage, truncated, text, unknown types, wrong direction, bad sealed bodies, unknown ops', async () => {
    const t = await server();
    const r = await raw(t);
    const good = encodeWireMessage({ t: 'req', sid: 7, body: new Uint8Array(60) });
    r.ws.send(Buffer.from([0xff, 0x00, 0x13]));
    r.ws.send(good.subarray(0, good.byteLength - 4));
    r.ws.send('{"t":"req"}');
    r.ws.send(Buffer.from(encodeCbor({ t: 'hello', sid: 1 })));
    r.ws.send(encodeWireMessage({ t: 'res', sid: 3, body: new Uint8Array(0) }));
    r.ws.send(good); // 60 zero bytes: not a sealed request
    r.ws.send(encodeWireMessage({ t: 'req', sid: 8, body: new Uint8Array(3) }));
    await until(() => r.got.length === 7);
    expect(r.got).toEqual([
      { t: 'err', code: 'MALFORMED' },
      { t: 'err', code: 'MALFORMED' },
      { t: 'err', code: 'MALFORMED' },
      { t: 'err', code: 'MALFORMED' },
      { t: 'err', code: 'PROTOCOL_VIOLATION' },
      { t: 'err', sid: 7, code: expect.stringMatching(/^(UNSUPPORTED_SUITE|UNKNOWN_KEY_ID|MALFORMED|DECRYPT_FAILED)$/) as unknown as 'MALFORMED' },
      { t: 'err', sid: 8, code: 'MALFORMED' },
    ]);

    // an operation the protocol does not know, sealed correctly: coded error inside the sealed response
    const c = await client(t);
    const sealed = sealChunkedRequest(
      sealTargetFromKeyConfig(c.keyConfig),
      encodeCbor({ v: 1, op: 'mine-bitcoin', model: 'fake-cls', input: 'x', stream: false, ts: Date.now(), id: new Uint8Array(16).fill(4) }),
    );
    const tr = await WsClientTransport.connect(t.wsUrl);
    open.push(tr);
    const ex = tr.exchange(sealed.bytes);
    const chunks = [];
    // `res` frames carry splits of the sealed byte stream; the last one has `fin`.
    for await (const piece of ex.pieces) chunks.push(...sealed.response.push(piece));
    chunks.push(...sealed.response.finish());
    expect(chunks.map((ch) => ch.final)).toEqual([false, true]);
    const { decodeResponseChunk } = await import('../../src/protocol/messages.js');
    expect(decodeResponseChunk(chunks[0]?.plaintext ?? new Uint8Array(0))).toMatchObject({ t: 'error', code: 'UNKNOWN_OPERATION' });

    // the same connection and other clients keep working
    r.ws.send(encodeWireMessage({ t: 'evidence-req' }));
    await until(() => r.got.length === 8);
    expect(r.got[7]?.t).toBe('evidence');
    expect(await c.classify('fine', { model: 'fake-cls' })).toEqual(fakeClassify('fine'));
  });
});

describe('key rotation', () => {
  it('previous key works in its grace period; a retired key id gets KEY_STALE and the client refetches transparently', async () => {
    const t = await server();
    const c = await client(t);
    const firstKeyId = c.keyConfig.keyId;
    t.server.keys.rotate();
    expect(await c.classify('grace', { model: 'fake-cls' })).toEqual(fakeClassify('grace'));
    expect(c.keyConfig.keyId).toBe(firstKeyId);
    t.server.keys.rotate();
    const staleBefore = t.server.stats.errors.get('KEY_STALE') ?? 0;
    expect(await c.classify('stale', { model: 'fake-cls' })).toEqual(fakeClassify('stale'));
    expect(t.server.stats.errors.get('KEY_STALE')).toBe(staleBefore + 1);
    expect(c.keyConfig.keyId).toBe((firstKeyId + 2) % 256);
    // over HTTP too
    const h = await client(t, t.httpUrl);
    t.server.keys.rotate();
    t.server.keys.rotate();
    expect(await h.classify('http stale', { model: 'fake-cls' })).toEqual(fakeClassify('http stale'));
  });
});
