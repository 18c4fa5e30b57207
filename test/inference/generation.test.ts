/**
 * The CPU generation engine (issue 12) on demo-lm: KV-cache decoding against a no-cache
 * reference run step by step with ONNX Runtime directly, seeded sampling, stop sequences,
 * max_tokens, cancel, deadline, the queue and the KV-cache bound, and model directories that
 * are missing a file or disagree with their config.
 */
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { CloisterError } from '../../src/errors.js';
import { buildDemoModels } from '../../tools/demo-model/build.js';
import { modelDigest } from '../../src/inference/onnx/digest.js';
import { loadTransformers } from '../../src/inference/onnx/transformers-env.js';
import { GenerationEngine, type GenerationEngineOptions } from '../../src/inference/generation/engine.js';
import type { EngineRequest } from '../../src/inference/types.js';
import { writeRandomLlama } from '../../bench/lib/random-llama.js';

let root: string;
let lmDir: string;
let engine: GenerationEngine;

const PROMPT = 'Chest pain radiating to the left arm';

function completion(input: Record<string, unknown>, stream = false): EngineRequest {
  return { op: 'completion', model: 'demo-lm', input: { prompt: PROMPT, ...input }, params: {}, stream };
}

async function collect(e: GenerationEngine, request: EngineRequest, signal: AbortSignal = new AbortController().signal): Promise<Record<string, unknown>[]> {
  const out: Record<string, unknown>[] = [];
  for await (const c of e.run(request, { signal })) out.push(c as Record<string, unknown>);
  return out;
}

interface Answer {
  text: string;
  finish: string;
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}

async function answer(e: GenerationEngine, input: Record<string, unknown>): Promise<Answer> {
  const chunks = await collect(e, completion(input));
  expect(chunks).toHaveLength(1);
  const c = chunks[0] as { choices: { text: string; finish_reason: string }[]; usage: Answer['usage'] };
  return { text: c.choices[0]?.text ?? '', finish: c.choices[0]?.finish_reason ?? '', usage: c.usage };
}

async function codeOf(p: Promise<unknown>): Promise<CloisterError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CloisterError) return err;
    throw err;
  }
  throw new Error('expected an error');
}

/** An engine on demo-lm; streams send every piece at once (one chunk per token) unless `options` say otherwise. */
async function newEngine(options: Partial<GenerationEngineOptions> = {}, dir = lmDir): Promise<GenerationEngine> {
  const e = new GenerationEngine({ models: [{ name: 'demo-lm', dir }], streamCoalesceMs: 0, ...options });
  await e.start();
  return e;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'cloister-generation-'));
  const built = await buildDemoModels({ outDir: join(root, 'demo') });
  lmDir = built.lmDir;
  engine = await newEngine();
}, 120_000);

afterAll(async () => {
  await engine?.close();
  await rm(root, { recursive: true, force: true });
});

