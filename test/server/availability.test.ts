/**
 * Availability against one unauthenticated network client (issue: hardening, items 1-5):
 * silent connections, trickled heads, slow bodies, the evidence budget per source, the
 * replay window filled with requests that will never be served, and junk sealed requests
 * on one WebSocket. Each test fails on a server without the matching limit.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createConnection } from 'node:net';
import type { Socket } from 'node:net';
import { request as httpRequest } from 'node:http';
import { WebSocket } from 'ws';
import { connect } from '../../src/client/client.js';
import { sealChunkedRequest } from '../../src/protocol/chunked.js';
import { decodeKeyConfig, sealTargetFromKeyConfig } from '../../src/protocol/key-config.js';
import { encodeCbor } from '../../src/core/cbor.js';
import { decodeWireMessage, encodeWireMessage } from '../../src/protocol/wire.js';
import type { ServerLimits } from '../../src/server/options.js';
import { policyFromJson } from '../../src/verifier/policy.js';
import { codeOf, startTestServer, until } from '../e2e/helpers.js';
import type { TestServer } from '../e2e/helpers.js';

const open: { close(): Promise<void> | void }[] = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close();
});

async function server(limits: Partial<ServerLimits>): Promise<TestServer> {
  const t = await startTestServer({ limits });
  open.push(t);
  return t;
}

/** A raw TCP socket to the server that sends `bytes` (or nothing) and reports when it closes. */
async function rawSocket(t: TestServer, bytes?: string): Promise<{ socket: Socket; closed: () => boolean; data: () => string }> {
  const port = t.urls.port ?? 0;
  const socket = createConnection({ host: '127.0.0.1', port });
  let isClosed = false;
  let received = '';
  socket.on('close', () => (isClosed = true));
  socket.on('error', () => undefined);
  socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  if (bytes !== undefined) socket.write(bytes);
  open.push({ close: () => void socket.destroy() });
  return { socket, closed: () => isClosed, data: () => received };
}

