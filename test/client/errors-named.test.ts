/**
 * Errors that name their cause (issue 11, section 5; issue 17, items 9 and 13), client side,
 * against the real server and loopback fakes that speak real HTTP:
 * - a request over the server's frame / body limit is LIMIT_EXCEEDED naming the limit and its
 *   value (over WebSocket it is refused before sending, and the connection stays usable);
 * - every way of not reaching a server is CONNECTION_FAILED naming host:port and the reason;
 * - the HTTP client does not follow redirects;
 * - a result over 1 MiB arrives whole (the client's chunk limit is the server's), and one
 *   over that limit is refused by the server by name.
 */
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { createServer as createTcpServer } from 'node:net';
import type { AddressInfo, Server as TcpServer, Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import { reasonOf } from '../../src/client/connection-error.js';
import { MAX_RESPONSE_CHUNK_LENGTH } from '../../src/protocol/chunked.js';
import { WsClientTransport } from '../../src/client/ws-transport.js';
import { sealChunkedRequest } from '../../src/protocol/chunked.js';
import { sealTargetFromKeyConfig } from '../../src/protocol/key-config.js';
import { decodeResponseChunk, encodeSealedRequest } from '../../src/protocol/messages.js';
import { codeOfAsync } from '../helpers/errors.js';
import { startTestServer } from '../helpers/test-server.js';
import { until } from '../helpers/until.js';
import type { TestServer } from '../helpers/test-server.js';

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close().catch(() => undefined);
});

async function server(limits: Record<string, number> = {}): Promise<TestServer> {
  const t = await startTestServer({ limits });
  open.push(t);
  return t;
}

async function failure(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (err) {
    return { code: String((err as { code?: unknown }).code), message: (err as Error).message };
  }
  throw new Error('no error');
}

function listenHttp(handler: Parameters<typeof createServer>[1]): Promise<{ port: number; server: Server }> {
  const s = createServer(handler);
  return new Promise((resolve) => {
    s.listen(0, '127.0.0.1', () => {
      open.push({ close: () => new Promise<void>((r) => { s.closeAllConnections(); s.close(() => r()); }) });
      resolve({ port: (s.address() as AddressInfo).port, server: s });
    });
  });
}

