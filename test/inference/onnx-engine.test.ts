import { createHash } from 'node:crypto';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { CloisterError } from '../../src/errors.js';
import { buildDemoModels, type DemoModelsResult, type DemoTraining, trainDemoClassifier } from '../../tools/demo-model/build.js';
import { loadClinicalNotes } from '../../tools/demo-model/dataset.js';
import { encodeOnnxModel, float32Raw, ONNX_FLOAT, ONNX_INT64 } from '../../tools/demo-model/onnx-proto.js';
import { PAD_ID } from '../../tools/demo-model/tokenizer.js';
import { predictProbabilities } from '../../tools/demo-model/train.js';
import { modelDigest } from '../../src/inference/onnx/digest.js';
import { type ClassLabelScore, OnnxEngine, type OnnxEngineOptions } from '../../src/inference/onnx/engine.js';
import type { EngineRequest } from '../../src/inference/types.js';

const MIN_HELD_OUT_ACCURACY = 0.85; // justified in demo-model.test.ts

let root: string;
let built: DemoModelsResult;
let training: DemoTraining;
let engine: OnnxEngine;

function req(op: EngineRequest['op'], model: string, input: unknown, params: Record<string, unknown> = {}): EngineRequest {
  return { op, model, input, params, stream: false };
}

/** Starts iterating at once (the request is enqueued synchronously) and collects the chunks. */
function collect(e: OnnxEngine, request: EngineRequest, signal: AbortSignal = new AbortController().signal): Promise<unknown[]> {
  const it = e.run(request, { signal })[Symbol.asyncIterator]();
  const first = it.next();
  return (async () => {
    const out: unknown[] = [];
    let r = await first;
    while (r.done !== true) {
      out.push(r.value);
      r = await it.next();
    }
    return out;
  })();
}

async function one(e: OnnxEngine, request: EngineRequest, signal?: AbortSignal): Promise<unknown> {
  const chunks = await collect(e, request, signal);
  expect(chunks).toHaveLength(1);
  return chunks[0];
}

async function newEngine(options: Partial<OnnxEngineOptions> = {}): Promise<OnnxEngine> {
  const e = new OnnxEngine({
    models: [
      { name: 'demo-classifier', dir: built.classifierDir },
      { name: 'demo-embedder', dir: built.embedderDir },
    ],
    ...options,
  });
  await e.start();
  return e;
}

function cosine(a: readonly number[], b: readonly number[]): number {
  let dot = 0;
  a.forEach((x, i) => (dot += x * (b[i] ?? 0)));
  return dot;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'cloister-onnx-'));
  built = await buildDemoModels({ outDir: join(root, 'demo') });
  training = trainDemoClassifier(await loadClinicalNotes());
  engine = await newEngine();
});

afterAll(async () => {
  await engine.close();
  await rm(root, { recursive: true, force: true });
});

