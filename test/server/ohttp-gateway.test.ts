/**
 * The standard OHTTP gateway (src/server/ohttp-gateway.ts): an RFC 9458 client (the
 * non-chunked encapsulation, tested against the RFC 9458 vectors in ohttp tests) sends Binary
 * HTTP (RFC 9292) OpenAI-shaped requests and reads Binary HTTP answers; errors are sealed
 * BHTTP statuses with coded JSON; replay is refused by date and enc; and the route is live on
 * the server's HTTP listener at POST /v1/ohttp.
 */
import { describe, expect, it } from 'vitest';
import { encapsulateRequest } from '../helpers/ohttp-rfc9458.js';
import { decodeKeyConfig, sealTargetFromKeyConfig } from '../../src/protocol/key-config.js';
import { decodeBhttpResponse, encodeBhttpRequest } from '../../src/protocol/bhttp.js';
import type { BhttpField } from '../../src/protocol/bhttp.js';
import { JsonResults } from '../../src/protocol/messages.js';
import { handleOhttpRequest } from '../../src/server/ohttp-gateway.js';
import type { HandlerDeps } from '../../src/server/handler.js';
import { KeyManager } from '../../src/server/keys.js';
import { ReplayWindow } from '../../src/server/replay.js';
import { EngineRouter } from '../../src/server/router.js';
import { ServerStats } from '../../src/server/stats.js';
import { silentLogger } from '../../src/server/log.js';
import type { Engine, EngineRequest, ModelInfo } from '../../src/inference/types.js';
import { startTestServer } from '../helpers/test-server.js';

const MODEL: ModelInfo = { name: 'llm', task: 'text-generation', operations: ['chat', 'completion', 'embeddings', 'models'], digest: new Uint8Array(32).fill(4) };

/** An upstream-shaped engine: answers chat with the engine's own JSON text (as the upstream engine relays it). */
class ChatEngine implements Engine {
  readonly kind = 'upstream';
  seen: EngineRequest[] = [];
  models(): readonly ModelInfo[] {
    return [MODEL];
  }
  start(): Promise<void> {
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
  async *run(request: EngineRequest): AsyncIterable<unknown> {
    this.seen.push(request);
    await Promise.resolve();
    if (request.op === 'models') yield { object: 'list', data: [{ id: 'llm', object: 'model' }] };
    else yield new JsonResults([JSON.stringify({ object: 'chat.completion', choices: [{ message: { role: 'assistant', content: 'hi' } }] })]);
  }
}

function setup(): { deps: HandlerDeps; keys: KeyManager; engine: ChatEngine } {
  const engine = new ChatEngine();
  const keys = new KeyManager({ platform: 'simulated', models: engine.models(), configDigest: new Uint8Array(32).fill(7) });
  const deps: HandlerDeps = { keys, replay: new ReplayWindow(), router: new EngineRouter([engine]), logger: silentLogger, stats: new ServerStats(), requestTimeoutMs: 60_000, maxRequestBytes: 1 << 20 };
  return { deps, keys, engine };
}

function request(keys: KeyManager, method: string, path: string, body?: unknown, headers: BhttpField[] = [['date', new Date().toUTCString()]]): ReturnType<typeof encapsulateRequest> {
  const bhttp = encodeBhttpRequest({
    method,
    scheme: 'https',
    authority: 'cloister.example',
    path,
    headers: body === undefined ? headers : [...headers, ['content-type', 'application/json']],
    content: body === undefined ? new Uint8Array(0) : new TextEncoder().encode(JSON.stringify(body)),
    trailers: [],
  });
  return encapsulateRequest(sealTargetFromKeyConfig(decodeKeyConfig(keys.current().keyConfig)), bhttp);
}

async function ask(deps: HandlerDeps, req: ReturnType<typeof encapsulateRequest>): Promise<{ status: number; json: unknown; headers: readonly BhttpField[] }> {
  const outcome = await handleOhttpRequest(deps, req.bytes, new AbortController().signal);
  if (outcome.kind !== 'response') throw new Error(`plaintext error ${outcome.code}`);
  const r = decodeBhttpResponse(req.response.open(outcome.body));
  expect(r.status).toBe(outcome.status);
  return { status: r.status, json: JSON.parse(new TextDecoder().decode(r.content)) as unknown, headers: r.headers };
}

describe('standard OHTTP gateway (RFC 9458 + RFC 9292)', () => {
  it('answers an OpenAI chat request with a Binary HTTP 200 and the engine JSON', async () => {
    const { deps, keys, engine } = setup();
    const r = await ask(deps, request(keys, 'POST', '/v1/chat/completions', { model: 'llm', messages: [{ role: 'user', content: 'x' }] }));
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ object: 'chat.completion', choices: [{ message: { role: 'assistant', content: 'hi' } }] });
    expect(r.headers).toContainEqual(['content-type', 'application/json']);
    expect(engine.seen[0]).toMatchObject({ op: 'chat', model: 'llm', stream: false });
    const m = await ask(deps, request(keys, 'GET', '/v1/models?model=llm'));
    expect(m.json).toEqual({ object: 'list', data: [{ id: 'llm', object: 'model' }] });
  });

