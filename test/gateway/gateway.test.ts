/**
 * Gateway HTTP behaviour against a test-only fake of the sealed client: routing, limits,
 * Host / Content-Type / API key checks, SSE framing, truncation and cancel.
 */
import { request as httpRequest } from 'node:http';
import { connect as netConnect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { CloisterError } from '../../src/errors.js';
import { parseListen, startGateway } from '../../src/client/gateway/index.js';
import type { Gateway, GatewayOptions } from '../../src/client/gateway/index.js';
import type { SealedRequestInput, SealedRequester } from '../../src/client/openai/index.js';
import { until } from '../helpers/until.js';

/** Fake sealed client: yields the scripted results, records requests, can hold on a gate. */
class FakeSealed implements SealedRequester {
  readonly requests: SealedRequestInput[] = [];
  aborted = 0;
  script: (req: SealedRequestInput) => AsyncGenerator<unknown>;

  constructor(script: (req: SealedRequestInput) => AsyncGenerator<unknown>) {
    this.script = script;
  }

  request(req: SealedRequestInput): AsyncIterable<unknown> {
    this.requests.push(req);
    req.signal?.addEventListener('abort', () => this.aborted++, { once: true });
    return this.script(req);
  }

  models(): readonly { name: string; task: string }[] {
    return [{ name: 'llm', task: 'text-generation' }, { name: 'cls', task: 'text-classification' }];
  }
}

const gateways: Gateway[] = [];
afterEach(async () => {
  for (const g of gateways.splice(0)) await g.close();
});

async function gw(fake: SealedRequester, options: Partial<GatewayOptions> = {}): Promise<Gateway> {
  const g = await startGateway({ client: fake, ...options });
  gateways.push(g);
  return g;
}

interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function raw(g: Gateway, method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${g.url}${path}`, { method, headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

const chatBody = (extra: Record<string, unknown> = {}): string => JSON.stringify({ model: 'llm', messages: [{ role: 'user', content: 'secret' }], ...extra });

async function* once(value: unknown): AsyncGenerator<unknown> {
  yield value;
}

describe('gateway configuration', () => {
  it('refuses to bind a non-loopback interface unless allowed', async () => {
    const fake = new FakeSealed(() => once({}));
    await expect(startGateway({ client: fake, host: '0.0.0.0' })).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    // Off loopback, never without an API key.
    await expect(startGateway({ client: fake, host: '0.0.0.0', allowNonLoopback: true })).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringMatching(/API key/) as unknown });
    const g = await gw(fake, { host: '0.0.0.0', allowNonLoopback: true, apiKey: 'k' });
    expect(g.port).toBeGreaterThan(0);
    await expect(startGateway({ client: fake, allowOrigins: ['http://localhost:3000/'] })).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    await expect(startGateway({ client: fake, allowOrigins: ['*'] })).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    await expect(startGateway({ client: fake, port: 70000 })).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    await expect(startGateway({ client: fake, maxRequestBytes: 0 })).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
  });

  it('parses --listen values', () => {
    expect(parseListen('127.0.0.1:8080')).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(parseListen('[::1]:9')).toEqual({ host: '::1', port: 9 });
    expect(parseListen(':0')).toEqual({ host: '127.0.0.1', port: 0 });
    expect(parseListen('localhost:1')).toEqual({ host: 'localhost', port: 1 });
    for (const bad of ['127.0.0.1', '127.0.0.1:99999', 'x:y', '::1:80']) expect(() => parseListen(bad)).toThrow(CloisterError);
  });
});

describe('gateway requests', () => {
  it('forwards a non-streamed chat as one sealed request and returns its one result', async () => {
    const fake = new FakeSealed(() => once({ id: 'c', object: 'chat.completion', choices: [] }));
    const g = await gw(fake);
    const res = await raw(g, 'POST', '/v1/chat/completions', chatBody());
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ id: 'c', object: 'chat.completion', choices: [] });
    expect(fake.requests).toHaveLength(1);
    expect(fake.requests[0]).toMatchObject({ op: 'chat', model: 'llm', stream: false, input: { model: 'llm', messages: [{ role: 'user', content: 'secret' }] } });
  });

  it('maps each endpoint to its operation; pins the model when told to', async () => {
    const fake = new FakeSealed(() => once({ ok: true }));
    const g = await gw(fake, { model: 'llm' });
    await raw(g, 'POST', '/v1/completions', JSON.stringify({ model: 'gpt-4o', prompt: 'x' }));
    await raw(g, 'POST', '/v1/embeddings', JSON.stringify({ input: 'x' }));
    await raw(g, 'GET', '/v1/models');
    expect(fake.requests.map((r) => [r.op, r.model])).toEqual([['completion', 'llm'], ['embeddings', 'llm'], ['models', 'llm']]);
    expect(fake.requests[0]?.input).toMatchObject({ model: 'llm' });
  });

  it('answers GET /v1/models from the verified key config when no model is pinned', async () => {
    const fake = new FakeSealed(() => once({}));
    const g = await gw(fake);
    const res = await raw(g, 'GET', '/v1/models?x=1');
    expect(JSON.parse(res.body)).toEqual({
      object: 'list',
      data: [
        { id: 'llm', object: 'model', owned_by: 'cloister', task: 'text-generation' },
        { id: 'cls', object: 'model', owned_by: 'cloister', task: 'text-classification' },
      ],
    });
    expect(fake.requests).toHaveLength(0);
  });

  it('streams SSE: one event per chunk, [DONE] after a complete sealed stream', async () => {
    const fake = new FakeSealed(async function* () {
      yield { n: 1 };
      yield { n: 2, text: 'a\nb' };
    });
    const g = await gw(fake);
    const res = await raw(g, 'POST', '/v1/chat/completions', chatBody({ stream: true }));
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
    expect(res.body).toBe('data: {"n":1}\n\ndata: {"n":2,"text":"a\\nb"}\n\ndata: [DONE]\n\n');
    expect(fake.requests[0]?.stream).toBe(true);
  });

  it('flushes each event at once (the next chunk does not exist yet)', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const fake = new FakeSealed(async function* () {
      yield { n: 1 };
      await gate;
      yield { n: 2 };
    });
    const g = await gw(fake);
    const res = await fetch(`${g.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: chatBody({ stream: true }) });
    const reader = res.body?.getReader();
    const first = await reader?.read();
    expect(new TextDecoder().decode(first?.value)).toBe('data: {"n":1}\n\n');
    release();
    let rest = '';
    for (;;) {
      const step = await reader?.read();
      if (step === undefined || step.done) break;
      rest += new TextDecoder().decode(step.value);
    }
    expect(rest).toBe('data: {"n":2}\n\ndata: [DONE]\n\n');
  });

  it('a truncated sealed stream ends with an error event and no [DONE]', async () => {
    const fake = new FakeSealed(async function* () {
      yield { n: 1 };
      throw new CloisterError('STREAM_TRUNCATED');
    });
    const g = await gw(fake);
    const res = await raw(g, 'POST', '/v1/completions', JSON.stringify({ model: 'llm', prompt: 'x', stream: true }));
    expect(res.status).toBe(200);
    expect(res.body).toBe(`data: {"n":1}\n\nevent: error\ndata: ${JSON.stringify({ error: { message: new CloisterError('STREAM_TRUNCATED').message, type: 'cloister_error', code: 'STREAM_TRUNCATED', param: null } })}\n\n`);
    expect(res.body).not.toContain('[DONE]');
  });

  it('a failure before the first chunk is a plain HTTP error with the code', async () => {
    const cases: [string, number][] = [['UNKNOWN_MODEL', 404], ['ENGINE_UNAVAILABLE', 503], ['TIMEOUT', 504], ['ENGINE_FAILED', 502], ['POLICY_MISMATCH', 502], ['RATE_LIMITED', 429]];
    for (const [code, status] of cases) {
      // eslint-disable-next-line require-yield
      const fake = new FakeSealed(async function* () {
        throw new CloisterError(code as 'TIMEOUT');
      });
      const g = await gw(fake);
      const res = await raw(g, 'POST', '/v1/chat/completions', chatBody({ stream: true }));
      expect(res.status).toBe(status);
      expect(JSON.parse(res.body)).toMatchObject({ error: { code, type: 'cloister_error' } });
    }
  });

  it('a non-streamed answer must be exactly one result', async () => {
    const two = new FakeSealed(async function* () {
      yield {};
      yield {};
    });
    const g = await gw(two);
    expect((await raw(g, 'POST', '/v1/embeddings', JSON.stringify({ model: 'llm', input: 'x' }))).status).toBe(502);
    // eslint-disable-next-line require-yield
    const none = new FakeSealed(async function* () {
      return;
    });
    const g2 = await gw(none);
    const res = await raw(g2, 'POST', '/v1/embeddings', JSON.stringify({ model: 'llm', input: 'x' }));
    expect(JSON.parse(res.body)).toMatchObject({ error: { code: 'PROTOCOL_VIOLATION' } });
  });

  it('the application hanging up aborts the sealed request', async () => {
    let started: () => void = () => undefined;
    const begun = new Promise<void>((r) => {
      started = r;
    });
    const fake = new FakeSealed(async function* (req) {
      yield { n: 1 };
      started();
      await new Promise<void>((resolve) => req.signal?.addEventListener('abort', () => resolve(), { once: true }));
      throw new CloisterError('CANCELLED');
    });
    const g = await gw(fake);
    const ac = new AbortController();
    const res = await fetch(`${g.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: chatBody({ stream: true }), signal: ac.signal });
    await res.body?.getReader().read();
    await begun;
    ac.abort();
    await until(() => fake.aborted > 0, 500, 5, 'the sealed request aborted');
    expect(fake.aborted).toBe(1);
  });
});

describe('gateway guards', () => {
  const fake = new FakeSealed(() => once({}));

  it('bounds request bodies (declared and streamed)', async () => {
    const g = await gw(fake, { maxRequestBytes: 100 });
    const big = chatBody({ pad: 'x'.repeat(200) });
    const res = await raw(g, 'POST', '/v1/chat/completions', big);
    expect(res.status).toBe(413);
    expect(JSON.parse(res.body)).toMatchObject({ error: { code: 'LIMIT_EXCEEDED' } });
    expect((JSON.parse(res.body) as { error: { message: string } }).error.message).toContain('maxRequestBytes (100 bytes');
    const chunked = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(`${g.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } }, (r) => {
        r.resume();
        resolve(r.statusCode ?? 0);
      });
      req.on('error', reject);
      for (let i = 0; i < 10; i++) req.write('x'.repeat(50));
      req.end();
    });
    expect(chunked).toBe(413);
    const fits = await raw(g, 'POST', '/v1/chat/completions', chatBody());
    expect(fits.status).toBe(200);
  });

  it('rejects non-JSON content types, bad JSON and non-object bodies', async () => {
    const g = await gw(fake);
    expect((await raw(g, 'POST', '/v1/chat/completions', chatBody(), { 'content-type': 'text/plain' })).status).toBe(415);
    const bad = await raw(g, 'POST', '/v1/chat/completions', '{"model":"canary-7c1d');
    expect(bad.status).toBe(400);
    // The parser's own message quotes the input; the answer must not echo it.
    expect(bad.body).not.toContain('canary-7c1d');
    expect((await raw(g, 'POST', '/v1/chat/completions', '[1,2]')).status).toBe(400);
    expect((await raw(g, 'POST', '/v1/chat/completions', '{"messages":[]}')).status).toBe(400); // no model
  });

  it('rejects unknown paths and wrong methods', async () => {
    const g = await gw(fake);
    expect((await raw(g, 'GET', '/v1/secret')).status).toBe(404);
    const wrong = await raw(g, 'GET', '/v1/chat/completions');
    expect(wrong.status).toBe(405);
    expect(wrong.headers['allow']).toBe('POST');
    // A CORS preflight is refused outright (issue 17 item 12), not answered 405.
    expect((await raw(g, 'OPTIONS', '/v1/chat/completions')).status).toBe(403);
  });

  it('rejects a non-loopback Host header (DNS rebinding)', async () => {
    const g = await gw(fake);
    expect((await raw(g, 'POST', '/v1/chat/completions', chatBody(), { host: 'evil.example:80' })).status).toBe(421);
    expect((await raw(g, 'POST', '/v1/chat/completions', chatBody(), { host: `localhost:${g.port}` })).status).toBe(200);
  });

  it('bounds concurrent connections (maxConnections)', async () => {
    const g = await gw(fake, { maxConnections: 1 });
    const holder = netConnect(g.port, '127.0.0.1');
    await new Promise<void>((resolve) => holder.once('connect', () => resolve()));
    // Wait until the server has counted the held connection: the next one must be refused.
    let refused = false;
    for (let i = 0; i < 50 && !refused; i++) {
      refused = await raw(g, 'GET', '/v1/models').then(() => false, () => true);
    }
    expect(refused).toBe(true);
    holder.destroy();
  });

  it('requires the API key when one is set', async () => {
    const g = await gw(fake, { apiKey: 'k-123' });
    expect((await raw(g, 'POST', '/v1/chat/completions', chatBody())).status).toBe(401);
    expect((await raw(g, 'POST', '/v1/chat/completions', chatBody(), { authorization: 'Bearer k-124' })).status).toBe(401);
    expect((await raw(g, 'POST', '/v1/chat/completions', chatBody(), { authorization: 'Bearer k-123' })).status).toBe(200);
  });
});

