/**
 * End to end, in one process: the stand-in engine <- UpstreamEngine <- CloisterServer
 * (simulated platform) <- verified, sealing client <- gateway <- the real `openai` npm
 * package as the unchanged application. Also the OpenAI-shaped facade over the same client.
 */
import OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createSimulatedAttester } from '../../src/attester/simulated/attester.js';
import { connect } from '../../src/client/client.js';
import type { CloisterClient } from '../../src/client/client.js';
import { developmentPolicy } from '../../src/client/dev-policy.js';
import { startGateway } from '../../src/client/gateway/index.js';
import type { Gateway } from '../../src/client/gateway/index.js';
import { createOpenAIClient } from '../../src/client/openai/index.js';
import { UpstreamEngine } from '../../src/inference/upstream/index.js';
import { CloisterServer } from '../../src/server/server.js';
import { startStandin } from '../fixtures/standin-engine/index.js';
import type { Standin } from '../fixtures/standin-engine/index.js';

const ANSWER = 'Hello, world! The answer is 4.';

let standin: Standin;
let engine: UpstreamEngine;
let server: CloisterServer;
let client: CloisterClient;
let gateway: Gateway;
let openai: OpenAI;

beforeAll(async () => {
  standin = await startStandin();
  engine = new UpstreamEngine({ baseUrl: standin.baseUrl, model: 'standin-model', name: 'llm', kind: 'vllm', canaryPrompt: '2+2?', canaryExpect: 'answer is 4' });
  await engine.start();
  const attester = await createSimulatedAttester();
  // guardPolicy allow: these tests check token-by-token relay fidelity (the default redact holds text back, docs/GUARD.md).
  server = new CloisterServer({ engines: [engine], attester, guardPolicy: 'allow' });
  const address = await server.listen({ host: '127.0.0.1', port: 0 });
  const policy = developmentPolicy({ pcrs: attester.pcrs, rootSha256Hex: attester.rootSha256Hex, models: engine.models() });
  client = await connect(address.wsUrl, { policy: JSON.stringify(policy), trustedRoots: { simulated: [attester.rootPem] } });
  gateway = await startGateway({ client });
  openai = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});

afterAll(async () => {
  await gateway.close();
  await client.close();
  await server.close();
  await engine.close();
  await standin.close();
});

afterEach(() => {
  standin.reset();
});

