import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CloisterError } from '../../src/errors.js';
import type { EngineRequest } from '../../src/inference/types.js';
import { UpstreamEngine } from '../../src/inference/upstream/index.js';
import { JsonResults } from '../../src/protocol/messages.js';
import type { UpstreamEngineOptions } from '../../src/inference/upstream/index.js';
import { startStandin } from '../fixtures/standin-engine/index.js';
import type { Standin } from '../fixtures/standin-engine/index.js';
import { rejectionOf } from '../helpers/errors.js';
import { until } from '../helpers/until.js';

let standin: Standin;
const engines: UpstreamEngine[] = [];

beforeAll(async () => {
  standin = await startStandin();
});
afterAll(async () => {
  await standin.close();
});
afterEach(async () => {
  for (const e of engines.splice(0)) await e.close();
  standin.reset();
});

function engine(options: Partial<UpstreamEngineOptions> = {}): UpstreamEngine {
  const e = new UpstreamEngine({ baseUrl: standin.baseUrl, model: 'standin-model', name: 'llm', ...options });
  engines.push(e);
  return e;
}

async function started(options: Partial<UpstreamEngineOptions> = {}): Promise<UpstreamEngine> {
  const e = engine(options);
  await e.start();
  return e;
}

function chat(stream: boolean, extra: Record<string, unknown> = {}): EngineRequest {
  return {
    op: 'chat',
    model: 'llm',
    input: { model: 'other-model', messages: [{ role: 'user', content: 'What is 2+2?' }], ...extra },
    params: {},
    stream,
  };
}

/** An engine step as the client sees it: a JsonResults batch is its parsed texts, in order. */
function results(step: unknown): unknown[] {
  return step instanceof JsonResults ? step.texts.map((t) => JSON.parse(t) as unknown) : [step];
}

async function collect(it: AsyncIterable<unknown>): Promise<unknown[]> {
  const out: unknown[] = [];
  for await (const c of it) out.push(...results(c));
  return out;
}

const failure = rejectionOf;

function run(e: UpstreamEngine, req: EngineRequest, signal = new AbortController().signal): Promise<unknown[]> {
  return collect(e.run(req, { signal }));
}

function contentOf(chunks: unknown[]): string {
  return chunks
    .map((c) => {
      const choice = (c as { choices: { delta: { content?: string } }[] }).choices[0];
      return choice?.delta.content ?? '';
    })
    .join('');
}

const ANSWER = 'Hello, world! The answer is 4.';