describe('browser requests (issue 17 item 12)', () => {
  const fake = new FakeSealed(() => once({ id: 'x' }));
  const code = (r: RawResponse): unknown => (JSON.parse(r.body) as { error: { code: string } }).error.code;

  it('refuses a foreign Origin, Origin null and Sec-Fetch-Site: cross-site with 403 FORBIDDEN, before anything is sealed', async () => {
    const g = await gw(fake);
    const before = fake.requests.length;
    for (const origin of ['https://evil.example', 'http://localhost:3000', 'null', `http://127.0.0.1:${g.port + 1}`]) {
      const r = await raw(g, 'POST', '/v1/chat/completions', chatBody(), { origin });
      expect(r.status).toBe(403);
      expect(code(r)).toBe('FORBIDDEN');
      expect(r.headers['access-control-allow-origin']).toBeUndefined();
    }
    // A cross-site request without an Origin (a GET from a foreign page).
    const cross = await raw(g, 'GET', '/v1/models', undefined, { 'sec-fetch-site': 'cross-site' });
    expect(cross.status).toBe(403);
    expect(code(cross)).toBe('FORBIDDEN');
    expect(fake.requests.length).toBe(before);
  });

  it('answers OPTIONS (a CORS preflight) with 403, whatever the origin', async () => {
    const g = await gw(fake);
    for (const headers of [{}, { origin: 'https://evil.example', 'access-control-request-method': 'POST' }, { origin: `http://127.0.0.1:${g.port}` }]) {
      const r = await raw(g, 'OPTIONS', '/v1/chat/completions', undefined, headers);
      expect(r.status).toBe(403);
      expect(r.headers['access-control-allow-origin']).toBeUndefined();
    }
  });

  it('serves requests without an Origin, from its own loopback origin, and same-origin / same-site / none fetches', async () => {
    const g = await gw(fake);
    expect((await raw(g, 'POST', '/v1/chat/completions', chatBody())).status).toBe(200);
    for (const origin of [`http://127.0.0.1:${g.port}`, `http://localhost:${g.port}`]) {
      expect((await raw(g, 'POST', '/v1/chat/completions', chatBody(), { origin, 'sec-fetch-site': 'same-origin' })).status).toBe(200);
    }
    for (const site of ['same-origin', 'same-site', 'none']) {
      expect((await raw(g, 'GET', '/v1/models', undefined, { 'sec-fetch-site': site })).status).toBe(200);
    }
  });

  it('an --allow-origin origin gets CORS answers, its preflight included; others still get 403', async () => {
    const g = await gw(fake, { allowOrigins: ['http://localhost:3000'], apiKey: 'k-1' });
    const pre = await raw(g, 'OPTIONS', '/v1/chat/completions', undefined, { origin: 'http://localhost:3000', 'access-control-request-method': 'POST' });
    expect(pre.status).toBe(204);
    expect(pre.headers['access-control-allow-origin']).toBe('http://localhost:3000');
    expect(String(pre.headers['access-control-allow-headers'])).toMatch(/authorization/);
    const ok = await raw(g, 'POST', '/v1/chat/completions', chatBody(), { origin: 'http://localhost:3000', 'sec-fetch-site': 'cross-site', authorization: 'Bearer k-1' });
    expect(ok.status).toBe(200);
    expect(ok.headers['access-control-allow-origin']).toBe('http://localhost:3000');
    // The key is still required from an allowed origin.
    expect((await raw(g, 'POST', '/v1/chat/completions', chatBody(), { origin: 'http://localhost:3000' })).status).toBe(401);
    // A foreign origin is refused before the key is looked at (even with the right key).
    const foreign = await raw(g, 'POST', '/v1/chat/completions', chatBody(), { origin: 'http://localhost:3001', authorization: 'Bearer k-1' });
    expect(foreign.status).toBe(403);
    expect((await raw(g, 'OPTIONS', '/v1/chat/completions', undefined, { origin: 'http://localhost:3001' })).status).toBe(403);
  });

  it('a missing or wrong key is 401 UNAUTHORIZED with WWW-Authenticate: Bearer', async () => {
    const g = await gw(fake, { apiKey: 'k-2' });
    for (const authorization of [undefined, 'Bearer k-3', 'Basic k-2', 'Bearer  k-2', 'Bearer k-22', 'Bearer']) {
      const r = await raw(g, 'GET', '/v1/models', undefined, authorization === undefined ? {} : { authorization });
      expect(r.status).toBe(401);
      expect(code(r)).toBe('UNAUTHORIZED');
      expect(r.headers['www-authenticate']).toBe('Bearer');
    }
    expect((await raw(g, 'GET', '/v1/models', undefined, { authorization: 'Bearer k-2' })).status).toBe(200);
    // The scheme is case-insensitive (RFC 9110 section 11.1).
    expect((await raw(g, 'GET', '/v1/models', undefined, { authorization: 'bearer k-2' })).status).toBe(200);
  });
});
