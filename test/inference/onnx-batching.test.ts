/**
 * Batching and the engine's own pre/post-processing (batch-inputs.ts, postprocess.ts,
 * wordpiece.ts): a text's result must not depend on what it was batched with, and must be
 * what the transformers.js pipelines (the engine's previous implementation) return.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { buildDemoModels, type DemoModelsResult } from '../../tools/demo-model/build.js';
import { loadClinicalNotes } from '../../tools/demo-model/dataset.js';
import { buildBatchInputs } from '../../src/inference/onnx/batch-inputs.js';
import { type ClassLabelScore, OnnxEngine, type OnnxEngineOptions, type TokenEntity } from '../../src/inference/onnx/engine.js';
import { loadTransformers } from '../../src/inference/onnx/transformers-env.js';
import { fastWordPiece, PROBE_TEXTS } from '../../src/inference/onnx/wordpiece.js';
import { makeTagger } from '../helpers/tagger.js';
import type { EngineRequest } from '../../src/inference/types.js';

let root: string;
let built: DemoModelsResult;
let taggerDir: string;
let notes: string[];

/** Texts of very different lengths in one batch: short, long, truncated (> 128 tokens), a
 * single character, non-ASCII and added-token text (both go to the library tokenizer), and
 * words the tagger marks. (An empty text is refused with INVALID_ARGUMENT: onnx-engine tests.) */
function mixedTexts(): string[] {
  return [
    'rash',
    notes[0] ?? '',
    'The ECG was normal; repeat ECG in 2 weeks.',
    Array.from({ length: 40 }, (_, i) => notes[i % 20] ?? '').join(' '), // far past model_max_length
    'x',
    'Café au lait macules, naïve patient, ECG ok',
    'chest pain [SEP] ECG [MASK] follow up',
    `${'x'.repeat(150)} ecg`,
    notes[1] ?? '',
  ];
}

function req(op: EngineRequest['op'], model: string, input: unknown, params: Record<string, unknown> = {}): EngineRequest {
  return { op, model, input, params, stream: false };
}

async function one(e: OnnxEngine, request: EngineRequest): Promise<unknown> {
  const out: unknown[] = [];
  for await (const chunk of e.run(request, { signal: new AbortController().signal })) out.push(chunk);
  expect(out).toHaveLength(1);
  return out[0];
}

async function newEngine(options: Partial<OnnxEngineOptions> = {}): Promise<OnnxEngine> {
  const e = new OnnxEngine({
    models: [
      { name: 'classifier', dir: built.classifierDir },
      { name: 'embedder', dir: built.embedderDir },
      { name: 'tagger', dir: taggerDir },
    ],
    ...options,
  });
  await e.start();
  return e;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'cloister-onnx-batch-'));
  built = await buildDemoModels({ outDir: join(root, 'demo') });
  taggerDir = join(root, 'tagger');
  await makeTagger(built.classifierDir, taggerDir);
  notes = (await loadClinicalNotes()).map((n) => n.text);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/**
 * Embeddings and token tags must be bit-identical (the engine pools and scores each text from
 * its own rows). Classification logits come out of ONNX Runtime's MatMul/ReduceSum, whose
 * accumulation order depends on the batch shape, so scores may differ in the last float32
 * bits (about 1e-6 relative here); the ranking and labels must not.
 */
function expectSameResults(op: EngineRequest['op'], got: unknown[], want: unknown[]): void {
  if (op !== 'classify') {
    expect(got).toEqual(want);
    return;
  }
  expect(got).toHaveLength(want.length);
  (want as ClassLabelScore[][]).forEach((row, i) => {
    const g = (got as ClassLabelScore[][])[i] ?? [];
    expect(g.map((x) => x.label)).toEqual(row.map((x) => x.label));
    row.forEach((x, k) => expect(g[k]?.score).toBeCloseTo(x.score, 6));
  });
}