  it('errors are sealed Binary HTTP statuses with a code, never content', async () => {
    const { deps, keys } = setup();
    const cases: [ReturnType<typeof encapsulateRequest>, number, string][] = [
      [request(keys, 'POST', '/v1/chat/completions', { model: 'nope', messages: [] }), 404, 'UNKNOWN_MODEL'],
      [request(keys, 'POST', '/v1/chat/completions', { model: 'llm', stream: true }), 400, 'INVALID_ARGUMENT'],
      [request(keys, 'GET', '/v1/chat/completions'), 405, 'PROTOCOL_VIOLATION'],
      [request(keys, 'POST', '/v1/secret-admin', { model: 'llm' }), 404, 'NOT_FOUND'],
      [request(keys, 'POST', '/v1/chat/completions', { model: 'llm' }, []), 400, 'REPLAY'],
      [request(keys, 'POST', '/v1/chat/completions', { model: 'llm' }, [['date', new Date(Date.now() - 3_600_000).toUTCString()]]), 400, 'REPLAY'],
    ];
    for (const [req, status, code] of cases) {
      const r = await ask(deps, req);
      expect([r.status, (r.json as { error: { code: string } }).error.code]).toEqual([status, code]);
      expect(JSON.stringify(r.json)).not.toContain('nope');
    }
  });

  it('the same encapsulated request twice is a replay', async () => {
    const { deps, keys } = setup();
    const req = request(keys, 'POST', '/v1/chat/completions', { model: 'llm', messages: [] });
    expect((await ask(deps, req)).status).toBe(200);
    const again = await handleOhttpRequest(deps, req.bytes, new AbortController().signal);
    expect(again.kind).toBe('response');
    expect(again.kind === 'response' ? again.status : 0).toBe(400);
  });

  it('a request that does not open is a plaintext coded error', async () => {
    const { deps, keys } = setup();
    const req = request(keys, 'POST', '/v1/chat/completions', { model: 'llm' });
    const bytes = req.bytes.slice();
    bytes[bytes.byteLength - 1] = (bytes[bytes.byteLength - 1] as number) ^ 1;
    expect(await handleOhttpRequest(deps, bytes, new AbortController().signal)).toEqual({ kind: 'error', code: 'DECRYPT_FAILED' });
    bytes[0] = ((bytes[0] as number) + 1) % 256;
    expect((await handleOhttpRequest(deps, bytes, new AbortController().signal)).kind).toBe('error');
  });

  it('is served at POST /v1/ohttp on the HTTP listener', async () => {
    const t = await startTestServer();
    try {
      const bad = await fetch(`${t.httpUrl}/v1/ohttp`, { method: 'POST', body: new Uint8Array([1, 2, 3]), headers: { 'content-type': 'message/ohttp-req' } });
      expect(bad.status).toBe(400);
      expect((await fetch(`${t.httpUrl}/v1/ohttp`)).status).toBe(405);
      // A well-formed request to the server's key, for a model it does not serve: a sealed 404.
      const req = request(t.server.keys, 'POST', '/v1/chat/completions', { model: 'llm', messages: [] });
      const res = await fetch(`${t.httpUrl}/v1/ohttp`, { method: 'POST', body: req.bytes, headers: { 'content-type': 'message/ohttp-req' } });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('message/ohttp-res');
      const inner = decodeBhttpResponse(req.response.open(new Uint8Array(await res.arrayBuffer())));
      expect(inner.status).toBe(404);
    } finally {
      await t.close();
    }
  });
});