describe('UpstreamEngine configuration', () => {
  it('refuses a non-loopback engine unless allowed', () => {
    const err = (() => {
      try {
        new UpstreamEngine({ baseUrl: 'http://10.0.0.5:8000/v1', model: 'm' });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(CloisterError);
    expect((err as CloisterError).code).toBe('CONFIG_INVALID');
    expect(() => new UpstreamEngine({ baseUrl: 'http://10.0.0.5:8000/v1', model: 'm', allowNonLoopback: true })).not.toThrow();
    expect(() => new UpstreamEngine({ baseUrl: 'https://127.0.0.1/v1', model: 'm' })).toThrow(CloisterError);
    expect(() => new UpstreamEngine({ baseUrl: 'http://[::1]:8000/v1', model: 'm' })).not.toThrow();
  });

  it('rejects bad limits, half a canary and a wrong-length model digest', () => {
    expect(() => engine({ maxConcurrency: 0 })).toThrow(CloisterError);
    expect(() => engine({ idleTimeoutMs: 1.5 })).toThrow(CloisterError);
    expect(() => engine({ canaryPrompt: 'x' })).toThrow(CloisterError);
    expect(() => engine({ modelDigest: new Uint8Array(31) })).toThrow(CloisterError);
    expect(() => engine({ canaryEmbeddings: { anchor: 'a', similar: 'b', dissimilar: 'c', minSimilarity: 2 } })).toThrow(CloisterError);
  });

  it('exposes identity and model info for the key config', () => {
    const digest = new Uint8Array(32).fill(7);
    const e = engine({ kind: 'vllm', imageDigest: 'sha256:abcd', modelDigest: digest });
    digest.fill(0); // the engine keeps its own copy
    expect(e.identity()).toEqual({ kind: 'vllm', model: 'standin-model', imageDigest: 'sha256:abcd' });
    const [info] = e.models();
    expect(info?.name).toBe('llm');
    expect(info?.operations).toEqual(['chat', 'completion', 'embeddings', 'models']);
    expect(info?.digest).toEqual(new Uint8Array(32).fill(7));
    const derived = engine({ kind: 'sglang' }).models()[0]?.digest;
    expect(derived?.length).toBe(32);
    expect(derived).not.toEqual(engine({ kind: 'vllm' }).models()[0]?.digest);
  });
});

describe('UpstreamEngine start-up', () => {
  it('refuses to run before start()', async () => {
    const e = engine();
    expect((await failure(run(e, chat(false)))).code).toBe('ENGINE_UNAVAILABLE');
  });

  it('fails closed when the engine is down', async () => {
    const down = await startStandin();
    const url = down.baseUrl;
    await down.close();
    const e = engine({ baseUrl: url });
    expect((await failure(e.start())).code).toBe('ENGINE_UNAVAILABLE');
  });

  it('fails closed when the engine does not serve the configured model', async () => {
    const e = engine({ model: 'missing-model' });
    const err = await failure(e.start());
    expect(err.code).toBe('ENGINE_UNAVAILABLE');
    expect(err.message).toContain('missing-model');
  });

  it('waits for a warming engine up to readyTimeoutMs', async () => {
    standin.reset({ failFirst: 2 });
    await started({ readyTimeoutMs: 30_000, readyPollMs: 5 });
    expect(standin.requests.filter((r) => r.path === '/v1/models')).toHaveLength(3);
    standin.reset({ failFirst: 2 });
    expect((await failure(engine({ readyTimeoutMs: 0 }).start())).code).toBe('ENGINE_UNAVAILABLE');
  });

  it('passes a chat canary whose answer contains the expected text (string and regex)', async () => {
    await started({ canaryPrompt: 'What is 2+2?', canaryExpect: 'answer is 4' });
    await started({ canaryPrompt: 'What is 2+2?', canaryExpect: /ANSWER IS \d/gi, canaryOp: 'completion' });
    const canary = standin.requests.find((r) => r.path === '/v1/chat/completions');
    expect(canary?.body).toMatchObject({ model: 'standin-model', temperature: 0, stream: false, max_tokens: 32 });
  });

  it('refuses to start when the canary answer is wrong (silent garbage)', async () => {
    standin.reset({ answer: '<unk><unk><unk>' });
    const err = await failure(engine({ canaryPrompt: 'What is 2+2?', canaryExpect: 'answer is 4' }).start());
    expect(err.code).toBe('ENGINE_UNAVAILABLE');
    expect(err.message).toMatch(/canary/);
    expect(err.message).not.toContain('<unk>');
    const e2 = engine({ canaryPrompt: 'What is 2+2?', canaryExpect: /^\s*4\s*$/ });
    expect((await failure(e2.start())).code).toBe('ENGINE_UNAVAILABLE');
  });

  it('refuses to start when the canary request itself fails', async () => {
    standin.reset({ status: 500 });
    const err = await failure(engine({ canaryPrompt: 'p', canaryExpect: 'x' }).start());
    expect(err.code).toBe('ENGINE_UNAVAILABLE');
  });

  it('checks embeddings with a similarity canary', async () => {
    const canaryEmbeddings = { anchor: 'the patient has a fever', similar: 'the patient had a fever', dissimilar: 'quarterly revenue grew', minSimilarity: 0.6 };
    await started({ canaryEmbeddings });
    standin.reset({ embeddings: 'constant' });
    expect((await failure(engine({ canaryEmbeddings }).start())).code).toBe('ENGINE_UNAVAILABLE');
    standin.reset({ embeddings: 'zero' });
    expect((await failure(engine({ canaryEmbeddings }).start())).code).toBe('ENGINE_UNAVAILABLE');
    standin.reset();
    expect((await failure(engine({ canaryEmbeddings: { ...canaryEmbeddings, minSimilarity: 0.999 } }).start())).code).toBe('ENGINE_UNAVAILABLE');
  });
});

describe('UpstreamEngine requests', () => {
  it('answers a non-streamed chat with one chunk, model forced and renamed', async () => {
    const e = await started();
    const chunks = await run(e, chat(false, { stream: true, stream_options: { include_usage: true } }));
    expect(chunks).toHaveLength(1);
    const completion = chunks[0] as { model: string; choices: { message: { content: string } }[] };
    expect(completion.model).toBe('llm');
    expect(completion.choices[0]?.message.content).toBe(ANSWER);
    const sent = standin.requests.find((r) => r.path === '/v1/chat/completions')?.body;
    expect(sent?.['model']).toBe('standin-model');
    expect(sent?.['stream']).toBe(false);
    expect(sent?.['stream_options']).toBeUndefined();
  });

  it('lets params override body fields but never model', async () => {
    const e = await started();
    await run(e, { ...chat(false), params: { temperature: 0.5, model: 'other-model' } });
    const sent = standin.requests.find((r) => r.path === '/v1/chat/completions')?.body;
    expect(sent).toMatchObject({ temperature: 0.5, model: 'standin-model' });
  });

  it('streams chat tokens in order, one chunk per SSE event', async () => {
    const e = await started();
    const chunks = await run(e, chat(true));
    expect(chunks).toHaveLength(10);
    expect(contentOf(chunks)).toBe(ANSWER);
    expect(chunks.every((c) => (c as { model: string }).model === 'llm')).toBe(true);
    expect(standin.requests.at(-1)?.body?.['stream']).toBe(true);
  });

  it('yields identical chunks however the engine splits and frames its events', async () => {
    const e = await started();
    const reference = await run(e, chat(true));
    const variants = [
      { writeSize: 1 as const },
      { writeSize: 'random' as const, splitSeed: 7 },
      { writeSize: 'random' as const, splitSeed: 99, lineEnding: '\r\n' as const },
      { writeSize: 3, lineEnding: '\r' as const, comments: true },
      { multiLineData: true, writeSize: 'random' as const, splitSeed: 3, tokens: ['Hé', 'llo 😀', ' wörld'] },
    ];
    for (const v of variants) {
      standin.reset(v);
      const chunks = await run(e, chat(true));
      if (v.tokens === undefined) expect(chunks).toEqual(reference);
      else expect(contentOf(chunks)).toBe('Héllo 😀 wörld');
    }
  });

  it('streams completions and answers embeddings and models', async () => {
    const e = await started();
    const comp = await run(e, { op: 'completion', model: 'llm', input: { prompt: 'Say hi' }, params: {}, stream: true });
    expect(comp.map((c) => (c as { choices: { text: string }[] }).choices[0]?.text).join('')).toBe(ANSWER);

    const emb = await run(e, { op: 'embeddings', model: 'llm', input: { input: ['a', 'b'], stream: true }, params: {}, stream: true });
    expect(emb).toHaveLength(1);
    const data = (emb[0] as { data: { embedding: number[] }[]; model: string });
    expect(data.data).toHaveLength(2);
    expect(data.model).toBe('llm');
    expect(standin.requests.at(-1)?.body?.['stream']).toBeUndefined();

    const models = await run(e, { op: 'models', model: 'llm', input: null, params: {}, stream: false });
    expect(models).toEqual([{ object: 'list', data: [{ id: 'llm', object: 'model', owned_by: 'cloister', created: 1700000000, max_model_len: 4096 }] }]);
  });

  it('works over a Unix socket', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cloister-upstream-'));
    const socketPath = join(dir, 'engine.sock');
    const sock = await startStandin({}, { socketPath });
    try {
      const e = await started({ baseUrl: 'http://localhost/v1', socketPath });
      expect(contentOf(await run(e, chat(true)))).toBe(ANSWER);
    } finally {
      await sock.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects other models, unoffered operations and non-object input', async () => {
    const e = await started({ operations: ['chat', 'models'] });
    expect((await failure(run(e, { ...chat(false), model: 'standin-model' }))).code).toBe('UNKNOWN_MODEL');
    expect((await failure(run(e, { op: 'embeddings', model: 'llm', input: { input: 'x' }, params: {}, stream: false }))).code).toBe('UNKNOWN_OPERATION');
    expect((await failure(run(e, { op: 'classify', model: 'llm', input: 'x', params: {}, stream: false }))).code).toBe('UNKNOWN_OPERATION');
    expect((await failure(run(e, { ...chat(false), input: ['not', 'an', 'object'] }))).code).toBe('INVALID_ARGUMENT');
    expect((await failure(run(e, { ...chat(false), input: { big: 10n } }))).code).toBe('INVALID_ARGUMENT');
  });
});

describe('UpstreamEngine failures', () => {
  it('a stream without [DONE] is ENGINE_FAILED, never a short answer', async () => {
    const e = await started();
    standin.reset({ omitDone: true });
    expect((await failure(run(e, chat(true)))).code).toBe('ENGINE_FAILED');
  });

  it('an engine dying mid-stream is ENGINE_FAILED after the chunks already sent', async () => {
    const e = await started();
    standin.reset({ dieAfterEvents: 3 });
    const seen: unknown[] = [];
    const err = await failure((async () => {
      for await (const c of e.run(chat(true), { signal: new AbortController().signal })) seen.push(...results(c));
    })());
    expect(err.code).toBe('ENGINE_FAILED');
    // What was already relayed is a prefix of the answer, in order (a destroyed socket may
    // also drop bytes still buffered on the reading side).
    expect(seen.length).toBeLessThanOrEqual(3);
    expect(ANSWER.startsWith(contentOf(seen))).toBe(true);
  });

  it('an engine dying after the last token but before [DONE] is ENGINE_FAILED', async () => {
    const e = await started();
    standin.reset({ dieAfterEvents: 10 });
    expect((await failure(run(e, chat(true)))).code).toBe('ENGINE_FAILED');
  });

  it('error events mid-stream are ENGINE_FAILED (data error object and named error event)', async () => {
    const e = await started();
    standin.reset({ errorEventAfter: 2 });
    expect((await failure(run(e, chat(true)))).code).toBe('ENGINE_FAILED');
    standin.reset({ namedErrorAfter: 1, writeSize: 2 });
    expect((await failure(run(e, chat(true)))).code).toBe('ENGINE_FAILED');
  });

  it('an HTTP error status is ENGINE_FAILED with the status and no content', async () => {
    const e = await started();
    standin.reset({ status: 400 });
    for (const stream of [false, true]) {
      const err = await failure(run(e, chat(stream)));
      expect(err.code).toBe('ENGINE_FAILED');
      expect(err.detail?.['status']).toBe(400);
      expect(err.message).toContain('400');
      expect(err.message).not.toContain('2+2');
    }
  });

  it('a stream answered without text/event-stream is ENGINE_FAILED', async () => {
    const e = await started();
    standin.reset({ streamContentType: 'application/json' });
    expect((await failure(run(e, chat(true)))).code).toBe('ENGINE_FAILED');
  });

  it('the media type of a stream is matched without regard to case, parameters allowed', async () => {
    const e = await started();
    standin.reset({ streamContentType: 'Text/Event-Stream; charset=utf-8' });
    expect((await run(e, chat(true))).length).toBeGreaterThan(1);
  });

  it('an engine that went away is ENGINE_UNAVAILABLE', async () => {
    const other = await startStandin();
    const e = await started({ baseUrl: other.baseUrl, maxRetries: 0 });
    await other.close();
    expect((await failure(run(e, chat(true)))).code).toBe('ENGINE_UNAVAILABLE');
  });

  it('no response head within firstByteTimeoutMs is TIMEOUT', async () => {
    const e = await started({ firstByteTimeoutMs: 500 });
    standin.reset({ hangHeaders: true });
    expect((await failure(run(e, chat(true)))).code).toBe('TIMEOUT');
    expect((await failure(run(e, { op: 'models', model: 'llm', input: null, params: {}, stream: false }))).code).toBe('TIMEOUT');
  });

  it('a stream that goes silent is TIMEOUT (idleTimeoutMs), after the chunks already sent', async () => {
    const e = await started({ idleTimeoutMs: 200 });
    standin.reset({ hangAfterEvents: 2 });
    const seen: unknown[] = [];
    const err = await failure((async () => {
      for await (const c of e.run(chat(true), { signal: new AbortController().signal })) seen.push(...results(c));
    })());
    expect(err.code).toBe('TIMEOUT');
    expect(err.detail?.['limit']).toBe('idleTimeoutMs');
    expect(seen.length).toBeLessThanOrEqual(2);
    await standin.waitForEarlyClose(1);
  });

  it('a consumer slower than idleTimeoutMs is not a silent engine', async () => {
    const e = await started({ idleTimeoutMs: 100 });
    const seen: unknown[] = [];
    let first = true;
    for await (const c of e.run(chat(true), { signal: new AbortController().signal })) {
      seen.push(...results(c));
      if (first) {
        first = false;
        // Hold the first batch well past idleTimeoutMs: only time spent waiting on the engine counts.
        await new Promise((r) => setTimeout(r, 300));
      }
    }
    expect(seen.length).toBeGreaterThan(1);
  });

  it('a stream past requestTimeoutMs is TIMEOUT even when the idle limit is further away', async () => {
    const e = await started({ requestTimeoutMs: 300, idleTimeoutMs: 60_000 });
    standin.reset({ hangAfterEvents: 2 });
    const err = await failure(run(e, chat(true)));
    expect(err.code).toBe('TIMEOUT');
    expect(err.detail?.['limit']).toBe('requestTimeoutMs');
    await standin.waitForEarlyClose(1);
  });

  it('an expired connect phase does not fire once the connection is up (idle limit still enforced)', async () => {
    // The connect limit is shorter than the idle limit and lapses mid-stream: the exchange must
    // fail on the idle limit, not on a connect timeout that no longer applies.
    const e = await started({ connectTimeoutMs: 50, idleTimeoutMs: 300 });
    standin.reset({ hangAfterEvents: 2 });
    const err = await failure(run(e, chat(true)));
    expect(err.code).toBe('TIMEOUT');
    expect(err.detail?.['limit']).toBe('idleTimeoutMs');
    await standin.waitForEarlyClose(1);
  });

  it('a non-streamed request past requestTimeoutMs is TIMEOUT', async () => {
    const e = await started({ requestTimeoutMs: 500 });
    standin.reset({ hangHeaders: true });
    const err = await failure(run(e, chat(false)));
    expect(err.code).toBe('TIMEOUT');
  });

  it('maxResponseBytes and maxEventBytes are enforced', async () => {
    const e = await started({ maxResponseBytes: 600 });
    expect((await failure(run(e, chat(true)))).code).toBe('LIMIT_EXCEEDED');
    const e2 = await started({ maxEventBytes: 2048 });
    standin.reset({ padFirstEvent: 4096 });
    const err = await failure(run(e2, chat(true)));
    expect(err.code).toBe('LIMIT_EXCEEDED');
    expect(err.detail?.['limit']).toBe('maxEventBytes');
    standin.reset({ padFirstEvent: 1024 });
    expect(contentOf(await run(e2, chat(true)))).toBe(ANSWER);
  });
});

describe('UpstreamEngine cancel, retries and concurrency', () => {
  it('an abort closes the upstream connection at once', async () => {
    const e = await started();
    standin.reset({ tokenDelayMs: 20, tokens: Array.from({ length: 500 }, (_, i) => `t${i} `) });
    const ac = new AbortController();
    const seen: unknown[] = [];
    const err = await failure((async () => {
      for await (const c of e.run(chat(true), { signal: ac.signal })) {
        seen.push(...results(c));
        if (seen.length === 2) ac.abort();
      }
    })());
    expect(err.code).toBe('CANCELLED');
    await standin.waitForEarlyClose(1);
    expect(standin.earlyCloses).toBe(1);
  });

  it('a consumer that stops reading closes the upstream connection', async () => {
    const e = await started();
    standin.reset({ tokenDelayMs: 20, tokens: Array.from({ length: 500 }, (_, i) => `t${i} `) });
    for await (const c of e.run(chat(true), { signal: new AbortController().signal })) {
      void c;
      break;
    }
    await standin.waitForEarlyClose(1);
  });

  it('an abort while waiting for the response head cancels too', async () => {
    const e = await started();
    standin.reset({ hangHeaders: true });
    const ac = new AbortController();
    const p = failure(run(e, chat(false), ac.signal));
    await until(() => standin.requests.length > 0, 500, 5, 'a request at the stand-in');
    ac.abort();
    expect((await p).code).toBe('CANCELLED');
    await standin.waitForEarlyClose(1);
  });

  it('reuses one keep-alive connection for sequential requests', async () => {
    const e = await started();
    const before = standin.connections;
    for (let i = 0; i < 3; i++) expect(contentOf(await run(e, chat(true)))).toBe(ANSWER);
    expect(await run(e, chat(false))).toBeDefined();
    // The start-up probe's pooled socket may serve them all; at most one new connection.
    expect(standin.connections - before).toBeLessThanOrEqual(1);
  });

  it('keepAliveTimeoutMs: 0 opens one connection per request', async () => {
    const e = await started({ keepAliveTimeoutMs: 0 });
    const before = standin.connections;
    for (let i = 0; i < 3; i++) expect(contentOf(await run(e, chat(true)))).toBe(ANSWER);
    expect(standin.connections - before).toBe(3);
    expect(() => engine({ keepAliveTimeoutMs: -1 })).toThrow(CloisterError);
  });

  it('a cancelled stream\'s connection is never reused', async () => {
    const e = await started();
    standin.reset({ tokenDelayMs: 20, tokens: Array.from({ length: 500 }, (_, i) => `t${i} `) });
    const ac = new AbortController();
    const err = await failure((async () => {
      for await (const c of e.run(chat(true), { signal: ac.signal })) {
        void c;
        ac.abort();
      }
    })());
    expect(err.code).toBe('CANCELLED');
    await standin.waitForEarlyClose(1);
    const cancelled = standin.requests.at(-1)?.connection;
    standin.reset();
    expect(contentOf(await run(e, chat(true)))).toBe(ANSWER);
    const next = standin.requests.at(-1)?.connection;
    expect(cancelled).toBeGreaterThan(0);
    expect(next).toBeGreaterThan(0);
    expect(next).not.toBe(cancelled);
  });

  it('close() aborts requests in flight', async () => {
    const e = await started();
    standin.reset({ hangAfterEvents: 1 });
    const p = failure(run(e, chat(true)));
    await until(() => standin.requests.length > 0, 500, 5, 'a request at the stand-in');
    await e.close();
    expect((await p).code).toBe('CANCELLED');
  });

  it('retries idempotent requests (embeddings) on 503, bounded by maxRetries', async () => {
    const e = await started({ retryDelayMs: 1, maxRetries: 2 });
    standin.reset({ failFirst: 2 });
    const emb = await run(e, { op: 'embeddings', model: 'llm', input: { input: 'x' }, params: {}, stream: false });
    expect(emb).toHaveLength(1);
    expect(standin.requests).toHaveLength(3);

    standin.reset({ failFirst: 3 });
    const err = await failure(run(e, { op: 'embeddings', model: 'llm', input: { input: 'x' }, params: {}, stream: false }));
    expect(err.code).toBe('ENGINE_FAILED');
    expect(err.detail?.['status']).toBe(503);
    expect(standin.requests).toHaveLength(3);
  });

  it('never retries chat (not idempotent), streamed or not', async () => {
    const e = await started({ retryDelayMs: 1, maxRetries: 5 });
    for (const stream of [false, true]) {
      standin.reset({ failFirst: 1 });
      expect((await failure(run(e, chat(stream)))).code).toBe('ENGINE_FAILED');
      expect(standin.requests).toHaveLength(1);
    }
  });

  it('does not retry a 4xx', async () => {
    const e = await started({ retryDelayMs: 1, maxRetries: 5 });
    standin.reset({ status: 400 });
    await failure(run(e, { op: 'embeddings', model: 'llm', input: { input: 'x' }, params: {}, stream: false }));
    expect(standin.requests).toHaveLength(1);
  });

  it('is OVERLOADED beyond maxConcurrency + maxQueued, and queued requests run later', async () => {
    const e = await started({ maxConcurrency: 1, maxQueued: 1 });
    standin.reset({ hangAfterEvents: 1 });
    const ac = new AbortController();
    const first = e.run(chat(true), { signal: ac.signal })[Symbol.asyncIterator]();
    await first.next(); // holds the only slot
    const queuedAc = new AbortController();
    const queued = run(e, chat(false), queuedAc.signal);
    expect((await failure(run(e, chat(false)))).code).toBe('OVERLOADED');
    ac.abort();
    expect((await failure(first.next())).code).toBe('CANCELLED');
    const result = await queued; // the queued one got the slot after the cancel
    expect(result).toHaveLength(1);
  });

  it('a queued request can be cancelled while waiting', async () => {
    const e = await started({ maxConcurrency: 1, maxQueued: 4 });
    standin.reset({ hangAfterEvents: 1 });
    const ac = new AbortController();
    const first = e.run(chat(true), { signal: ac.signal })[Symbol.asyncIterator]();
    await first.next();
    const qa = new AbortController();
    const queued = failure(run(e, chat(false), qa.signal));
    qa.abort();
    expect((await queued).code).toBe('CANCELLED');
    ac.abort();
    await failure(first.next());
  });
});