describe('OnnxEngine with the demo models', () => {
  it('publishes both models with their task, operation and file digest', async () => {
    const infos = engine.models();
    expect(infos.map((m) => [m.name, m.task, m.operations])).toEqual([
      ['demo-classifier', 'text-classification', ['classify']],
      ['demo-embedder', 'feature-extraction', ['embed']],
    ]);
    expect(infos[0]?.digest).toEqual(await modelDigest(built.classifierDir));
    expect(infos[0]?.digest).toHaveLength(32);
  });

  it('classifies the held-out notes through the pipeline at the recorded accuracy', async () => {
    const texts = training.test.map((n) => n.text);
    const chunks: string[][] = [];
    for (let i = 0; i < texts.length; i += 64) chunks.push(texts.slice(i, i + 64)); // maxInputsPerRequest
    const parts = await Promise.all(chunks.map((c) => one(engine, req('classify', 'demo-classifier', c))));
    const out = (parts as ClassLabelScore[][][]).flat();
    expect(out).toHaveLength(texts.length);
    let correct = 0;
    out.forEach((r, i) => {
      expect(r).toHaveLength(1);
      if (r[0]?.label === training.test[i]?.department) correct++;
    });
    const acc = correct / texts.length;
    expect(acc).toBeGreaterThanOrEqual(MIN_HELD_OUT_ACCURACY);
    expect(acc).toBeCloseTo(built.heldOutAccuracy, 2);
  });

  it('matches a direct onnxruntime-node session and the reference math on the same tokens', async () => {
    const notes = training.test.slice(0, 6);
    const ids = notes.map((n) => training.tokenizer.encode(n.text));
    const len = Math.max(...ids.map((x) => x.length));
    const flatIds = new BigInt64Array(ids.length * len).fill(BigInt(PAD_ID));
    const mask = new BigInt64Array(ids.length * len);
    ids.forEach((row, i) => {
      row.forEach((t, j) => {
        flatIds[i * len + j] = BigInt(t);
        mask[i * len + j] = 1n;
      });
    });
    const session = await ort.InferenceSession.create(join(built.classifierDir, 'onnx', 'model.onnx'));
    const res = await session.run({
      input_ids: new ort.Tensor('int64', flatIds, [ids.length, len]),
      attention_mask: new ort.Tensor('int64', mask, [ids.length, len]),
    });
    await session.release();
    const logits = res['logits'];
    expect(logits?.dims).toEqual([ids.length, training.labels.length]);
    const data = logits?.data as Float32Array;

    const viaEngine = (await one(engine, req('classify', 'demo-classifier', notes.map((n) => n.text), { topK: 6 }))) as ClassLabelScore[][];
    ids.forEach((row, i) => {
      const z = Array.from(data.subarray(i * 6, i * 6 + 6));
      const max = Math.max(...z);
      const e = z.map((v) => Math.exp(v - max));
      const s = e.reduce((a, b) => a + b, 0);
      const probs = e.map((v) => v / s);
      // The graph computes exactly the trained model (masked mean + linear), padding included.
      const reference = predictProbabilities(training.weights, row);
      probs.forEach((p, k) => expect(p).toBeCloseTo(reference[k] ?? NaN, 5));
      // And the engine's scores are the session's softmax, per label.
      for (const { label, score } of viaEngine[i] ?? []) {
        expect(score).toBeCloseTo(probs[training.labels.indexOf(label)] ?? NaN, 5);
      }
    });
  });

  it('returns top-k labels sorted by score, for one string or several', async () => {
    const single = (await one(engine, req('classify', 'demo-classifier', 'Itchy scaly rash on the elbows', { topK: 3 }))) as ClassLabelScore[];
    expect(single).toHaveLength(3);
    expect(single[0]?.label).toBe('dermatology');
    expect((single[0]?.score ?? 0) >= (single[1]?.score ?? 1)).toBe(true);
    const all = (await one(engine, req('classify', 'demo-classifier', ['knee swelling after a twisting injury'], { topK: 6 }))) as ClassLabelScore[][];
    expect(all[0]?.map((x) => x.label).sort()).toEqual([...training.labels].sort());
    expect(all[0]?.reduce((a, x) => a + x.score, 0)).toBeCloseTo(1, 5);
  });

  it('embeds: right shape, unit norm, similar notes closer than dissimilar ones', async () => {
    const texts = [
      'Chest pressure on exertion, ECG shows ST elevation, troponin elevated.',
      'Palpitations and atrial fibrillation with rapid ventricular response on ECG.',
      'Itchy scaly rash with silvery plaques on the elbows, start topical corticosteroid.',
    ];
    const out = (await one(engine, req('embed', 'demo-embedder', texts))) as number[][];
    expect(out).toHaveLength(3);
    for (const v of out) {
      expect(v).toHaveLength(32);
      expect(Math.hypot(...v)).toBeCloseTo(1, 5);
    }
    const [a, b, c] = out as [number[], number[], number[]];
    expect(cosine(a, b)).toBeGreaterThan(cosine(a, c));
    expect(cosine(a, b)).toBeGreaterThan(cosine(b, c));

    // Over the held-out notes: mean same-department cosine beats mean cross-department cosine.
    const notes = training.test.slice(0, 36);
    const vecs = (await one(engine, req('embed', 'demo-embedder', notes.map((n) => n.text)))) as number[][];
    let same = 0;
    let sameN = 0;
    let diff = 0;
    let diffN = 0;
    for (let i = 0; i < notes.length; i++) {
      for (let j = i + 1; j < notes.length; j++) {
        const s = cosine(vecs[i] ?? [], vecs[j] ?? []);
        if (notes[i]?.department === notes[j]?.department) {
          same += s;
          sameN++;
        } else {
          diff += s;
          diffN++;
        }
      }
    }
    expect(same / sameN).toBeGreaterThan(diff / diffN + 0.2);
    const lone = (await one(engine, req('embed', 'demo-embedder', 'a single note'))) as number[];
    expect(lone).toHaveLength(32);
  });

  it('batching gives the same results as one call per request, in fewer pipeline calls', async () => {
    const unbatched = await newEngine({ batching: false });
    const batched = await newEngine({ batching: true, maxBatchSize: 16 });
    try {
      const requests = training.test.slice(0, 12).map((n, i) =>
        i % 3 === 0
          ? req('embed', 'demo-embedder', [n.text, `${n.text} Follow up in two weeks.`])
          : req('classify', 'demo-classifier', i % 2 === 0 ? n.text : [n.text, 'short'], { topK: 1 + (i % 6) }),
      );
      const a = await Promise.all(requests.map((r) => one(unbatched, r)));
      const b = await Promise.all(requests.map((r) => one(batched, r)));
      expect(b).toHaveLength(a.length);
      a.forEach((x, i) => {
        const y = b[i];
        if (requests[i]?.op === 'embed') {
          (x as number[][]).forEach((row, r) => row.forEach((v, k) => expect((y as number[][])[r]?.[k]).toBeCloseTo(v, 6)));
        } else {
          const norm = (v: unknown): ClassLabelScore[][] => (Array.isArray((v as unknown[])[0]) ? (v as ClassLabelScore[][]) : [v as ClassLabelScore[]]);
          norm(x).forEach((row, r) =>
            row.forEach((e, k) => {
              expect(norm(y)[r]?.[k]?.label).toBe(e.label);
              expect(norm(y)[r]?.[k]?.score).toBeCloseTo(e.score, 6);
            }),
          );
        }
      });
      expect(unbatched.stats().pipelineCalls).toBe(requests.length);
      expect(batched.stats().requests).toBe(requests.length);
      expect(batched.stats().pipelineCalls).toBeLessThan(requests.length);
      expect(batched.stats().largestBatch).toBeLessThanOrEqual(16);
    } finally {
      await unbatched.close();
      await batched.close();
    }
  });

  it('rejects with OVERLOADED when the queue is full', async () => {
    const e = await newEngine({ maxQueueDepth: 1, batching: false });
    try {
      const running = collect(e, req('classify', 'demo-classifier', 'chest pain')); // taken off the queue
      const queued = collect(e, req('classify', 'demo-classifier', 'rash')); // waits: depth 1
      const refused = collect(e, req('classify', 'demo-classifier', 'cough'));
      await expect(refused).rejects.toMatchObject({ code: 'OVERLOADED' });
      await expect(running).resolves.toHaveLength(1);
      await expect(queued).resolves.toHaveLength(1);
      // The queue drained, so a new request is accepted again.
      await expect(collect(e, req('classify', 'demo-classifier', 'cough'))).resolves.toHaveLength(1);
    } finally {
      await e.close();
    }
  });

  it('cancels: an already-aborted signal and a queued request both give CANCELLED', async () => {
    const e = await newEngine({ batching: false });
    try {
      await expect(collect(e, req('classify', 'demo-classifier', 'x'), AbortSignal.abort())).rejects.toMatchObject({ code: 'CANCELLED' });
      const running = collect(e, req('classify', 'demo-classifier', 'chest pain'));
      const ac = new AbortController();
      const queued = collect(e, req('classify', 'demo-classifier', 'rash'), ac.signal);
      expect(e.queuedRequests).toBe(1);
      ac.abort();
      expect(e.queuedRequests).toBe(0);
      await expect(queued).rejects.toMatchObject({ code: 'CANCELLED' });
      await expect(running).resolves.toHaveLength(1);
      // A running request aborted mid-call is answered CANCELLED too.
      const ac2 = new AbortController();
      const inFlight = collect(e, req('classify', 'demo-classifier', 'cough'), ac2.signal);
      ac2.abort();
      await expect(inFlight).rejects.toMatchObject({ code: 'CANCELLED' });
      expect(e.stats().pipelineCalls).toBe(2); // the queued one never ran
    } finally {
      await e.close();
    }
  });

  it('validates requests and enforces the input limits', async () => {
    const e = await newEngine({ maxInputsPerRequest: 2, maxInputChars: 50 });
    try {
      const code = async (r: EngineRequest): Promise<unknown> =>
        collect(e, r).then(
          () => 'resolved',
          (err: unknown) => (err instanceof CloisterError ? err.code : err),
        );
      expect(await code(req('classify', 'nope', 'x'))).toBe('UNKNOWN_MODEL');
      expect(await code(req('embed', 'demo-classifier', ['x']))).toBe('UNKNOWN_OPERATION');
      expect(await code(req('classify', 'demo-classifier', ['a', 'b', 'c']))).toBe('LIMIT_EXCEEDED');
      expect(await code(req('classify', 'demo-classifier', 'y'.repeat(51)))).toBe('LIMIT_EXCEEDED');
      expect(await code(req('classify', 'demo-classifier', []))).toBe('INVALID_ARGUMENT');
      expect(await code(req('classify', 'demo-classifier', [1]))).toBe('INVALID_ARGUMENT');
      // An empty text has nothing to classify: refused, not answered with a guess.
      expect(await code(req('classify', 'demo-classifier', ''))).toBe('INVALID_ARGUMENT');
      expect(await code(req('embed', 'demo-embedder', ['x', '']))).toBe('INVALID_ARGUMENT');
      expect(await code(req('classify', 'demo-classifier', { text: 'x' }))).toBe('INVALID_ARGUMENT');
      expect(await code(req('classify', 'demo-classifier', 'x', { topK: 7 }))).toBe('INVALID_ARGUMENT');
      expect(await code(req('classify', 'demo-classifier', 'x', { topK: 0 }))).toBe('INVALID_ARGUMENT');
      expect(await code(req('classify', 'demo-classifier', 'x', { top_k: 2 }))).toBe('INVALID_ARGUMENT');
      expect(await code(req('embed', 'demo-embedder', 'x', { normalize: false }))).toBe('INVALID_ARGUMENT');
      expect(await code(req('classify', 'demo-classifier', 'y'.repeat(50)))).toBe('resolved');
    } finally {
      await e.close();
    }
    expect(await collect(e, req('classify', 'demo-classifier', 'x')).catch((err: unknown) => (err as CloisterError).code)).toBe(
      'ENGINE_UNAVAILABLE',
    );
  });

  it('reports ENGINE_FAILED, without request content, when the runtime fails', async () => {
    // A tokenizer that maps one word past the embedding table makes ONNX Runtime's Gather fail.
    const dir = join(root, 'broken');
    await cp(built.classifierDir, dir, { recursive: true });
    const tokPath = join(dir, 'tokenizer.json');
    const tok = JSON.parse(await readFile(tokPath, 'utf8')) as { model: { vocab: Record<string, number> } };
    tok.model.vocab['zzsecretword'] = 100_000;
    await writeFile(tokPath, JSON.stringify(tok));
    const e = new OnnxEngine({ models: [{ name: 'broken', dir }] });
    await e.start();
    const consoleSpies = (['error', 'warn', 'log', 'info'] as const).map((m) => vi.spyOn(console, m));
    try {
      const err = await collect(e, req('classify', 'broken', 'patient zzsecretword here')).catch((x: unknown) => x);
      expect(err).toBeInstanceOf(CloisterError);
      expect((err as CloisterError).code).toBe('ENGINE_FAILED');
      expect(JSON.stringify({ m: (err as Error).message, d: (err as CloisterError).detail })).not.toContain('zzsecretword');
      expect((err as Error).cause).toBeUndefined();
      // transformers.js would print the runtime's message (which quotes the token id): logging is off.
      for (const spy of consoleSpies) expect(spy).not.toHaveBeenCalled();
      // The engine keeps serving other requests.
      await expect(collect(e, req('classify', 'broken', 'chest pain'))).resolves.toHaveLength(1);
    } finally {
      for (const spy of consoleSpies) spy.mockRestore();
      await e.close();
    }
  });
});