describe('gateway end to end with the real openai package', () => {
  it('the verified key config names the upstream engine', () => {
    expect(client.keyConfig.engine).toEqual({ kind: 'vllm', model: 'standin-model' });
  });

  it('streams a chat completion: tokens in order and complete', async () => {
    const stream = await openai.chat.completions.create({ model: 'llm', messages: [{ role: 'user', content: 'What is 2+2?' }], stream: true });
    const pieces: string[] = [];
    const finish: (string | null)[] = [];
    for await (const chunk of stream) {
      expect(chunk.model).toBe('llm');
      pieces.push(chunk.choices[0]?.delta.content ?? '');
      finish.push(chunk.choices[0]?.finish_reason ?? null);
    }
    expect(pieces.join('')).toBe(ANSWER);
    expect(pieces.slice(0, 3)).toEqual(['Hello', ',', ' world']);
    expect(finish.at(-1)).toBe('stop');
    // The engine saw its own model name, not the application's.
    expect(standin.requests.at(-1)?.body).toMatchObject({ model: 'standin-model', stream: true, messages: [{ role: 'user', content: 'What is 2+2?' }] });
  });

  it('answers a non-streamed chat completion, completions, embeddings and models', async () => {
    const completion = await openai.chat.completions.create({ model: 'llm', messages: [{ role: 'user', content: 'hi' }] });
    expect(completion.choices[0]?.message.content).toBe(ANSWER);

    const comp = await openai.completions.create({ model: 'llm', prompt: 'Say', stream: true });
    let text = '';
    for await (const c of comp) text += c.choices[0]?.text ?? '';
    expect(text).toBe(ANSWER);

    const emb = await openai.embeddings.create({ model: 'llm', input: ['the patient has a fever', 'quarterly revenue'] });
    expect(emb.data).toHaveLength(2);
    expect(emb.data[0]?.embedding).toHaveLength(64);

    const models = await openai.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['llm']);
  });

  it('an engine dying mid-stream surfaces as an error, never as a complete answer', async () => {
    standin.reset({ dieAfterEvents: 3 });
    const stream = await openai.chat.completions.create({ model: 'llm', messages: [{ role: 'user', content: 'x' }], stream: true }).catch((e: unknown) => e);
    if (stream instanceof Error) {
      // The failure arrived before the first chunk: an HTTP error.
      expect(stream).toBeInstanceOf(OpenAI.APIError);
      return;
    }
    const err = await (async () => {
      for await (const c of stream as AsyncIterable<unknown>) void c;
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect((err as InstanceType<typeof OpenAI.APIError>).code).toBe('ENGINE_FAILED');
  });

  it('raw SSE: an error event and no [DONE] after a failure; [DONE] after success', async () => {
    const post = (): Promise<Response> => fetch(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'llm', messages: [{ role: 'user', content: 'x' }], stream: true }),
    });
    const ok = await (await post()).text();
    expect(ok.endsWith('data: [DONE]\n\n')).toBe(true);
    expect(ok.split('\n\n').filter((e) => e.startsWith('data: {')).length).toBe(10);

    standin.reset({ omitDone: true });
    const res = await post();
    const text = await res.text();
    expect(text).not.toContain('[DONE]');
    if (res.status === 200) expect(text).toContain('event: error\ndata: {"error":{');
    else expect(JSON.parse(text)).toMatchObject({ error: { code: 'ENGINE_FAILED' } });
  });

  it('an application hanging up cancels the sealed request and the engine request', async () => {
    standin.reset({ tokenDelayMs: 20, tokens: Array.from({ length: 500 }, (_, i) => `t${i} `) });
    const ac = new AbortController();
    const res = await fetch(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'llm', messages: [{ role: 'user', content: 'x' }], stream: true }),
      signal: ac.signal,
    });
    const reader = res.body?.getReader();
    const first = await reader?.read();
    expect(first?.done).toBe(false);
    ac.abort();
    await standin.waitForEarlyClose(1);
    expect(standin.earlyCloses).toBe(1);
  });

  it('unknown models are a 404 from the server, through the SDK', async () => {
    const err = await openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
  });
});

describe('OpenAI-shaped facade over the sealed client', () => {
  it('chat (streamed and not), completions, embeddings and models', async () => {
    const ai = createOpenAIClient(client, { model: 'llm' });
    const stream = await ai.chat.completions.create({ messages: [{ role: 'user', content: 'x' }], stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    expect(text).toBe(ANSWER);

    const full = await ai.chat.completions.create({ messages: [{ role: 'user', content: 'x' }] });
    expect(full.choices[0]?.message.content).toBe(ANSWER);

    const comp = await ai.completions.create({ prompt: 'x' });
    expect(comp.choices[0]?.text).toBe(ANSWER);

    const emb = await ai.embeddings.create({ input: 'x' });
    expect(emb.data[0]?.embedding).toHaveLength(64);

    const models = await ai.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['llm']);
  });

  it('rejects create() when the request fails before the first chunk, and breaking cancels', async () => {
    const ai = createOpenAIClient(client);
    await expect(ai.chat.completions.create({ model: 'nope', messages: [], stream: true })).rejects.toMatchObject({ code: 'UNKNOWN_MODEL' });
    await expect(ai.chat.completions.create({ messages: [] })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });

    standin.reset({ tokenDelayMs: 20, tokens: Array.from({ length: 500 }, (_, i) => `t${i} `) });
    const stream = await ai.chat.completions.create({ model: 'llm', messages: [{ role: 'user', content: 'x' }], stream: true });
    for await (const c of stream) {
      void c;
      break;
    }
    expect(stream.controller.signal.aborted).toBe(true);
    await standin.waitForEarlyClose(1);
  });
});
