/**
 * demo-lm through the whole sealed path (issue 12): the real `openai` package against the
 * gateway, which seals each request to the server running the CPU generation engine.
 * /v1/chat/completions and /v1/completions, streamed and not, answer as an upstream engine
 * would; the server's request deadline ends an endless generation with TIMEOUT (504), and an
 * application that hangs up frees the engine.
 */
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import type { CloisterClient } from '../../src/client/client.js';
import { startGateway } from '../../src/client/gateway/index.js';
import type { Gateway } from '../../src/client/gateway/index.js';
import { buildDemoModels } from '../../tools/demo-model/build.js';
import { GenerationEngine } from '../../src/inference/generation/engine.js';
import { startTestServer } from '../helpers/test-server.js';
import { until } from '../helpers/until.js';
import type { TestServer } from '../helpers/test-server.js';

let dir: string;
let engine: GenerationEngine;
let t: TestServer;
let client: CloisterClient;
let gateway: Gateway;
let ai: OpenAI;

const PROMPT = 'Summarise: chest pain radiating to the left arm';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cloister-generation-openai-'));
  const built = await buildDemoModels({ outDir: join(dir, 'demo') });
  // demo-lm with an end token it never generates: only max_tokens or the deadline ends it.
  const endless = join(dir, 'endless');
  await cp(built.lmDir, endless, { recursive: true });
  for (const f of ['config.json', 'generation_config.json']) {
    const c = JSON.parse(await readFile(join(endless, f), 'utf8')) as Record<string, unknown>;
    await writeFile(join(endless, f), JSON.stringify({ ...c, eos_token_id: 0, ...(f === 'config.json' ? { max_position_embeddings: 8100 } : {}) }));
  }
  // streamCoalesceMs 0: one chunk per token (the default sends a fast model's tokens several to a chunk).
  engine = new GenerationEngine({ models: [{ name: 'demo-lm', dir: built.lmDir }, { name: 'endless', dir: endless }], maxNewTokens: 100_000, maxKvTokens: 100_000, streamCoalesceMs: 0 });
  await engine.start();
  // guardPolicy allow: these tests check token-by-token streaming (the default redact holds streamed text back by up to 96 characters, docs/GUARD.md).
  t = await startTestServer({ engines: [engine], limits: { requestTimeoutMs: 5_000 }, guardPolicy: 'allow' });
  client = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
  gateway = await startGateway({ client });
  ai = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: 'unused', maxRetries: 0 });
}, 180_000);

afterAll(async () => {
  await gateway?.close();
  await client?.close();
  await t?.close();
  await engine?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('demo-lm through the gateway (openai package)', () => {
  it('chat, not streamed: one completion with usage', async () => {
    const res = await ai.chat.completions.create({ model: 'demo-lm', messages: [{ role: 'user', content: PROMPT }], temperature: 0, max_tokens: 40 });
    expect(res.object).toBe('chat.completion');
    expect(res.model).toBe('demo-lm');
    const content = res.choices[0]?.message.content ?? '';
    expect(content.length).toBeGreaterThan(0);
    expect(['stop', 'length']).toContain(res.choices[0]?.finish_reason);
    expect(res.usage?.prompt_tokens).toBeGreaterThan(5);
    expect(res.usage?.total_tokens).toBe((res.usage?.prompt_tokens ?? 0) + (res.usage?.completion_tokens ?? 0));
  });

  it('chat, streamed: token by token, the same text as not streamed, usage at the end', async () => {
    const params = { model: 'demo-lm', messages: [{ role: 'user' as const, content: PROMPT }], temperature: 0, max_tokens: 40 };
    const whole = await ai.chat.completions.create(params);
    const stream = await ai.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let pieces = 0;
    let usage: OpenAI.CompletionUsage | undefined;
    let finish: string | null | undefined;
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (c?.delta.content) {
        text += c.delta.content;
        pieces++;
      }
      if (c?.finish_reason) finish = c.finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe(whole.choices[0]?.message.content);
    expect(pieces).toBeGreaterThan(3);
    expect(finish).toBe(whole.choices[0]?.finish_reason);
    expect(usage?.completion_tokens).toBe(whole.usage?.completion_tokens);
  });

  it('completions, streamed and not, with a seed and a stop sequence', async () => {
    const params = { model: 'demo-lm', prompt: 'chest pain', max_tokens: 30, temperature: 0.9, seed: 42 };
    const a = await ai.completions.create(params);
    const b = await ai.completions.create(params);
    expect(b.choices[0]?.text).toBe(a.choices[0]?.text);
    const stream = await ai.completions.create({ ...params, stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
    expect(text).toBe(a.choices[0]?.text);
    const stopped = await ai.completions.create({ ...params, stop: ['.'] });
    expect(stopped.choices[0]?.text).not.toContain('.');
  });

  it('the server deadline ends an endless generation: 504 TIMEOUT, and the engine is free again', async () => {
    const err = await ai.chat.completions.create({ model: 'endless', messages: [{ role: 'user', content: PROMPT }], max_tokens: 8_000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(504);
    await until(() => engine.stats().active === 0);
  });

  it('an application that hangs up mid-stream cancels the generation', async () => {
    const ac = new AbortController();
    const stream = await ai.chat.completions.create({ model: 'endless', messages: [{ role: 'user', content: PROMPT }], max_tokens: 8_000, stream: true }, { signal: ac.signal });
    let n = 0;
    try {
      for await (const chunk of stream) {
        void chunk;
        if (++n === 5) ac.abort();
      }
    } catch {
      // The package ends (or throws from) an aborted stream; either way the application left.
    }
    expect(n).toBeGreaterThanOrEqual(5);
    expect(n).toBeLessThan(8_000);
    await until(() => engine.stats().active === 0);
    const steps = engine.stats().steps;
    await new Promise((r) => setTimeout(r, 50));
    expect(engine.stats().steps).toBe(steps);
  });
});