describe('demo-lm in the HF layout', () => {
  it('serves chat and completion under its directory digest', async () => {
    const [info] = engine.models();
    expect(info?.name).toBe('demo-lm');
    expect(info?.task).toBe('text-generation');
    expect(info?.operations).toEqual(['chat', 'completion']);
    expect(Buffer.from(info?.digest ?? []).equals(Buffer.from(await modelDigest(lmDir)))).toBe(true);
  });

  it('is written in the HF layout and rebuilds to the same bytes', async () => {
    const again = await buildDemoModels({ outDir: join(root, 'again') });
    const files = ['config.json', 'generation_config.json', 'onnx/model.onnx', 'tokenizer.json', 'tokenizer_config.json', 'training.json'];
    for (const f of files) expect((await readFile(join(again.lmDir, f))).equals(await readFile(join(lmDir, f)))).toBe(true);
    expect(Buffer.from(await modelDigest(again.lmDir)).equals(Buffer.from(await modelDigest(lmDir)))).toBe(true);
    const config = JSON.parse(await readFile(join(lmDir, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(config['architectures']).toEqual(['LlamaForCausalLM']);
    const tokConfig = JSON.parse(await readFile(join(lmDir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    expect(typeof tokConfig['chat_template']).toBe('string');
  });

  it('speaks the notes\' words', async () => {
    const a = await answer(engine, { max_tokens: 24, temperature: 0 });
    expect(a.text.length).toBeGreaterThan(10);
    const notes = await readFile(new URL('../../data/clinical-notes.jsonl', import.meta.url), 'utf8');
    const words = a.text.toLowerCase().match(/[a-z]{4,}/g) ?? [];
    expect(words.length).toBeGreaterThan(2);
    for (const w of words) expect(notes.toLowerCase()).toContain(w);
  });
});

describe('decoding', () => {
  it('greedy decoding with the KV cache equals a no-cache reference run step by step', async () => {
    const n = 30;
    const got = await answer(engine, { max_tokens: n, temperature: 0 });
    // Reference: ONNX Runtime directly, the whole sequence every step, empty past.
    const mod = await loadTransformers(root);
    const tok = await mod.AutoTokenizer.from_pretrained(lmDir, { local_files_only: true });
    const session = await ort.InferenceSession.create(join(lmDir, 'onnx', 'model.onnx'));
    const config = JSON.parse(await readFile(join(lmDir, 'config.json'), 'utf8')) as { head_dim: number; eos_token_id: number };
    const ids = tok.encode(PROMPT);
    const promptLen = ids.length;
    const empty = new ort.Tensor('float32', new Float32Array(0), [1, 1, 0, config.head_dim]);
    for (let step = 0; step < n; step++) {
      const len = ids.length;
      const out = await session.run({
        input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, (x) => BigInt(x)), [1, len]),
        attention_mask: new ort.Tensor('int64', new BigInt64Array(len).fill(1n), [1, len]),
        position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: len }, (_, i) => BigInt(i)), [1, len]),
        'past_key_values.0.key': empty,
        'past_key_values.0.value': empty,
      });
      const logits = out['logits']?.data as Float32Array;
      const v = logits.length / len;
      let best = 0;
      for (let i = 1; i < v; i++) if ((logits[(len - 1) * v + i] as number) > (logits[(len - 1) * v + best] as number)) best = i;
      if (best === config.eos_token_id) break;
      ids.push(best);
    }
    await session.release();
    // The answer is what the generated tokens add to the prompt's text (with its leading space).
    const promptText = tok.decode(ids.slice(0, promptLen), { skip_special_tokens: true });
    const want = tok.decode(ids, { skip_special_tokens: true }).slice(promptText.length);
    expect(want.length).toBeGreaterThan(10);
    expect(got.text).toBe(want);
    expect(got.usage.completion_tokens).toBe(ids.length - promptLen);
  });

  it('the same holds on a llama-architecture model (RMSNorm, RoPE, grouped-query attention, SwiGLU)', async () => {
    const dir = join(root, 'tiny-llama');
    const shape = { hidden: 64, layers: 3, heads: 4, kvHeads: 2, intermediate: 96, vocab: 300, maxPositions: 512 };
    await writeRandomLlama(dir, shape, 0.3);
    const e = new GenerationEngine({ models: [{ name: 'tiny', dir }] });
    await e.start();
    const prompt = 'w1 w7 w42 w3 w99';
    const n = 24;
    let got = '';
    try {
      for await (const c of e.run({ op: 'completion', model: 'tiny', input: { prompt, max_tokens: n, temperature: 0 }, params: {}, stream: false }, { signal: new AbortController().signal })) {
        got = (c as { choices: { text: string }[] }).choices[0]?.text ?? '';
      }
    } finally {
      await e.close();
    }
    const mod = await loadTransformers(root);
    const tok = await mod.AutoTokenizer.from_pretrained(dir, { local_files_only: true });
    const session = await ort.InferenceSession.create(join(dir, 'onnx', 'model.onnx'));
    const ids = tok.encode(prompt);
    const promptLen = ids.length;
    const d = shape.hidden / shape.heads;
    for (let step = 0; step < n; step++) {
      const len = ids.length;
      const feeds: Record<string, ort.Tensor> = {
        input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, (x) => BigInt(x)), [1, len]),
        attention_mask: new ort.Tensor('int64', new BigInt64Array(len).fill(1n), [1, len]),
        position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: len }, (_, i) => BigInt(i)), [1, len]),
      };
      for (let l = 0; l < shape.layers; l++) {
        for (const kind of ['key', 'value']) feeds[`past_key_values.${l}.${kind}`] = new ort.Tensor('float32', new Float32Array(0), [1, shape.kvHeads, 0, d]);
      }
      const logits = (await session.run(feeds))['logits']?.data as Float32Array;
      let best = 0;
      for (let i = 1; i < shape.vocab; i++) if ((logits[(len - 1) * shape.vocab + i] as number) > (logits[(len - 1) * shape.vocab + best] as number)) best = i;
      if (best === 3) break; // [SEP], the end token
      ids.push(best);
    }
    await session.release();
    const promptText = tok.decode(ids.slice(0, promptLen), { skip_special_tokens: true });
    const want = tok.decode(ids, { skip_special_tokens: true }).slice(promptText.length);
    expect(want.split(' ').length).toBeGreaterThan(5);
    expect(got).toBe(want);
  });

  it('seeded sampling is reproducible; other seeds give other text', async () => {
    const params = { max_tokens: 30, temperature: 1, top_p: 0.95, top_k: 50 };
    const a = await answer(engine, { ...params, seed: 7 });
    const b = await answer(engine, { ...params, seed: 7 });
    expect(b.text).toBe(a.text);
    const others = await Promise.all([8, 9, 10].map((seed) => answer(engine, { ...params, seed })));
    expect(others.some((o) => o.text !== a.text)).toBe(true);
  });

  it('a stop sequence cuts the answer before it, finish_reason stop', async () => {
    const full = await answer(engine, { max_tokens: 30, temperature: 0 });
    const words = full.text.split(' ');
    const stopWord = words[Math.floor(words.length / 2)] ?? '';
    expect(stopWord.length).toBeGreaterThan(0);
    const at = full.text.indexOf(stopWord);
    const cut = await answer(engine, { max_tokens: 30, temperature: 0, stop: ['zzz-never', stopWord] });
    expect(cut.text).toBe(full.text.slice(0, at));
    expect(cut.finish).toBe('stop');
    // Streaming gives the same text, held back until it cannot be a stop sequence.
    const chunks = await collect(engine, completion({ max_tokens: 30, temperature: 0, stop: [stopWord] }, true));
    const streamed = chunks.map((c) => (c['choices'] as { text: string }[])[0]?.text ?? '').join('');
    expect(streamed).toBe(full.text.slice(0, at));
  });

  it('max_tokens ends the answer with finish_reason length and counts usage', async () => {
    const a = await answer(engine, { max_tokens: 3, temperature: 0 });
    expect(a.finish).toBe('length');
    expect(a.usage.completion_tokens).toBe(3);
    expect(a.usage.total_tokens).toBe(a.usage.prompt_tokens + 3);
  });

  it('frequency and presence penalties change greedy output away from repeats', async () => {
    const plain = await answer(engine, { max_tokens: 60, temperature: 0 });
    const penal = await answer(engine, { max_tokens: 60, temperature: 0, frequency_penalty: 2, presence_penalty: 2 });
    expect(penal.text).not.toBe(plain.text);
    const distinct = (t: string): number => new Set(t.split(' ')).size / Math.max(1, t.split(' ').length);
    expect(distinct(penal.text)).toBeGreaterThanOrEqual(distinct(plain.text));
  });

  it('chat applies the model\'s chat template inside the engine and streams deltas', async () => {
    const input = { messages: [{ role: 'system', content: 'ignored by this template' }, { role: 'user', content: PROMPT }], max_tokens: 10, temperature: 0, stream_options: { include_usage: true } };
    const chunks = await collect(engine, { op: 'chat', model: 'demo-lm', input, params: {}, stream: true });
    expect((chunks[0]?.['choices'] as { delta: unknown }[])[0]?.delta).toEqual({ role: 'assistant', content: '' });
    const usage = chunks.at(-1)?.['usage'] as { prompt_tokens: number };
    // The template: BOS, the user text, a space; the system message dropped.
    const mod = await loadTransformers(root);
    const tok = await mod.AutoTokenizer.from_pretrained(lmDir, { local_files_only: true });
    expect(usage.prompt_tokens).toBe(tok.encode(PROMPT).length);
    const text = chunks.map((c) => ((c['choices'] as { delta?: { content?: string } }[])[0]?.delta?.content ?? '')).join('');
    const plain = await answer(engine, { max_tokens: 10, temperature: 0 });
    expect(text).toBe(plain.text.trimStart());
  });

  it('a stream sends its first text at once and coalesces what follows within streamCoalesceMs', async () => {
    const request = completion({ max_tokens: 24, temperature: 0, stream_options: { include_usage: true } }, true);
    const texts = (chunks: Record<string, unknown>[]): string[] =>
      chunks.map((c) => (c['choices'] as { text?: string }[] | undefined)?.[0]?.text ?? '').filter((t) => t !== '');
    // The engine's own pieces (one per token, less any held for an unfinished character).
    const pieces: string[] = [];
    const req = { op: 'completion' as const, prompt: PROMPT, maxTokens: 24, temperature: 0, topP: undefined, topK: undefined, seed: undefined, stop: [], presencePenalty: 0, frequencyPenalty: 0, includeUsage: true };
    for await (const ev of engine.generate('demo-lm', req, new AbortController().signal)) if (ev.kind === 'text') pieces.push(ev.text);
    expect(pieces.length).toBeGreaterThan(2);
    const each = await newEngine({ streamCoalesceMs: 0 });
    const held = await newEngine({ streamCoalesceMs: 10_000 });
    try {
      expect(texts(await collect(each, request))).toEqual(pieces);
      const chunks = await collect(held, request);
      // The first piece alone, then everything produced within 10 s in one chunk,
      // before the finish_reason chunk and usage.
      expect(texts(chunks)).toEqual([pieces[0], pieces.slice(1).join('')]);
      expect((chunks.at(-2)?.['choices'] as { finish_reason: string }[])[0]?.finish_reason).toBe('length');
      expect((chunks.at(-1)?.['usage'] as { completion_tokens: number }).completion_tokens).toBe(24);
    } finally {
      await each.close();
      await held.close();
    }
    expect(() => new GenerationEngine({ models: [{ name: 'x', dir: lmDir }], streamCoalesceMs: -1 })).toThrow(/streamCoalesceMs/);
  });

  it('refuses unknown fields and out-of-range values by name', async () => {
    const e1 = await codeOf(collect(engine, completion({ logit_bias: { 1: 2 } })));
    expect(e1.code).toBe('INVALID_ARGUMENT');
    const e2 = await codeOf(collect(engine, completion({ temperature: 3 })));
    expect(e2.message).toContain('temperature');
  });
});