describe('OnnxEngine token classification', () => {
  it('tags tokens with a token-classification model (per-token logits = a lookup table)', async () => {
    // A hand-made tagger: every token scores "O" except the word "ecg", which scores "TEST".
    const dir = join(root, 'tagger');
    await cp(built.classifierDir, dir, { recursive: true });
    const vocab = training.vocab;
    const table = new Float32Array(vocab.length * 2);
    vocab.forEach((t, i) => {
      table[i * 2] = t === 'ecg' ? 0 : 5;
      table[i * 2 + 1] = t === 'ecg' ? 5 : 0;
    });
    const onnx = encodeOnnxModel(
      {
        name: 'tagger',
        docString: '',
        metadata: {},
        nodes: [{ name: 'g', opType: 'Gather', inputs: ['table', 'input_ids'], outputs: ['logits'] }],
        initializers: [{ name: 'table', dims: [vocab.length, 2], dataType: ONNX_FLOAT, raw: float32Raw(table) }],
        inputs: [{ name: 'input_ids', elemType: ONNX_INT64, shape: ['b', 's'] }],
        outputs: [{ name: 'logits', elemType: ONNX_FLOAT, shape: ['b', 's', 2] }],
      },
      'test',
    );
    await writeFile(join(dir, 'onnx', 'model.onnx'), onnx);
    const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    config['architectures'] = ['BertForTokenClassification'];
    config['id2label'] = { 0: 'O', 1: 'TEST' };
    config['label2id'] = { O: 0, TEST: 1 };
    await writeFile(join(dir, 'config.json'), JSON.stringify(config));
    const e = new OnnxEngine({ models: [{ name: 'tagger', dir }] });
    await e.start();
    try {
      expect(e.models()[0]?.operations).toEqual(['token-classify']);
      const out = (await one(e, req('token-classify', 'tagger', ['The ECG was normal', 'no tests']))) as {
        entity: string;
        word: string;
        index: number;
        score: number;
      }[][];
      expect(out).toHaveLength(2);
      expect(out[0]?.map((x) => [x.entity, x.word, x.index])).toEqual([['TEST', 'ecg', 2]]);
      expect(out[0]?.[0]?.score).toBeGreaterThan(0.99);
      expect(out[1]).toEqual([]);
    } finally {
      await e.close();
    }
  });
});

