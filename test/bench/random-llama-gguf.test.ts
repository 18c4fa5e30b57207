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
import { quantizeQ8_0, writeRandomLlamaGguf } from '../../bench/lib/random-llama-gguf.js';
import { CLS_ID, SEP_ID, SPECIAL_TOKENS } from '../../tools/demo-model/tokenizer.js';

describe('random llama as GGUF (bench:generate llama.cpp anchor)', () => {
  let root = '';
  afterAll(async () => {
    if (root !== '') await rm(root, { recursive: true, force: true });
  });

  it('Q8_0 blocks are ggml\'s block_q8_0: an fp16 scale max|x| / 127, then 32 rounded int8', () => {
    const x = new Float32Array(64);
    x[0] = 127;
    x[1] = -63.5;
    x[2] = 0.49;
    x[31] = -127;
    for (let i = 32; i < 64; i++) x[i] = (i - 32) / 1024;
    const b = quantizeQ8_0(x);
    expect(b.length).toBe(68);
    expect(b.readUInt16LE(0)).toBe(0x3c00); // d = 1.0
    // roundf: -63.5 rounds away from zero.
    expect([b.readInt8(2), b.readInt8(3), b.readInt8(4), b.readInt8(33)]).toEqual([127, -64, 0, -127]);
    // Second block: max 31/1024, d = 31/1024/127 as fp16 (0x0bd0: exponent -13, mantissa 976, as numpy's float16 gives), q = round(x / d).
    const d = 31 / 1024 / 127;
    expect(b.readUInt16LE(34)).toBe(0x0bd0);
    for (let i = 0; i < 32; i++) expect(b.readInt8(36 + i)).toBe(Math.round(i / 1024 / d));
    expect(() => quantizeQ8_0(new Float32Array(33))).toThrow(/multiple of 32/);
  });

  for (const v of [{ dtype: 'fp32', gguf: 'f32', agree: 16 }, { dtype: 'q8', gguf: 'q8_0', agree: 8 }] as const) {
    it(`llama.cpp (${v.gguf}) and the ONNX engine (${v.dtype}) continue the same prompt with the same greedy tokens`, async () => {
      root = root === '' ? await mkdtemp(join(tmpdir(), 'cloister-gguf-')) : root;
      const shape = { hidden: 64, layers: 3, heads: 4, kvHeads: 2, intermediate: 96, vocab: 600, maxPositions: 512 };
      const dir = join(root, `onnx-model-${v.dtype}`);
      const gguf = join(root, `model-${v.gguf}.gguf`);
      await writeRandomLlama(dir, shape, 0.3, [v.dtype]);
      await writeRandomLlamaGguf(gguf, shape, 1, 0.3, v.gguf);
      const words = [1, 7, 42, 3, 99, 250];
      const n = 16;

      const engine = new GenerationEngine({ models: [{ name: 'tiny', dir, dtype: v.dtype }], intraOpNumThreads: 1 });
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
      // fp32: the same model, every token. q8: two int8 schemes (per tensor in ONNX, per block
      // of 32 in Q8_0) round differently, so only the start must agree; a wrong layout agrees
      // on none.
      expect(llamaWords.slice(0, v.agree)).toEqual(onnxWords.slice(0, v.agree));
      // Not a degenerate continuation (one token repeated), which a broken model could also agree on.
      expect(new Set(onnxWords).size).toBeGreaterThan(3);
    }, 120_000);
  }
});