describe('limits', () => {
  it('cancel stops the compute within one step', async () => {
    const ac = new AbortController();
    const it = engine.run(completion({ max_tokens: 2000, temperature: 0, stop: [] }, true), { signal: ac.signal })[Symbol.asyncIterator]();
    await it.next();
    await it.next();
    ac.abort();
    const stepsAtAbort = engine.stats().steps;
    const err = await codeOf(it.next());
    expect(err.code).toBe('CANCELLED');
    await new Promise((r) => setTimeout(r, 50));
    expect(engine.stats().steps - stepsAtAbort).toBeLessThanOrEqual(1);
    expect(engine.stats().active).toBe(0);
  });

  it('a consumer that stops reading a stream ends the generation and frees its slot', async () => {
    const it = engine.run(completion({ max_tokens: 200, temperature: 0 }, true), { signal: new AbortController().signal })[Symbol.asyncIterator]();
    await it.next();
    await it.next();
    expect(engine.stats().active).toBe(1);
    await it.return?.(undefined);
    expect(engine.stats().active).toBe(0);
  });

  it('a refusal comes before any chunk of a stream', async () => {
    const it = engine.run(completion({ max_tokens: 100_000 }, true), { signal: new AbortController().signal })[Symbol.asyncIterator]();
    expect((await codeOf(it.next())).code).toBe('LIMIT_EXCEEDED');
    const chat = engine.run({ op: 'chat', model: 'demo-lm', input: { messages: [{ role: 'user', content: 'x' }], max_tokens: 100_000 }, params: {}, stream: true }, { signal: new AbortController().signal });
    expect((await codeOf(chat[Symbol.asyncIterator]().next())).code).toBe('LIMIT_EXCEEDED');
  });

  it('a deadline (an aborting signal) ends a long generation', async () => {
    // demo-lm with an end token it never generates ([PAD]): only max_tokens or the deadline ends it.
    const dir = join(root, 'endless');
    await cp(lmDir, dir, { recursive: true });
    for (const f of ['config.json', 'generation_config.json']) {
      const c = JSON.parse(await readFile(join(dir, f), 'utf8')) as Record<string, unknown>;
      await writeFile(join(dir, f), JSON.stringify({ ...c, eos_token_id: 0 }));
    }
    const e = await newEngine({}, dir);
    try {
      const err = await codeOf(collect(e, completion({ max_tokens: 2000, temperature: 1, seed: 1 }, true), AbortSignal.timeout(30)));
      expect(err.code).toBe('CANCELLED');
      expect(e.stats().active).toBe(0);
      expect(e.stats().steps).toBeLessThan(2000);
    } finally {
      await e.close();
    }
  });

  it('the queue is bounded: OVERLOADED names maxQueueDepth', async () => {
    const e = await newEngine({ maxActiveGenerations: 1, maxQueueDepth: 1 });
    try {
      const ac = new AbortController();
      const a = e.run(completion({ max_tokens: 2000 }, true), { signal: ac.signal })[Symbol.asyncIterator]();
      await a.next();
      const b = collect(e, completion({ max_tokens: 2 }), ac.signal);
      await new Promise((r) => setTimeout(r, 10));
      expect(e.stats().queued).toBe(1);
      const err = await codeOf(collect(e, completion({ max_tokens: 2 })));
      expect(err.code).toBe('OVERLOADED');
      expect(err.message).toContain('maxQueueDepth');
      ac.abort();
      await codeOf(a.next());
      expect((await codeOf(b)).code).toBe('CANCELLED');
    } finally {
      await e.close();
    }
  });

  it('the KV cache bound: prompt + max_tokens beyond maxKvTokens is LIMIT_EXCEEDED naming it', async () => {
    const e = await newEngine({ maxKvTokens: 12 });
    try {
      const err = await codeOf(collect(e, completion({ max_tokens: 10 })));
      expect(err.code).toBe('LIMIT_EXCEEDED');
      expect(err.message).toContain('maxKvTokens (12 tokens');
      expect(err.message).toMatch(/MiB per generation/);
      // Without max_tokens the answer stops at the bound.
      const ok = await answer(e, { max_tokens: 2, temperature: 0 });
      expect(ok.usage.total_tokens).toBeLessThanOrEqual(12);
      const open = await collect(e, { op: 'completion', model: 'demo-lm', input: { prompt: 'chest', temperature: 0, frequency_penalty: 2 }, params: {}, stream: false });
      const usage = open[0]?.['usage'] as { total_tokens: number };
      expect(usage.total_tokens).toBeLessThanOrEqual(12);
    } finally {
      await e.close();
    }
  });

  it('prompt text, messages and stop sequences are bounded by name', async () => {
    const e = await newEngine({ maxInputChars: 20, maxMessages: 2 });
    try {
      const long = await codeOf(collect(e, completion({ prompt: 'x'.repeat(21) })));
      expect(long.code).toBe('LIMIT_EXCEEDED');
      expect(long.message).toContain('maxInputChars (20');
      const msgs = [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: 'c' }];
      const many = await codeOf(collect(e, { op: 'chat', model: 'demo-lm', input: { messages: msgs }, params: {}, stream: false }));
      expect(many.code).toBe('LIMIT_EXCEEDED');
      expect(many.message).toContain('maxMessages (2)');
      const stops = await codeOf(collect(e, completion({ prompt: 'chest', stop: ['a', 'b', 'c', 'd', 'e'] })));
      expect(stops.code).toBe('INVALID_ARGUMENT');
      expect(stops.message).toContain('at most 4');
    } finally {
      await e.close();
    }
  });

  it('a prompt prefilled in chunks gives the same answer as in one step', async () => {
    const e = await newEngine({ prefillChunkTokens: 2 });
    try {
      const stepsBefore = e.stats().steps;
      const chunked = await answer(e, { max_tokens: 20, temperature: 0 });
      // 4 prompt chunks of at most 2 tokens for the 8-token prompt, then one step per token after the first.
      expect(e.stats().steps - stepsBefore).toBe(Math.ceil(chunked.usage.prompt_tokens / 2) + chunked.usage.completion_tokens - (chunked.finish === 'length' ? 1 : 0));
      expect(chunked.text).toBe((await answer(engine, { max_tokens: 20, temperature: 0 })).text);
    } finally {
      await e.close();
    }
  });

  it('max_tokens above maxNewTokens is LIMIT_EXCEEDED naming it', async () => {
    const err = await codeOf(collect(engine, completion({ max_tokens: 100_000 })));
    expect(err.code).toBe('LIMIT_EXCEEDED');
    expect(err.message).toContain('maxNewTokens');
  });
});