describe('OnnxEngine model loading (fails closed, never touches the network)', () => {
  const startCode = async (models: OnnxEngineOptions['models']): Promise<unknown> => {
    const e = new OnnxEngine({ models });
    return e.start().then(
      () => 'started',
      (err: unknown) => (err instanceof CloisterError ? err.code : err),
    );
  };

  it('a missing model directory is NOT_FOUND, with no fetch attempted', async () => {
    const fetchSpy = vi.spyOn(globalThis, 'fetch');
    try {
      expect(await startCode([{ name: 'm', dir: join(root, 'does-not-exist') }])).toBe('NOT_FOUND');
      // A directory that exists but lacks the ONNX file: also NOT_FOUND, not a Hub download.
      const partial = join(root, 'partial');
      await mkdir(partial, { recursive: true });
      await cp(join(built.classifierDir, 'config.json'), join(partial, 'config.json'));
      await cp(join(built.classifierDir, 'tokenizer.json'), join(partial, 'tokenizer.json'));
      expect(await startCode([{ name: 'm', dir: partial }])).toBe('NOT_FOUND');
      expect(fetchSpy).not.toHaveBeenCalled();
    } finally {
      fetchSpy.mockRestore();
    }
  });

  it('an invalid config.json or an unknown task is CONFIG_INVALID', async () => {
    const bad = join(root, 'bad-config');
    await cp(built.classifierDir, bad, { recursive: true });
    await writeFile(join(bad, 'config.json'), '{ not json');
    expect(await startCode([{ name: 'm', dir: bad }])).toBe('CONFIG_INVALID');
    await writeFile(join(bad, 'config.json'), JSON.stringify({ model_type: 'bert', architectures: ['Something'] }));
    expect(await startCode([{ name: 'm', dir: bad }])).toBe('CONFIG_INVALID');
    await writeFile(join(bad, 'config.json'), JSON.stringify({ model_type: 'bert', architectures: ['BertForSequenceClassification'] }));
    expect(await startCode([{ name: 'm', dir: bad }])).toBe('CONFIG_INVALID'); // no id2label
    expect(await startCode([{ name: 'm', dir: join(built.classifierDir, 'config.json') }])).toBe('CONFIG_INVALID');
  });

  it('a corrupt ONNX file is CONFIG_INVALID', async () => {
    const bad = join(root, 'bad-onnx');
    await cp(built.classifierDir, bad, { recursive: true });
    await writeFile(join(bad, 'onnx', 'model.onnx'), Buffer.from('not an onnx model'));
    expect(await startCode([{ name: 'm', dir: bad }])).toBe('CONFIG_INVALID');
  });

  it('rejects bad options', () => {
    expect(() => new OnnxEngine({ models: [] })).toThrow(CloisterError);
    expect(() => new OnnxEngine({ models: [{ name: 'a', dir: 'x' }, { name: 'a', dir: 'y' }] })).toThrow(CloisterError);
    expect(() => new OnnxEngine({ models: [{ name: 'a', dir: 'x' }], maxQueueDepth: 0 })).toThrow(CloisterError);
    expect(() => new OnnxEngine({ models: [{ name: 'a', dir: 'x' }], maxBatchSize: 1.5 })).toThrow(CloisterError);
  });
});