async function classifyOnce(t: TestServer, kind: 'ws' | 'http'): Promise<unknown> {
  const c = await connect(kind === 'ws' ? t.wsUrl : t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
  try {
    return await c.classify('chest pain', { model: 'fake-cls' });
  } finally {
    c.close();
  }
}

/** A POST /v1/sealed whose body trickles: headers and `sent` bytes of a declared `length`. */
function slowPost(t: TestServer, length: number, sent = 1): { status: Promise<number>; socketClosed: Promise<void> } {
  const req = httpRequest(`${t.httpUrl}/v1/sealed`, { method: 'POST', headers: { 'content-length': String(length), 'content-type': 'message/ohttp-chunked-req' }, agent: false });
  req.on('error', () => undefined);
  req.write(Buffer.alloc(sent, 1));
  const socketClosed = new Promise<void>((resolve) => req.on('close', () => resolve()));
  const status = new Promise<number>((resolve) => req.on('response', (res) => {
    res.resume();
    resolve(res.statusCode ?? 0);
  }));
  open.push({ close: () => void req.destroy() });
  return { status, socketClosed };
}

async function getStatus(url: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const req = httpRequest(url, { agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

describe('silent and slow connections', () => {
  it('connections that never send a byte are closed after connectionHeadTimeoutMs, and their slots come back', async () => {
    const t = await server({ maxConnections: 4, connectionHeadTimeoutMs: 300 });
    const silent = await Promise.all([1, 2, 3, 4].map(() => rawSocket(t)));
    await until(() => t.server.stats.connectionsOpen === 4);
    await until(() => silent.every((s) => s.closed()), 300);
    expect(t.server.stats.connectionsOpen).toBe(0);
    expect(t.server.stats.errors.get('TIMEOUT')).toBeGreaterThanOrEqual(4);
    expect(await classifyOnce(t, 'ws')).toBeTruthy();
  });

  it('a request head trickled and never finished is closed too (headersTimeout)', async () => {
    const t = await server({ connectionHeadTimeoutMs: 300 });
    const s = await rawSocket(t, 'GET /v1/evid');
    await until(() => s.closed(), 300);
  });

  it('a connection that sent its request head is not closed by the head timeout', async () => {
    const t = await server({ connectionHeadTimeoutMs: 200, keepAliveTimeoutMs: 5_000 });
    const s = await rawSocket(t, 'GET /v1/evidence HTTP/1.1\r\nhost: x\r\n\r\n');
    await until(() => s.data().includes('200 OK'));
    await new Promise((r) => setTimeout(r, 400));
    expect(s.closed()).toBe(false);
  });

  it('maxConnectionsPerSource: one address cannot hold more; connections that spoke are never evicted', async () => {
    const t = await server({ maxConnectionsPerSource: 3, connectionHeadTimeoutMs: 60_000, keepAliveTimeoutMs: 60_000 });
    // Three keep-alive connections that each completed a request: not evictable.
    const held = await Promise.all([1, 2, 3].map(() => rawSocket(t, 'GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n')));
    await until(() => held.every((h) => h.data().includes('200 OK')));
    expect(await getStatus(`${t.httpUrl}/v1/evidence`)).toBe(503);
    expect(t.server.stats.connectionsRejected).toBe(1);
    expect(held.some((h) => h.closed())).toBe(false);
    held[0]?.socket.destroy();
    await until(() => t.server.stats.connectionsOpen === 2);
    expect(await getStatus(`${t.httpUrl}/v1/evidence`)).toBe(200);
  });

  it('silent connections give way: at maxConnectionsPerSource the oldest silent one is closed for a client that speaks', async () => {
    const t = await server({ maxConnectionsPerSource: 4, connectionHeadTimeoutMs: 60_000 });
    const silent: Awaited<ReturnType<typeof rawSocket>>[] = [];
    for (let i = 0; i < 20; i++) silent.push(await rawSocket(t));
    await until(() => t.server.stats.connectionsEvicted === 16);
    await until(() => silent.slice(0, 16).every((s) => s.closed()));
    expect(silent.slice(16).some((s) => s.closed())).toBe(false);
    expect(await classifyOnce(t, 'ws')).toBeTruthy();
    expect(await classifyOnce(t, 'http')).toBeTruthy();
    expect(t.server.stats.connectionsRejected).toBe(0);
  });

  it('at maxConnections a silent connection of any source gives way too', async () => {
    const t = await server({ maxConnections: 3, maxConnectionsPerSource: 64, connectionHeadTimeoutMs: 60_000 });
    for (let i = 0; i < 3; i++) await rawSocket(t);
    await until(() => t.server.stats.connectionsOpen === 3);
    expect(await getStatus(`${t.httpUrl}/v1/evidence`)).toBe(200);
    expect(t.server.stats.connectionsEvicted).toBe(1);
  });
});

describe('slow request bodies', () => {
  it('uploads in progress do not hold the in-flight slots: inference goes on', async () => {
    const t = await server({ maxInFlightTotal: 2, maxUploadsInProgress: 8, maxUploadsPerSource: 8, bodyTimeoutMs: 30_000 });
    slowPost(t, 100_000);
    slowPost(t, 100_000);
    slowPost(t, 100_000);
    await until(() => t.server.stats.uploadsInProgress === 3);
    expect(t.server.stats.inFlight).toBe(0);
    expect(await classifyOnce(t, 'ws')).toBeTruthy();
    expect(await classifyOnce(t, 'http')).toBeTruthy();
  });

  it('maxUploadsInProgress: one more upload is refused 503 at once', async () => {
    const t = await server({ maxUploadsInProgress: 2, maxUploadsPerSource: 8, bodyTimeoutMs: 30_000 });
    slowPost(t, 1000);
    slowPost(t, 1000);
    await until(() => t.server.stats.uploadsInProgress === 2);
    const third = slowPost(t, 1000);
    expect(await third.status).toBe(503);
    await third.socketClosed;
  });

  it('maxUploadsPerSource: one address cannot take every upload slot', async () => {
    const t = await server({ maxUploadsInProgress: 64, maxUploadsPerSource: 2, bodyTimeoutMs: 30_000 });
    slowPost(t, 1000);
    slowPost(t, 1000);
    await until(() => t.server.stats.uploadsInProgress === 2);
    expect(await slowPost(t, 1000).status).toBe(503);
  });

  it('uploadEvictAfterMs: at the per-source cap the oldest slow upload is cut (408) for a client whose body arrives at once', async () => {
    const t = await server({ maxUploadsPerSource: 2, uploadEvictAfterMs: 200, bodyTimeoutMs: 30_000 });
    const slow = [slowPost(t, 1000), slowPost(t, 1000)];
    await until(() => t.server.stats.uploadsInProgress === 2);
    await new Promise((r) => setTimeout(r, 300));
    expect(await classifyOnce(t, 'http')).toBeTruthy();
    expect(await slow[0]?.status).toBe(408);
    expect(t.server.stats.uploadsInProgress).toBe(1);
  });

  it('bodyTimeoutMs: a body that does not arrive in time is answered 408 and its connection closed', async () => {
    const t = await server({ bodyTimeoutMs: 300 });
    const p = slowPost(t, 1000);
    expect(await p.status).toBe(408);
    await p.socketClosed;
    expect(t.server.stats.uploadsInProgress).toBe(0);
    expect(t.server.stats.errors.get('TIMEOUT')).toBe(1);
  });
});

describe('evidence budget', () => {
  const nonce = (i: number): string => Buffer.alloc(32, i).toString('hex');

  it('evidenceRequestsPerMinutePerSource: a new connection per request is still one source', async () => {
    const t = await server({ evidenceRequestsPerMinutePerSource: 3, evidenceRequestsPerMinutePerConnection: 60, evidenceRequestsPerMinute: 600 });
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push(await getStatus(`${t.httpUrl}/v1/evidence?nonce=${nonce(i)}`));
    expect(statuses).toEqual([200, 200, 200, 429, 429]);
    // Evidence without a nonce is cached and never rate-limited.
    expect(await getStatus(`${t.httpUrl}/v1/evidence`)).toBe(200);
  });

  it('a client whose address spent its nonce budget falls back to the cached, timestamped evidence (unless told not to)', async () => {
    const t = await server({ evidenceRequestsPerMinutePerSource: 2 });
    for (let i = 0; i < 2; i++) expect(await getStatus(`${t.httpUrl}/v1/evidence?nonce=${nonce(i)}`)).toBe(200);
    expect(await getStatus(`${t.httpUrl}/v1/evidence?nonce=${nonce(9)}`)).toBe(429);
    for (const url of [t.wsUrl, t.httpUrl]) {
      const c = await connect(url, { policy: t.policy, trustedRoots: t.trustedRoots });
      expect(await c.classify('x', { model: 'fake-cls' })).toBeTruthy();
      await c.close();
      expect(await codeOf(connect(url, { policy: t.policy, trustedRoots: t.trustedRoots, nonceFallback: false }))).toBe('RATE_LIMITED');
      expect(await codeOf(connect(url, { policy: t.policy, trustedRoots: t.trustedRoots, nonce: Buffer.alloc(8, 1) }))).toBe('RATE_LIMITED');
      const strict = policyFromJson({ ...t.policyJson, nonceRequired: true });
      expect(await codeOf(connect(url, { policy: strict, trustedRoots: t.trustedRoots }))).toBe('RATE_LIMITED');
    }
  });

  it('the per-source budget covers WebSocket connections too', async () => {
    const t = await server({ evidenceRequestsPerMinutePerSource: 2 });
    const codes: string[] = [];
    for (let i = 0; i < 3; i++) {
      const ws = new WebSocket(t.wsUrl);
      await new Promise<void>((resolve) => ws.once('open', () => resolve()));
      ws.send(encodeWireMessage({ t: 'evidence-req', nonce: Buffer.alloc(32, i) }));
      const reply = await new Promise<Buffer>((resolve) => ws.once('message', (d: Buffer) => resolve(d)));
      const msg = decodeWireMessage(new Uint8Array(reply));
      codes.push(msg.t === 'err' ? msg.code : msg.t);
      ws.close();
    }
    expect(codes).toEqual(['evidence', 'evidence', 'RATE_LIMITED']);
  });

  it('cached evidence without a nonce is attested anew after evidenceRefreshMs', async () => {
    let now = Date.now();
    const t = await startTestServer({ limits: { evidenceRefreshMs: 30_000 }, now: () => now });
    open.push(t);
    let attestations = 0;
    const attest = t.attester.attest.bind(t.attester);
    (t.attester as { attest: typeof attest }).attest = (r) => {
      attestations++;
      return attest(r);
    };
    // The server attests once when it starts listening (for /readyz), possibly before the spy.
    for (let i = 0; i < 3; i++) expect(await getStatus(`${t.httpUrl}/v1/evidence`)).toBe(200);
    const first = attestations;
    expect(first).toBeLessThanOrEqual(1);
    now += 29_999;
    expect(await getStatus(`${t.httpUrl}/v1/evidence`)).toBe(200);
    expect(attestations).toBe(first);
    now += 1;
    expect(await getStatus(`${t.httpUrl}/v1/evidence`)).toBe(200);
    expect(await getStatus(`${t.httpUrl}/v1/evidence`)).toBe(200);
    expect(attestations).toBe(first + 1);
  });
});

describe('replay window and junk requests', () => {
  function sealedFor(kc: Uint8Array, model: string, idByte: number): Uint8Array {
    return sealChunkedRequest(
      sealTargetFromKeyConfig(decodeKeyConfig(kc)),
      encodeCbor({ v: 1, op: 'classify', model, input: 'x', stream: false, ts: Date.now(), id: new Uint8Array(16).fill(idByte) }),
    ).bytes;
  }

  it('requests for a model that does not exist do not fill the replay window', async () => {
    const t = await server({ maxReplayEntries: 2 });
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
    open.push({ close: () => c.close() });
    const kc = t.server.keys.current().keyConfig;
    const ws = new WebSocket(t.wsUrl);
    open.push({ close: () => ws.close() });
    await new Promise<void>((resolve) => ws.once('open', () => resolve()));
    let answered = 0;
    ws.on('message', () => answered++);
    for (let i = 0; i < 5; i++) ws.send(encodeWireMessage({ t: 'req', sid: i + 1, body: sealedFor(kc, 'no-such-model', i + 1) }));
    await until(() => answered >= 5);
    expect(await c.classify('x', { model: 'fake-cls' })).toBeTruthy();
    expect(await c.classify('y', { model: 'fake-cls' })).toBeTruthy();
  });

  it('junk sealed requests count as bad frames: past maxBadFramesPerConnection the WebSocket is closed (1008)', async () => {
    const t = await server({ maxBadFramesPerConnection: 3 });
    const kc = t.server.keys.current().keyConfig;
    const ws = new WebSocket(t.wsUrl);
    open.push({ close: () => ws.close() });
    await new Promise<void>((resolve) => ws.once('open', () => resolve()));
    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
    for (let i = 0; i < 5; i++) {
      const body = sealedFor(kc, 'fake-cls', 100 + i);
      body[body.length - 1] = (body[body.length - 1] ?? 0) ^ 1; // AEAD tag broken: DECRYPT_FAILED after an X25519
      ws.send(encodeWireMessage({ t: 'req', sid: i + 1, body }));
    }
    expect(await closed).toBe(1008);
    expect(t.server.stats.errors.get('LIMIT_EXCEEDED')).toBe(1);
  });
});