describe('model directories', () => {
  async function broken(name: string, change: (dir: string) => Promise<void>): Promise<string> {
    const dir = join(root, name);
    await cp(lmDir, dir, { recursive: true });
    await change(dir);
    return dir;
  }

  async function startError(dir: string, options: Partial<GenerationEngineOptions> = {}, dtype?: 'q8' | 'q4'): Promise<CloisterError> {
    const e = new GenerationEngine({ models: [{ name: 'broken', dir, ...(dtype === undefined ? {} : { dtype }) }], ...options });
    return codeOf(e.start());
  }

  it('a missing tokenizer.json is named', async () => {
    const dir = await broken('no-tokenizer', (d) => rm(join(d, 'tokenizer.json')));
    const err = await startError(dir);
    expect(err.code).toBe('NOT_FOUND');
    expect(err.message).toContain('tokenizer.json');
  });

  it('the dtype flag picks the file, and a missing variant is named', async () => {
    const err = await startError(lmDir, {}, 'q8');
    expect(err.code).toBe('NOT_FOUND');
    expect(err.message).toContain('onnx/model_quantized.onnx');
    const q4 = await broken('q4', async (d) => {
      await cp(join(d, 'onnx', 'model.onnx'), join(d, 'onnx', 'model_q4.onnx'));
      await rm(join(d, 'onnx', 'model.onnx'));
    });
    const e = new GenerationEngine({ models: [{ name: 'demo-lm', dir: q4, dtype: 'q4' }] });
    await e.start();
    try {
      const chunks = await collect(e, completion({ max_tokens: 5, temperature: 0 }));
      expect(chunks).toHaveLength(1);
    } finally {
      await e.close();
    }
  });

  it('a layer count that disagrees with the graph names config.json', async () => {
    const dir = await broken('layers', async (d) => {
      const c = JSON.parse(await readFile(join(d, 'config.json'), 'utf8')) as Record<string, unknown>;
      await writeFile(join(d, 'config.json'), JSON.stringify({ ...c, num_hidden_layers: 2 }));
    });
    const err = await startError(dir);
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain('config.json');
    expect(err.message).toContain('num_hidden_layers');
  });

  it('a vocabulary size that disagrees with the logits names config.json', async () => {
    const dir = await broken('vocab', async (d) => {
      const c = JSON.parse(await readFile(join(d, 'config.json'), 'utf8')) as Record<string, unknown>;
      await writeFile(join(d, 'config.json'), JSON.stringify({ ...c, vocab_size: (c['vocab_size'] as number) + 7 }));
    });
    const err = await startError(dir);
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain('config.json vocab_size');
  });

  it('a malformed generation_config.json is named', async () => {
    const dir = await broken('genconfig', (d) => writeFile(join(d, 'generation_config.json'), '{not json'));
    const err = await startError(dir);
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain('generation_config.json');
  });
});