describe('modelDigest', () => {
  /** Independent implementation of the documented construction. */
  async function expected(dir: string): Promise<Buffer> {
    const files: string[] = [];
    const walk = async (d: string, prefix: string): Promise<void> => {
      for (const e of await readdir(join(dir, d), { withFileTypes: true })) {
        const rel = prefix === '' ? e.name : `${prefix}/${e.name}`;
        if (e.isDirectory()) await walk(join(d, e.name), rel);
        else files.push(rel);
      }
    };
    await walk('', '');
    files.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    const h = createHash('sha256').update('cloister/model-digest/v1\0');
    for (const f of files) {
      const data = await readFile(join(dir, f));
      const p = Buffer.from(f, 'utf8');
      const hdr = Buffer.alloc(12);
      hdr.writeUInt32BE(p.length, 0);
      h.update(hdr.subarray(0, 4)).update(p);
      hdr.writeBigUInt64BE(BigInt(data.length), 4);
      h.update(hdr.subarray(4, 12)).update(data);
    }
    return h.digest();
  }

  it('is the documented SHA-256 construction and changes when any file changes', async () => {
    const d = await modelDigest(built.embedderDir);
    expect(Buffer.from(d)).toEqual(await expected(built.embedderDir));
    const copy = join(root, 'digest-copy');
    await cp(built.embedderDir, copy, { recursive: true });
    expect(await modelDigest(copy)).toEqual(d);
    await writeFile(join(copy, 'README.md'), 'extra');
    expect(await modelDigest(copy)).not.toEqual(d);
  });

  it('rejects symbolic links and too many files', async () => {
    const linked = join(root, 'digest-link');
    await cp(built.embedderDir, linked, { recursive: true });
    await symlink('/etc/hostname', join(linked, 'link.txt'));
    await expect(modelDigest(linked)).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    await expect(modelDigest(built.embedderDir, { maxFiles: 3 })).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED' });
    await expect(modelDigest(join(root, 'nope'))).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});
