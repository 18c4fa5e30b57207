import { afterEach, describe, expect, it } from 'vitest';
import { createServer, request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { generateKeyPairSync } from 'node:crypto';
import { WebSocket } from 'ws';
import { connect } from '../../src/client/client.js';
import type { CloisterClient } from '../../src/client/client.js';
import { createSimulatedAttester } from '../../src/attester/simulated/index.js';
import type { Attester } from '../../src/core/types.js';
import { issueCertificate, derToPem } from '../../src/attester/simulated/issue-certificate.js';
import { CloisterServer, serverConfigDigest } from '../../src/server/server.js';
import { decodeWireMessage, encodeWireMessage } from '../../src/protocol/wire.js';
import type { Engine, EngineRequest, ModelInfo } from '../../src/inference/types.js';
import { parseExposition, sampleValue } from '../helpers/prometheus.js';
import { codeOf, FakeEngine, startTestServer, until } from '../e2e/helpers.js';
import type { TestServer } from '../e2e/helpers.js';

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close().catch(() => undefined);
});

interface Reply {
  readonly status: number;
  readonly type: string;
  readonly body: string;
}

function get(url: string, method = 'GET'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function server(): Promise<TestServer> {
  const t = await startTestServer();
  open.push(t);
  return t;
}

async function client(t: TestServer): Promise<CloisterClient> {
  const c = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
  open.push(c);
  return c;
}

/** An attester that answers only once `release()` was called (readiness before evidence). */
function gatedAttester(inner: Attester): { attester: Attester; release(): void } {
  let release = (): void => undefined;
  const gate = new Promise<void>((r) => (release = r));
  return {
    attester: { platform: inner.platform, simulated: inner.simulated, attest: async (req) => { await gate; return inner.attest(req); } },
    release: () => release(),
  };
}

/** An engine whose `classify` answers only when the test says so. */
class GatedEngine implements Engine {
  readonly kind = 'gated';
  private waiters: (() => void)[] = [];
  running = 0;
  models(): readonly ModelInfo[] {
    return [{ name: 'slow', task: 'text-classification', operations: ['classify'], digest: new Uint8Array(32).fill(7) }];
  }
  async start(): Promise<void> {}
  async close(): Promise<void> {}
  release(): void {
    for (const w of this.waiters.splice(0)) w();
  }
  async *run(request: EngineRequest): AsyncGenerator<unknown> {
    expect(request.op).toBe('classify');
    this.running++;
    try {
      await new Promise<void>((r) => this.waiters.push(r));
      yield [{ label: 'done', score: 1 }];
    } finally {
      this.running--;
    }
  }
}

async function gatedServer(engine: Engine, tls?: { cert: string; key: string }): Promise<TestServer & { release(): void }> {
  const engines = [engine];
  const models = [...engine.models()];
  const configDigest = serverConfigDigest({ engines, platform: 'simulated' });
  const sim = await createSimulatedAttester({ measurements: { configDigest, modelDigests: models.map((m) => m.digest) } });
  const g = gatedAttester(sim);
  const s = new CloisterServer({ engines, attester: g.attester, ...(tls === undefined ? {} : { tls }) });
  const urls = await s.listen({ host: '127.0.0.1', port: 0 });
  const { developmentPolicy } = await import('../../src/client/dev-policy.js');
  const { policyFromJson } = await import('../../src/verifier/policy.js');
  const policyJson = developmentPolicy({ pcrs: sim.policySection().pcrs, rootSha256Hex: sim.rootSha256Hex, models });
  const t = {
    server: s, urls, wsUrl: urls.wsUrl, httpUrl: urls.httpUrl ?? '', attester: sim, policy: policyFromJson(policyJson), policyJson,
    trustedRoots: { simulated: [sim.rootPem] }, engine: new FakeEngine(), close: () => s.close(), release: g.release,
  };
  open.push(t);
  return t;
}

describe('GET /healthz', () => {
  it('answers 200 ok in plain text; other methods 405', async () => {
    const t = await server();
    expect(await get(`${t.httpUrl}/healthz`)).toEqual({ status: 200, type: 'text/plain; charset=utf-8', body: 'ok\n' });
    expect((await get(`${t.httpUrl}/healthz`, 'POST')).status).toBe(405);
    expect((await get(`${t.httpUrl}/healthz`, 'HEAD')).body).toBe('');
  });
});

describe('GET /readyz', () => {
  it('is 503 until evidence for the current key generation exists, then 200', async () => {
    const t = await gatedServer(new GatedEngine());
    const before = await get(`${t.httpUrl}/readyz`);
    expect(before.status).toBe(503);
    expect(before.type).toBe('application/json');
    expect(JSON.parse(before.body)).toEqual({ status: 'not-ready', checks: { engines: true, evidence: false, draining: false } });
    expect((await get(`${t.httpUrl}/healthz`)).status).toBe(200);
    t.release();
    let ready: Reply | undefined;
    for (let i = 0; i < 200 && ready?.status !== 200; i++) {
      ready = await get(`${t.httpUrl}/readyz`);
      if (ready.status !== 200) await new Promise((r) => setTimeout(r, 10));
    }
    expect(ready?.status).toBe(200);
    expect(JSON.parse(ready?.body ?? '')).toEqual({ status: 'ready', checks: { engines: true, evidence: true, draining: false } });
  });
});

describe('GET /metrics', () => {
  it('is Prometheus text with requests by op and code, a latency histogram, queue depth, key generation, uptime, and no content', async () => {
    const t = await server();
    const c = await client(t);
    const secret = 'chest pain radiating to the left arm';
    await c.classify(secret, { model: 'fake-cls' });
    await c.classify(`${secret}!`, { model: 'fake-cls' });
    expect(await codeOf(() => c.classify(secret, { model: 'no-such-model' }))).toBe('UNKNOWN_MODEL');
    // A body that is not a sealed request: never opened, op unknown.
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest(`${t.httpUrl}/v1/sealed`, { method: 'POST' }, (res) => {
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', reject);
      req.end(Buffer.from('junk'));
    });
    const reply = await get(`${t.httpUrl}/metrics`);
    expect(reply.status).toBe(200);
    expect(reply.type).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(reply.body).not.toContain('chest');
    const e = parseExposition(reply.body);
    expect(sampleValue(e, 'cloister_requests_total', { op: 'classify', code: 'ok' })).toBe(2);
    expect(sampleValue(e, 'cloister_requests_total', { op: 'classify', code: 'UNKNOWN_MODEL' })).toBe(1);
    expect(sampleValue(e, 'cloister_requests_total', { op: 'none', code: 'MALFORMED' })).toBe(1);
    expect(e.types.get('cloister_request_duration_seconds')).toBe('histogram');
    const buckets = e.samples.filter((s) => s.name === 'cloister_request_duration_seconds_bucket' && s.labels['op'] === 'classify');
    expect(buckets.at(-1)?.labels['le']).toBe('+Inf');
    expect(buckets.at(-1)?.value).toBe(3);
    for (let i = 1; i < buckets.length; i++) expect(buckets[i]?.value).toBeGreaterThanOrEqual(buckets[i - 1]?.value ?? 0);
    expect(sampleValue(e, 'cloister_request_duration_seconds_count', { op: 'classify' })).toBe(3);
    expect(sampleValue(e, 'cloister_request_duration_seconds_sum', { op: 'classify' })).toBeGreaterThan(0);
    expect(sampleValue(e, 'cloister_requests_in_flight')).toBe(0);
    expect(e.types.get('cloister_requests_in_flight')).toBe('gauge');
    expect(sampleValue(e, 'cloister_key_generation')).toBe(t.server.keys.current().generation);
    expect(sampleValue(e, 'cloister_uptime_seconds')).toBeGreaterThanOrEqual(0);
    expect(sampleValue(e, 'cloister_up')).toBe(1);
    expect(e.types.get('cloister_requests_total')).toBe('counter');
    expect(sampleValue(e, 'cloister_errors_total', { code: 'UNKNOWN_MODEL' })).toBe(1);
  });

  it('counts a request in flight as queue depth while the engine works on it', async () => {
    const engine = new GatedEngine();
    const t = await gatedServer(engine);
    t.release();
    const c = await client(t);
    const pending = c.classify('x', { model: 'slow' });
    await until(() => engine.running === 1);
    expect(sampleValue(parseExposition((await get(`${t.httpUrl}/metrics`)).body), 'cloister_requests_in_flight')).toBe(1);
    engine.release();
    await pending;
    expect(sampleValue(parseExposition((await get(`${t.httpUrl}/metrics`)).body), 'cloister_requests_in_flight')).toBe(0);
  });
});

describe('shutdown (SIGTERM drain)', () => {
  it('releases the port at once, lets the request in flight finish, then closes', async () => {
    const engine = new GatedEngine();
    const t = await gatedServer(engine);
    t.release();
    const c = await client(t);
    const pending = c.classify('x', { model: 'slow' });
    await until(() => engine.running === 1);
    const stopped = t.server.shutdown(10_000);
    // The port is free: another listener can take it while the request is still running.
    const port = t.urls.port ?? 0;
    const other = createServer();
    await new Promise<void>((resolve, reject) => {
      other.once('error', reject);
      other.listen(port, '127.0.0.1', resolve);
    });
    await new Promise<void>((r) => other.close(() => r()));
    expect(engine.running).toBe(1);
    engine.release();
    expect(await pending).toEqual([{ label: 'done', score: 1 }]);
    expect(await stopped).toEqual({ drained: true });
  });

  it('gives up after the drain timeout and reports it', async () => {
    const engine = new GatedEngine();
    const t = await gatedServer(engine);
    t.release();
    const c = await client(t);
    const pending = codeOf(() => c.classify('x', { model: 'slow' }));
    await until(() => engine.running === 1);
    expect(await t.server.shutdown(20)).toEqual({ drained: false });
    expect(await pending).toBeDefined();
    engine.release();
  });

  it('closes idle WebSocket connections with 1001 (going away)', async () => {
    const engine = new GatedEngine();
    const t = await gatedServer(engine);
    t.release();
    const ws = new WebSocket(t.wsUrl, { perMessageDeflate: false });
    ws.on('error', () => undefined);
    await new Promise<void>((r) => ws.once('open', () => r()));
    const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
    await t.server.shutdown(1000);
    expect(await closed).toBe(1001);
  });
});

describe('listen errors', () => {
  it('an address in use names the address', async () => {
    const t = await server();
    const s = new CloisterServer({ engines: [new FakeEngine()], attester: t.attester });
    const err = await s.listen({ host: '127.0.0.1', port: t.urls.port ?? 0 }).then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ code: 'CONFIG_INVALID' });
    expect(String((err as Error).message)).toBe(`cannot listen on 127.0.0.1:${String(t.urls.port)}: address already in use (EADDRINUSE)`);
  });
});