describe('batching never changes a result', () => {
  const cases: [EngineRequest['op'], string, Record<string, unknown>][] = [
    ['classify', 'classifier', { topK: 6 }],
    ['embed', 'embedder', {}],
    ['token-classify', 'tagger', {}],
  ];

  it.each(cases)('%s: each text batched with texts of other lengths equals the text alone', async (op, model, params) => {
    const alone = await newEngine({ batching: false });
    const batched = await newEngine({ batching: true, maxBatchSize: 32 });
    try {
      const texts = mixedTexts();
      const single = await Promise.all(texts.map((t) => one(alone, req(op, model, t, params))));
      // One request with all texts is one model call; concurrent requests are merged too.
      const asArray = (await one(batched, req(op, model, texts, params))) as unknown[];
      const merged = await Promise.all(texts.map((t) => one(batched, req(op, model, t, params))));
      expectSameResults(op, asArray, single);
      expectSameResults(op, merged, single);
      expect(alone.stats().largestBatch).toBe(1);
      expect(batched.stats().largestBatch).toBe(texts.length);
      expect(batched.stats().pipelineCalls).toBeLessThan(1 + texts.length);
      if (op === 'token-classify') {
        const tags = single as TokenEntity[][];
        const ecg = tags[2]?.filter((t) => t.entity === 'TEST') ?? [];
        expect(ecg.map((t) => t.word)).toEqual(['ecg', 'ecg']);
        expect(ecg[0]?.index).toBe(2); // [CLS] the ecg: counted from the text's first token
        expect(tags[5]?.some((t) => t.entity === 'TEST' && t.word === 'ecg')).toBe(true); // library-tokenized text
        expect(tags[4]).toEqual([]); // the empty text: only special tokens
      }
    } finally {
      await alone.close();
      await batched.close();
    }
  });
});

describe('the engine returns what the transformers.js pipelines return', () => {
  it.each([
    ['text-classification', 'classify', 'classifier'],
    ['feature-extraction', 'embed', 'embedder'],
    ['token-classification', 'token-classify', 'tagger'],
  ] as const)('%s', async (task, op, model) => {
    const dir = model === 'classifier' ? built.classifierDir : model === 'embedder' ? built.embedderDir : taggerDir;
    const mod = await loadTransformers(root);
    const pipe = (await mod.pipeline(task, dir, { local_files_only: true, device: 'cpu', dtype: 'fp32', subfolder: 'onnx', model_file_name: 'model' })) as unknown as ((
      t: string,
      o: Record<string, unknown>,
    ) => Promise<unknown>) & { dispose(): Promise<void> };
    // Each text alone, as the pipeline ran it (the batched case is the test above).
    const e = await newEngine({ batching: false });
    try {
      const texts = mixedTexts();
      const got = await Promise.all(texts.map((t) => one(e, req(op, model, t, op === 'classify' ? { topK: 6 } : {}))));
      for (const [i, text] of texts.entries()) {
        if (op === 'classify') {
          expect(got[i]).toEqual(await pipe(text, { top_k: 6 }));
        } else if (op === 'embed') {
          const t = (await pipe(text, { pooling: 'mean', normalize: true })) as { data: Float32Array };
          expect(got[i]).toEqual(Array.from(t.data));
        } else {
          expect(got[i]).toEqual(await pipe(text, {}));
        }
      }
    } finally {
      await e.close();
      await pipe.dispose();
    }
  });

  it('classification scores are sorted, sum to 1, and topK cuts the same ranking', async () => {
    const e = await newEngine();
    try {
      const all = (await one(e, req('classify', 'classifier', notes[5] ?? '', { topK: 6 }))) as ClassLabelScore[];
      const top2 = (await one(e, req('classify', 'classifier', notes[5] ?? '', { topK: 2 }))) as ClassLabelScore[];
      expect(top2).toEqual(all.slice(0, 2));
      for (let k = 1; k < all.length; k++) expect(all[k - 1]?.score ?? 0).toBeGreaterThanOrEqual(all[k]?.score ?? 1);
      expect(all.reduce((a, x) => a + x.score, 0)).toBeCloseTo(1, 5);
    } finally {
      await e.close();
    }
  });
});

