/**
 * The OpenAI surface on the demo models (issue 11, section 2), with the real `openai` package
 * against the gateway: /v1/embeddings on the ONNX feature-extraction model (string or array
 * input, float or base64), chat on the classifier refused with what the model is and offers,
 * an unknown model answered with the models on offer; and token classification through the
 * SDK and `cloister infer --op token-classify`, with the `serve --max-input-chars` limit.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { connect } from '../../src/client/client.js';
import type { CloisterClient } from '../../src/client/client.js';
import { startGateway } from '../../src/client/gateway/index.js';
import { createOpenAIClient } from '../../src/client/openai/index.js';
import type { Gateway } from '../../src/client/gateway/index.js';
import { buildDemoModels } from '../../tools/demo-model/build.js';
import { OnnxEngine } from '../../src/inference/onnx/engine.js';
import { run as infer } from '../../src/cli/commands/infer.js';
import { run as serve } from '../../src/cli/commands/serve.js';
import { codeOf, startTestServer } from '../e2e/helpers.js';
import type { TestServer } from '../e2e/helpers.js';
import { makeTagger } from '../helpers/tagger.js';

let dir: string;
let engine: OnnxEngine;
let t: TestServer;
let client: CloisterClient;
let gateway: Gateway;
let ai: OpenAI;
let taggerDir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cloister-onnx-openai-'));
  const built = await buildDemoModels({ outDir: join(dir, 'demo') });
  taggerDir = join(dir, 'tagger');
  await makeTagger(built.classifierDir, taggerDir);
  engine = new OnnxEngine({
    models: [
      { name: 'classifier', dir: built.classifierDir },
      { name: 'embedder', dir: built.embedderDir, task: 'feature-extraction' },
      { name: 'tagger', dir: taggerDir },
    ],
  });
  await engine.start();
  t = await startTestServer({ engines: [engine] });
  client = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
  gateway = await startGateway({ client });
  ai = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: 'unused', maxRetries: 0 });
}, 180_000);

afterAll(async () => {
  await gateway.close();
  await client.close();
  await t.close();
  await engine.close();
  await rm(dir, { recursive: true, force: true });
});

async function direct(input: string[]): Promise<number[][]> {
  const out: unknown[] = [];
  for await (const c of engine.run({ op: 'embed', model: 'embedder', input, params: {}, stream: false }, { signal: new AbortController().signal })) out.push(c);
  return out[0] as number[][];
}

async function apiError(p: Promise<unknown>): Promise<{ status: number; code: string; message: string }> {
  try {
    await p;
  } catch (err) {
    if (err instanceof OpenAI.APIError) return { status: err.status ?? 0, code: String(err.code), message: err.message };
    throw err;
  }
  throw new Error('no error');
}

describe('gateway /v1/embeddings on the ONNX feature-extraction model (openai package)', () => {
  it('a string input returns one vector (the package asks for base64 and decodes it)', async () => {
    const res = await ai.embeddings.create({ model: 'embedder', input: 'x' });
    const [want] = await direct(['x']);
    expect(res.object).toBe('list');
    expect(res.model).toBe('embedder');
    expect(res.data).toHaveLength(1);
    expect(res.data[0]?.index).toBe(0);
    expect(res.data[0]?.embedding).toEqual(want?.map((v) => Math.fround(v)));
  });

  it('an array input with encoding_format float returns the vectors in order, as numbers', async () => {
    const input = ['chest pain', 'tumor markers decreasing', 'headache'];
    const res = await ai.embeddings.create({ model: 'embedder', input, encoding_format: 'float' });
    expect(res.data.map((d) => d.index)).toEqual([0, 1, 2]);
    expect(res.data.map((d) => d.embedding)).toEqual(await direct(input));
  });

  it('encoding_format base64 is little-endian float32, as OpenAI defines it', async () => {
    const r = await fetch(`${gateway.url}/v1/embeddings`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'embedder', input: 'x', encoding_format: 'base64' }),
    });
    const body = (await r.json()) as { data: { embedding: string }[] };
    const bytes = Buffer.from(body.data[0]?.embedding ?? '', 'base64');
    const [want] = await direct(['x']);
    const got = Array.from({ length: bytes.length / 4 }, (_, i) => bytes.readFloatLE(i * 4));
    expect(got).toEqual(want?.map((v) => Math.fround(v)));
  });

  it('the in-process facade (createOpenAIClient) answers the same on the ONNX embedder', async () => {
    const facade = createOpenAIClient(client);
    const res = await facade.embeddings.create({ model: 'embedder', input: ['chest pain', 'headache'] });
    expect(res.data.map((d) => d.embedding)).toEqual(await direct(['chest pain', 'headache']));
  });

  it('refuses token-id inputs, empty inputs and unknown encodings with 400', async () => {
    expect((await apiError(ai.embeddings.create({ model: 'embedder', input: [[1, 2, 3]] }))).status).toBe(400);
    expect((await apiError(ai.embeddings.create({ model: 'embedder', input: '' }))).status).toBe(400);
    expect((await apiError(ai.embeddings.create({ model: 'embedder', input: 'x', encoding_format: 'int8' as 'float' }))).status).toBe(400);
  });
});

describe('coded errors that say what the server offers', () => {
  it('chat on the classifier: UNKNOWN_OPERATION saying what the model is and what chat needs', async () => {
    const e = await apiError(ai.chat.completions.create({ model: 'classifier', messages: [{ role: 'user', content: 'hi' }] }));
    expect(e.status).toBe(404);
    expect(e.code).toBe('UNKNOWN_OPERATION');
    expect(e.message).toContain("model 'classifier' is text-classification");
    expect(e.message).toContain('chat needs a generative model or an --upstream engine');
  });

  it('completions on the embedder: the same, naming the embedder', async () => {
    const e = await apiError(ai.completions.create({ model: 'embedder', prompt: 'hi' }));
    expect(e.code).toBe('UNKNOWN_OPERATION');
    expect(e.message).toContain("model 'embedder' is feature-extraction and offers embed");
  });

  it('an unknown model: UNKNOWN_MODEL listing the models served (not echoing the name asked for)', async () => {
    const e = await apiError(ai.chat.completions.create({ model: 'nosuch-secret-name', messages: [{ role: 'user', content: 'hi' }] }));
    expect(e.code).toBe('UNKNOWN_MODEL');
    expect(e.message).toContain('classifier (text-classification), embedder (feature-extraction), tagger (token-classification)');
    expect(e.message).not.toContain('nosuch-secret-name');
  });

  it('an input over maxInputChars: LIMIT_EXCEEDED naming the limit and its value (SDK)', async () => {
    let err: unknown;
    await client.classify('a'.repeat(16_385)).catch((e: unknown) => {
      err = e;
    });
    expect(err).toMatchObject({ code: 'LIMIT_EXCEEDED' });
    expect((err as Error).message).toContain('maxInputChars (16384');
  });

  it('empty text and a lone surrogate are refused by the SDK before sending', async () => {
    const before = t.server.stats.sealedRequestsReceived;
    expect(await codeOf(client.classify(''))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(client.classify('ab\ud800c'))).toBe('INVALID_ARGUMENT');
    expect(t.server.stats.sealedRequestsReceived).toBe(before);
  });

  it('an empty text that reaches the server (another client) is refused there, not classified', async () => {
    const out = codeOf(async () => {
      for await (const c of client.request({ op: 'classify', model: 'classifier', input: '' })) void c;
    });
    expect(await out).toBe('INVALID_ARGUMENT');
  });
});

describe('token classification from the SDK and the command line', () => {
  it('classifyTokens tags the ECG token', async () => {
    const entities = await client.classifyTokens('The ECG was normal');
    expect(entities.some((e) => e.entity === 'TEST' && e.word === 'ecg')).toBe(true);
  });

  it('cloister serve --max-input-chars, and cloister infer --op token-classify up to that limit', async () => {
    const state = join(dir, 'state');
    const lines: string[] = [];
    const spy = vi.spyOn(console, 'log').mockImplementation((s: unknown) => void lines.push(String(s)));
    let exit: Promise<number> | undefined;
    try {
      exit = serve(['--model', `tagger=${taggerDir}`, '--max-input-chars', '20', '--listen', '127.0.0.1:0', '--platform', 'simulated', '--state-dir', state, '--log-level', 'error']);
      for (let i = 0; i < 1000 && !lines.some((l) => /websocket:/.test(l)); i++) await new Promise((r) => setTimeout(r, 10));
      const url = /websocket:\s+(\S+)/.exec(lines.join('\n'))?.[1] ?? '';
      expect(url).not.toBe('');
      lines.length = 0;
      const policy = join(state, 'policy.json');
      expect(await infer(['--url', url, '--policy', policy, '--op', 'token-classify', '--text', 'The ECG was normal'])).toBe(0);
      expect(lines.join('\n')).toMatch(/\tTEST\t[0-9.]+\tecg/);
      // 21 characters: over the limit, named with its value.
      let err: unknown;
      await infer(['--url', url, '--policy', policy, '--op', 'token-classify', '--text', 'The ECG was normal!!!']).catch((e: unknown) => {
        err = e;
      });
      expect(err).toMatchObject({ code: 'LIMIT_EXCEEDED' });
      expect((err as Error).message).toContain('maxInputChars (20');
      // Empty text and a file that is not UTF-8: refused before connecting.
      expect(await codeOf(infer(['--url', url, '--policy', policy, '--text', '']))).toBe('INVALID_ARGUMENT');
      const bad = join(dir, 'latin1.txt');
      await writeFile(bad, Buffer.from([0x63, 0x61, 0x66, 0xe9]));
      expect(await codeOf(infer(['--url', url, '--policy', policy, '--file', bad]))).toBe('INVALID_ARGUMENT');
    } finally {
      spy.mockRestore();
      process.emit('SIGTERM');
      if (exit !== undefined) expect(await exit).toBe(0);
    }
  }, 60_000);
});