describe('TLS (--tls-cert/--tls-key)', () => {
  it('serves HTTPS and WSS with a certificate made at test time', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const now = Date.now();
    const der = issueCertificate({
      subjectCommonName: 'localhost', publicKey, signingKey: privateKey, notBefore: new Date(now - 60_000), notAfter: new Date(now + 3_600_000),
      ca: true, keyUsage: 0x80 | 0x04, // digitalSignature, keyCertSign
    });
    const cert = derToPem(der);
    const key = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const t = await gatedServer(new GatedEngine(), { cert, key });
    t.release();
    expect(t.urls.httpUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(t.urls.wsUrl).toMatch(/^wss:\/\/127\.0\.0\.1:\d+\/$/);
    const body = await new Promise<string>((resolve, reject) => {
      const req = httpsRequest(`${t.httpUrl}/healthz`, { ca: cert, servername: 'localhost' }, (res) => {
        let b = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (b += d));
        res.on('end', () => resolve(b));
      });
      req.on('error', reject);
      req.end();
    });
    expect(body).toBe('ok\n');
    // Plain HTTP on the TLS port is not answered as HTTP.
    expect(await get(`${t.httpUrl.replace('https', 'http')}/healthz`).then((r) => r.status, () => 'refused')).not.toBe(200);
    // `servername` goes through ws to tls.connect (the certificate names localhost; ws's types omit it).
    const ws = new WebSocket(t.wsUrl, { ca: cert, perMessageDeflate: false, ...({ servername: 'localhost' } as object) });
    const msg = await new Promise<ReturnType<typeof decodeWireMessage>>((resolve, reject) => {
      ws.once('open', () => ws.send(encodeWireMessage({ t: 'evidence-req' })));
      ws.once('message', (d: Buffer) => resolve(decodeWireMessage(new Uint8Array(d))));
      ws.once('error', reject);
    });
    ws.terminate();
    expect(msg.t).toBe('evidence');
  });
});