describe('fast WordPiece tokenizer', () => {
  async function files(): Promise<[Record<string, unknown>, Record<string, unknown>]> {
    const json = JSON.parse(await readFile(join(built.classifierDir, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
    const config = JSON.parse(await readFile(join(built.classifierDir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    return [json, config];
  }

  it('gives the library ids and type ids on the data set, probes and random ASCII', async () => {
    const [json, config] = await files();
    const fast = fastWordPiece(json, config);
    expect(fast).toBeDefined();
    const mod = await loadTransformers(root);
    const tok = await mod.AutoTokenizer.from_pretrained(built.classifierDir, { local_files_only: true });
    let seed = 7;
    const rnd = (): number => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32;
    const alphabet = 'abcdeXYZ ecg pain##  \t\n\r.,;:-/()!?0123456789~`^|$+<=>_"\'\\{}';
    const random = Array.from({ length: 1500 }, () =>
      Array.from({ length: Math.floor(rnd() * 60) }, () => alphabet[Math.floor(rnd() * alphabet.length)] ?? '').join(''),
    );
    let checked = 0;
    for (const text of [...PROBE_TEXTS, ...notes, ...random]) {
      const got = fast?.encode(text);
      expect(got).toBeDefined();
      const lib = tok(text, { return_tensor: false }) as unknown as { input_ids: number[]; token_type_ids: number[] };
      expect(got?.ids).toEqual(lib.input_ids);
      expect(got?.typeIds).toEqual(lib.token_type_ids);
      checked++;
    }
    expect(checked).toBe(PROBE_TEXTS.length + notes.length + random.length);
  });

  it('leaves non-ASCII, control characters and added tokens to the library', async () => {
    const [json, config] = await files();
    const fast = fastWordPiece(json, config);
    for (const text of ['café', 'a\u0000b', 'a\u000bb', 'del\u007f', 'x[SEP]y', 'a [mask] b', '[PAD]', '\u4e2d文']) {
      expect(fast?.encode(text)).toBeUndefined();
    }
    expect(fast?.encode('plain text')).toBeDefined();
  });

  it('is not used for tokenizer files of another shape', async () => {
    const [json, config] = await files();
    const variants: [Record<string, unknown>, Record<string, unknown>][] = [
      [{ ...json, normalizer: { type: 'Lowercase' } }, config],
      [{ ...json, normalizer: { ...(json['normalizer'] as object), clean_text: false } }, config],
      [{ ...json, pre_tokenizer: { type: 'Whitespace' } }, config],
      [{ ...json, model: { ...(json['model'] as object), type: 'BPE' } }, config],
      [{ ...json, model: { ...(json['model'] as object), fuse_unk: true } }, config],
      [{ ...json, post_processor: { type: 'BertProcessing', cls: ['[CLS]', 2], sep: ['[SEP]', 3] } }, config],
      [json, { ...config, remove_space: true }],
      [{ ...json, added_tokens: [{ id: 9, content: 'caf\u00e9', normalized: true }] }, config],
    ];
    for (const [j, c] of variants) expect(fastWordPiece(j, c)).toBeUndefined();
  });
});

describe('buildBatchInputs', () => {
  it('pads to the longest text with a zero mask, on the tokenizer side', () => {
    const right = buildBatchInputs([[2, 7, 3], [2, 3]], undefined, { padId: 9, side: 'right', withTokenTypes: true });
    expect([right.rows, right.seq]).toEqual([2, 3]);
    expect(Array.from(right.inputIds)).toEqual([2n, 7n, 3n, 2n, 3n, 9n]);
    expect(Array.from(right.attentionMask)).toEqual([1n, 1n, 1n, 1n, 1n, 0n]);
    expect(Array.from(right.tokenTypeIds ?? [])).toEqual([0n, 0n, 0n, 0n, 0n, 0n]);
    expect(Array.from(right.starts)).toEqual([0, 0]);
    const left = buildBatchInputs([[2, 3], [2, 7, 3]], [[0, 1], [0, 0, 1]], { padId: 0, side: 'left', withTokenTypes: false });
    expect(Array.from(left.inputIds)).toEqual([0n, 2n, 3n, 2n, 7n, 3n]);
    expect(Array.from(left.attentionMask)).toEqual([0n, 1n, 1n, 1n, 1n, 1n]);
    expect(Array.from(left.tokenTypeIds ?? [])).toEqual([0n, 0n, 1n, 0n, 0n, 1n]);
    expect(Array.from(left.starts)).toEqual([1, 0]);
    expect(buildBatchInputs([[2, 3]], undefined, { padId: 0, side: 'right', withTokenTypes: false }).tokenTypeIds).toBeUndefined();
  });

  it('rejects token ids that are not non-negative 31-bit integers', () => {
    for (const bad of [-1, 1.5, 2 ** 31, NaN]) {
      expect(() => buildBatchInputs([[2, bad]], undefined, { padId: 0, side: 'right', withTokenTypes: false })).toThrow(TypeError);
    }
    expect(() => buildBatchInputs([[2]], undefined, { padId: -1, side: 'right', withTokenTypes: false })).toThrow(TypeError);
  });
});
