/**
 * The GGUF of the bench's random llama is the same model as its ONNX graph: llama.cpp
 * (node-llama-cpp) and the ONNX generation engine give the same greedy continuation of the
 * same token ids. A wrong layout (an untransposed weight, a missing RoPE permutation, another
 * seed order) changes the logits and the tokens.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { getLlama, LlamaLogLevel, type Token } from 'node-llama-cpp';
import { afterAll, describe, expect, it } from 'vitest';

import { GenerationEngine } from '../../src/inference/generation/engine.js';
import { writeRandomLlama } from '../../bench/lib/random-llama.js';
import { writeRandomLlamaGguf } from '../../bench/lib/random-llama-gguf.js';
import { CLS_ID, SEP_ID, SPECIAL_TOKENS } from '../../tools/demo-model/tokenizer.js';

describe('random llama as GGUF (bench:generate llama.cpp anchor)', () => {
  let root = '';
  afterAll(async () => {
    if (root !== '') await rm(root, { recursive: true, force: true });
  });

  it('llama.cpp and the ONNX engine continue the same prompt with the same greedy tokens', async () => {
    root = await mkdtemp(join(tmpdir(), 'cloister-gguf-'));
    const shape = { hidden: 64, layers: 3, heads: 4, kvHeads: 2, intermediate: 96, vocab: 600, maxPositions: 512 };
    const dir = join(root, 'onnx-model');
    const gguf = join(root, 'model.gguf');
    await writeRandomLlama(dir, shape, 0.3);
    await writeRandomLlamaGguf(gguf, shape, 1, 0.3);
    const words = [1, 7, 42, 3, 99, 250];
    const n = 16;

    const engine = new GenerationEngine({ models: [{ name: 'tiny', dir }], intraOpNumThreads: 1 });
    await engine.start();
    let text = '';
    try {
      const request = { op: 'completion' as const, prompt: words.map((w) => `w${w}`).join(' '), maxTokens: n, temperature: 0, topP: undefined, topK: undefined, seed: undefined, stop: [], presencePenalty: 0, frequencyPenalty: 0, includeUsage: false };
      for await (const e of engine.generate('tiny', request, new AbortController().signal)) if (e.kind === 'text') text += e.text;
    } finally {
      await engine.close();
    }
    const onnxWords = text.split(/\s+/).filter((w) => w !== '');

    const llama = await getLlama({ gpu: false, build: 'never', progressLogs: false, logLevel: LlamaLogLevel.error });
    const llamaWords: string[] = [];
    try {
      const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
      const context = await model.createContext({ contextSize: 128, sequences: 1, threads: 1 });
      const ids = [CLS_ID, ...words.map((w) => SPECIAL_TOKENS.length + w), SEP_ID] as Token[];
      for await (const t of context.getSequence().evaluate(ids, { temperature: 0 })) {
        if (t === SEP_ID) break;
        llamaWords.push(t >= SPECIAL_TOKENS.length ? `w${t - SPECIAL_TOKENS.length}` : `<${t}>`);
        if (llamaWords.length >= n) break;
      }
    } finally {
      await llama.dispose();
    }
    expect(onnxWords.length).toBe(n);
    expect(llamaWords).toEqual(onnxWords);
    // Not a degenerate continuation (one token repeated), which a broken model could also agree on.
    expect(new Set(onnxWords).size).toBeGreaterThan(3);
  }, 120_000);
});
