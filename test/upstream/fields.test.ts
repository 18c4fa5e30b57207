/**
 * The upstream engine forwards only allowed OpenAI fields (src/inference/upstream/fields.ts):
 * no multimodal part that makes the TEE fetch a URL, no engine extensions unless the
 * operator allows them. Checked against a stand-in engine that records what reached it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { UpstreamEngine } from '../../src/inference/upstream/engine.js';
import { checkUpstreamBody } from '../../src/inference/upstream/fields.js';
import { codeOf, codeOfAsync } from '../helpers/errors.js';

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
});

/** A stand-in OpenAI engine that records every body it receives and answers one chat completion. */
async function recordingEngine(): Promise<{ url: string; bodies: Record<string, unknown>[] }> {
  const bodies: Record<string, unknown>[] = [];
  const server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      if (parts.length > 0) bodies.push(JSON.parse(Buffer.concat(parts).toString('utf8')) as Record<string, unknown>);
      res.writeHead(200, { 'content-type': 'application/json' });
      if (req.method === 'GET') return void res.end(JSON.stringify({ object: 'list', data: [{ id: 'm', object: 'model' }] }));
      res.end(JSON.stringify({ id: 'x', object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }] }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  closers.push(() => new Promise<void>((r) => server.close(() => r())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, bodies };
}

async function run(engine: UpstreamEngine, input: Record<string, unknown>): Promise<unknown[]> {
  const out: unknown[] = [];
  for await (const r of engine.run({ op: 'chat', model: 'm', input, params: {}, stream: false }, { signal: new AbortController().signal })) out.push(r);
  return out;
}

describe('upstream field allow-list', () => {
  it('unknown fields and URL-fetching content parts never reach the engine', async () => {
    const e = await recordingEngine();
    const engine = new UpstreamEngine({ baseUrl: e.url, model: 'm', keepAliveTimeoutMs: 0 });
    closers.push(() => engine.close());
    await engine.start();
    const user = (content: unknown): Record<string, unknown> => ({ messages: [{ role: 'user', content }] });
    expect(await codeOfAsync(run(engine, { ...user('hi'), guided_grammar_path: '/etc/passwd' }))).toBe('INVALID_ARGUMENT');
    expect(await codeOfAsync(run(engine, user([{ type: 'image_url', image_url: { url: 'http://169.254.169.254/latest/meta-data/' } }])))).toBe('INVALID_ARGUMENT');
    expect(await codeOfAsync(run(engine, user([{ type: 'video_url', video_url: { url: 'https://internal.example/x.mp4' } }])))).toBe('INVALID_ARGUMENT');
    expect(await codeOfAsync(run(engine, user([{ type: 'file', file: { file_id: 'file-abc' } }])))).toBe('INVALID_ARGUMENT');
    expect(await codeOfAsync(run(engine, user([{ type: 'mystery' }])))).toBe('INVALID_ARGUMENT');
    expect(e.bodies).toHaveLength(0);
    // Allowed: text, inline media, standard sampling fields.
    await run(engine, { ...user([{ type: 'text', text: 'hi' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } }]), temperature: 0.5, max_tokens: 4, seed: 1 });
    expect(e.bodies).toHaveLength(1);
    expect(e.bodies[0]).toMatchObject({ model: 'm', temperature: 0.5, max_tokens: 4, seed: 1 });
  });

  it('allowFields lets an operator forward an engine extension, and rejects names that are not field names', async () => {
    const e = await recordingEngine();
    const engine = new UpstreamEngine({ baseUrl: e.url, model: 'm', keepAliveTimeoutMs: 0, allowFields: ['min_p'] });
    closers.push(() => engine.close());
    await engine.start();
    await run(engine, { messages: [{ role: 'user', content: 'hi' }], min_p: 0.1 });
    expect(e.bodies[0]).toMatchObject({ min_p: 0.1 });
    expect(codeOf(() => new UpstreamEngine({ baseUrl: e.url, model: 'm', allowFields: ['Bad Name'] }))).toBe('CONFIG_INVALID');
  });

  it('per operation: completions take prompt, embeddings take input, neither takes the other', () => {
    expect(codeOf(() => checkUpstreamBody('completion', { prompt: 'x', max_tokens: 3 }))).toBe('no-throw');
    expect(codeOf(() => checkUpstreamBody('completion', { messages: [] }))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => checkUpstreamBody('embeddings', { input: ['a'], encoding_format: 'float' }))).toBe('no-throw');
    expect(codeOf(() => checkUpstreamBody('embeddings', { prompt: 'x' }))).toBe('INVALID_ARGUMENT');
  });
});