/** A loopback port with nothing listening (bound, then closed). */
async function closedPort(): Promise<number> {
  const s = createTcpServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('LIMIT_EXCEEDED names the limit and its value', () => {
  it('WebSocket: an input over the server maxFrameBytes (default 1 MiB) is refused before sending; the connection stays usable', async () => {
    const t = await server();
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
    open.push(c);
    const before = t.server.stats.framesRejected;
    const e = await failure(c.classify('a'.repeat(1_100_000)));
    expect(e.code).toBe('LIMIT_EXCEEDED');
    expect(e.message).toContain("the server's maxFrameBytes (1048576 bytes)");
    expect(t.server.stats.framesRejected).toBe(before);
    expect(await c.classify('still connected')).toHaveLength(2);
  });

  it('WebSocket: a request over the server maxInFlightPerConnection names it and its value', async () => {
    const t = await server({ maxInFlightPerConnection: 2 });
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
    open.push(c);
    const controller = new AbortController();
    const blocked = [0, 1].map(() =>
      codeOfAsync(async () => {
        for await (const r of c.request({ op: 'generate', model: 'fake-gen', input: 'block', signal: controller.signal })) void r;
      }),
    );
    await until(() => t.engine.controls.running === 2);
    const e = await failure(c.classify('one too many'));
    controller.abort();
    expect(await Promise.all(blocked)).toEqual(['CANCELLED', 'CANCELLED']);
    expect(e.code).toBe('LIMIT_EXCEEDED');
    expect(e.message).toContain('maxInFlightPerConnection (2)');
  });

  it('HTTP: a body over the server maxRequestBytes names it and its value', async () => {
    const t = await server({ maxRequestBytes: 65_536 });
    const c = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
    open.push(c);
    const e = await failure(c.classify('a'.repeat(70_000)));
    expect(e.code).toBe('LIMIT_EXCEEDED');
    expect(e.message).toContain("the server's maxRequestBytes (65536 bytes)");
  });
});

describe('one CONNECTION_FAILED for every way of not reaching the server, naming host:port and the reason', () => {
  for (const scheme of ['ws', 'http'] as const) {
    it(`${scheme}: connection refused`, async () => {
      const port = await closedPort();
      const t = await server();
      const e2 = await failure(connect(`${scheme}://127.0.0.1:${port}/`, { policy: t.policy, trustedRoots: t.trustedRoots }));
      expect(e2.code).toBe('CONNECTION_FAILED');
      expect(e2.message).toContain(`127.0.0.1:${port}`);
      expect(e2.message).toContain('connection refused');
    });

    it(`${scheme}: TLS spoken to a plain port`, async () => {
      const t = await server();
      const url = `${scheme === 'ws' ? 'wss' : 'https'}://127.0.0.1:${t.urls.port ?? 0}/`;
      const e = await failure(connect(url, { policy: t.policy, trustedRoots: t.trustedRoots }));
      expect(e.code).toBe('CONNECTION_FAILED');
      expect(e.message).toContain(`127.0.0.1:${t.urls.port ?? 0}`);
      expect(e.message).toMatch(/TLS/);
    });

    it(`${scheme}: a web server that is not Cloister (404)`, async () => {
      const { port } = await listenHttp((_req, res) => {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('not found');
      });
      const t = await server();
      const e = await failure(connect(`${scheme}://127.0.0.1:${port}/`, { policy: t.policy, trustedRoots: t.trustedRoots }));
      expect(e.code).toBe('CONNECTION_FAILED');
      expect(e.message).toContain(`127.0.0.1:${port}`);
      expect(e.message).toContain('returned HTTP 404: is this a Cloister server?');
      if (scheme === 'http') expect(e.message).toContain('GET /v1/evidence');
    });

    it(`${scheme}: a server that accepts and never answers times out (connectTimeoutMs)`, async () => {
      const sockets: Socket[] = [];
      const silent: TcpServer = createTcpServer((s) => void sockets.push(s));
      await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
      open.push({ close: () => new Promise<void>((r) => { for (const s of sockets) s.destroy(); silent.close(() => r()); }) });
      const port = (silent.address() as AddressInfo).port;
      const t = await server();
      const e = await failure(connect(`${scheme}://127.0.0.1:${port}/`, { policy: t.policy, trustedRoots: t.trustedRoots, transport: { connectTimeoutMs: 300 } }));
      expect(e.code).toBe('CONNECTION_FAILED');
      expect(e.message).toContain(`127.0.0.1:${port}`);
      expect(e.message).toMatch(/timed out/);
    });
  }

  it('reason words for DNS and reset errors (no DNS lookups from tests)', () => {
    expect(reasonOf(Object.assign(new Error('getaddrinfo ENOTFOUND nosuch'), { code: 'ENOTFOUND' }))).toMatch(/DNS lookup failed/);
    expect(reasonOf(new TypeError('fetch failed', { cause: Object.assign(new Error('x'), { code: 'ECONNRESET' }) }))).toMatch(/connection reset/);
  });
});

describe('input the server refuses', () => {
  it('invalid UTF-8 inside a sealed request is refused by the server (MALFORMED), never classified', async () => {
    const t = await server();
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
    open.push(c);
    const tr = await WsClientTransport.connect(t.wsUrl);
    open.push(tr);
    const pt = encodeSealedRequest({ v: 1, op: 'classify', model: 'fake-cls', input: 'ZZZZ', stream: false, ts: Date.now(), id: new Uint8Array(16).fill(9) });
    const at = Buffer.from(pt).indexOf('ZZZZ');
    expect(at).toBeGreaterThan(0);
    pt[at + 1] = 0xff; // not UTF-8
    const sealed = sealChunkedRequest(sealTargetFromKeyConfig(c.keyConfig), pt);
    const opened: unknown[] = [];
    for await (const piece of tr.exchange(sealed.bytes).pieces) {
      for (const chunk of sealed.response.push(piece)) opened.push(decodeResponseChunk(chunk.plaintext));
    }
    expect(opened[0]).toMatchObject({ t: 'error', code: 'MALFORMED' });
    expect(t.engine.controls.running).toBe(0);
    expect(t.server.stats.requestsCompleted).toBe(0);
  });
});

describe('redirects', () => {
  it('the HTTP client does not follow a 307 from the network', async () => {
    let hits = 0;
    const target = await listenHttp((_req, res) => {
      hits++;
      res.writeHead(200);
      res.end();
    });
    const { port } = await listenHttp((_req, res) => {
      res.writeHead(307, { location: `http://127.0.0.1:${target.port}/v1/evidence` });
      res.end();
    });
    const t = await server();
    const e = await failure(connect(`http://127.0.0.1:${port}`, { policy: t.policy, trustedRoots: t.trustedRoots }));
    expect(e.code).toBe('CONNECTION_FAILED');
    expect(e.message).toContain('redirect');
    expect(hits).toBe(0);
  });
});

describe('one response chunk limit on both sides', () => {
  for (const scheme of ['ws', 'http'] as const) {
    it(`${scheme}: a result over 1 MiB arrives whole`, async () => {
      const t = await server();
      const c = await connect(scheme === 'ws' ? t.wsUrl : t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
      open.push(c);
      const out: unknown[] = [];
      for await (const r of c.request({ op: 'generate', model: 'fake-gen', input: 'x', params: { n: 1, size: 1_300_000 } })) out.push(r);
      expect(out).toHaveLength(1);
      expect((out[0] as { text: string }).text).toHaveLength(1_300_000);
    });
  }

  it('a result over the limit is refused by the server, by name (sealed LIMIT_EXCEEDED)', async () => {
    const t = await server();
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
    open.push(c);
    const e = await failure(
      (async () => {
        for await (const r of c.request({ op: 'generate', model: 'fake-gen', input: 'x', params: { n: 1, size: MAX_RESPONSE_CHUNK_LENGTH } })) void r;
      })(),
    );
    expect(e.code).toBe('LIMIT_EXCEEDED');
    expect(e.message).toContain(`MAX_RESPONSE_CHUNK_LENGTH = ${MAX_RESPONSE_CHUNK_LENGTH} bytes`);
  });
});
