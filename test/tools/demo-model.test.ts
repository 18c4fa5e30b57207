import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { CloisterError } from '../../src/errors.js';
import { buildDemoModels, type DemoModelsResult, trainDemoClassifier } from '../../tools/demo-model/build.js';
import {
  DEFAULT_DATASET_URL,
  DEPARTMENTS,
  encodeClinicalNotes,
  generateClinicalNotes,
  loadClinicalNotes,
  parseClinicalNotes,
} from '../../tools/demo-model/dataset.js';
import { WordPieceTokenizer } from '../../tools/demo-model/tokenizer.js';
import { modelDigest } from '../../src/inference/onnx/digest.js';
import { loadTransformers } from '../../src/inference/onnx/transformers-env.js';

/**
 * Held-out accuracy floor. Six balanced classes give 1/6 = 0.17 by chance; the phrase banks
 * share generic history/vitals sentences and a quarter of notes mention another department's
 * complaint, so a model that only learned the shared words, or a tokenizer out of step with the
 * one transformers.js runs, falls far below 0.85, while the trained model scores about 0.97.
 */
const MIN_HELD_OUT_ACCURACY = 0.85;

async function listAll(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const rel = prefix === '' ? e.name : `${prefix}/${e.name}`;
    if (e.isDirectory()) out.push(...(await listAll(join(dir, e.name), rel)));
    else out.push(rel);
  }
  return out.sort();
}

describe('demo data set', () => {
  it('the shipped data/clinical-notes.jsonl is exactly what the generator produces', async () => {
    const shipped = await readFile(DEFAULT_DATASET_URL, 'utf8');
    expect(shipped).toBe(encodeClinicalNotes(generateClinicalNotes()));
  });

  it('has a fixed, balanced train/held-out split over all six departments', async () => {
    const notes = await loadClinicalNotes();
    const test = notes.filter((n) => n.split === 'test');
    expect(notes.length).toBeGreaterThanOrEqual(600);
    expect(test.length / notes.length).toBeCloseTo(0.2, 5);
    for (const d of DEPARTMENTS) {
      expect(test.filter((n) => n.department === d).length).toBe(test.length / DEPARTMENTS.length);
    }
  });

  it('rejects malformed lines', () => {
    const good = encodeClinicalNotes(generateClinicalNotes().slice(0, 2));
    const bad = [
      'not json\n',
      '[1,2]\n',
      '{"id":"a","department":"cardiology","split":"train"}\n',
      '{"id":"a","department":"astrology","split":"train","text":"x"}\n',
      '{"id":"a","department":"cardiology","split":"dev","text":"x"}\n',
      '{"id":"a","department":"cardiology","split":"train","text":"x","extra":1}\n',
      '{"id":"a","department":"cardiology","split":"train","text":""}\n',
      `${good.split('\n')[0] ?? ''}\n${good.split('\n')[0] ?? ''}\n`, // duplicate id
      '',
    ];
    for (const text of bad) {
      expect(() => parseClinicalNotes(text)).toThrow(CloisterError);
    }
    expect(parseClinicalNotes(good)).toHaveLength(2);
  });

  it('a missing data set file is NOT_FOUND', async () => {
    await expect(loadClinicalNotes('/nonexistent/notes.jsonl')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(buildDemoModels({ outDir: join(tmpdir(), 'x'), datasetPath: '/nonexistent/notes.jsonl' })).rejects.toMatchObject({
      code: 'NOT_FOUND',
    });
  });
});

describe('buildDemoModels', () => {
  let root: string;
  let first: DemoModelsResult;
  let second: DemoModelsResult;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'cloister-demo-'));
    first = await buildDemoModels({ outDir: join(root, 'a') });
    second = await buildDemoModels({ outDir: join(root, 'b') });
  });

  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('writes the Hugging Face layout', async () => {
    expect(await listAll(first.classifierDir)).toEqual([
      'config.json',
      'onnx/model.onnx',
      'tokenizer.json',
      'tokenizer_config.json',
      'training.json',
    ]);
    expect(await listAll(first.embedderDir)).toEqual(['config.json', 'onnx/model.onnx', 'tokenizer.json', 'tokenizer_config.json']);
    const config = JSON.parse(await readFile(join(first.classifierDir, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(config['model_type']).toBe('bert');
    expect(config['id2label']).toEqual(Object.fromEntries(DEPARTMENTS.map((d, i) => [String(i), d])));
    expect(config['label2id']).toEqual(Object.fromEntries(DEPARTMENTS.map((d, i) => [d, i])));
  });

  it('is deterministic: two builds give identical bytes and digests', async () => {
    const files = await listAll(first.classifierDir);
    for (const f of files) {
      expect(Buffer.compare(await readFile(join(first.classifierDir, f)), await readFile(join(second.classifierDir, f)))).toBe(0);
    }
    expect(await modelDigest(first.classifierDir)).toEqual(await modelDigest(second.classifierDir));
    expect(await modelDigest(first.embedderDir)).toEqual(await modelDigest(second.embedderDir));
    expect(await modelDigest(first.classifierDir)).not.toEqual(await modelDigest(first.embedderDir));
  });

  it(`reaches held-out accuracy >= ${MIN_HELD_OUT_ACCURACY} and records it`, async () => {
    expect(first.heldOutExamples).toBe(132);
    expect(first.heldOutAccuracy).toBeGreaterThanOrEqual(MIN_HELD_OUT_ACCURACY);
    const training = JSON.parse(await readFile(join(first.classifierDir, 'training.json'), 'utf8')) as Record<string, unknown>;
    expect(training['held_out_accuracy']).toBeCloseTo(first.heldOutAccuracy, 4);
    const config = JSON.parse(await readFile(join(first.classifierDir, 'config.json'), 'utf8')) as {
      cloister_demo: { held_out_accuracy: number };
    };
    expect(config.cloister_demo.held_out_accuracy).toBeCloseTo(first.heldOutAccuracy, 4);
    console.log(`demo classifier: held-out accuracy ${first.heldOutAccuracy.toFixed(4)}, built in ${first.buildMs.toFixed(0)} ms`);
  });

  it('a different training seed changes the weights (the seed is really used)', async () => {
    const notes = await loadClinicalNotes();
    const a = trainDemoClassifier(notes);
    const b = trainDemoClassifier(notes, { dim: 32, epochs: 40, learningRate: 0.5, l2: 1e-5, seed: 1 });
    expect(Buffer.from(a.weights.weight.buffer).equals(Buffer.from(b.weights.weight.buffer))).toBe(false);
  });

  it('the builder tokenizer agrees with transformers.js on every note and on edge cases', async () => {
    const { AutoTokenizer } = await loadTransformers(root);
    const hf = await AutoTokenizer.from_pretrained(first.classifierDir, { local_files_only: true });
    const tokJson = JSON.parse(await readFile(join(first.classifierDir, 'tokenizer.json'), 'utf8')) as {
      model: { vocab: Record<string, number> };
    };
    const vocab = Object.entries(tokJson.model.vocab)
      .sort((x, y) => x[1] - y[1])
      .map(([t]) => t);
    const ours = new WordPieceTokenizer(vocab);
    const notes = await loadClinicalNotes();
    const extra = [
      '',
      'Naïve CAFÉ patient, ÉCG: 80/100!!',
      'unseenword supercalifragilistic chesty',
      'tabs\tand\nnewlines   spaces',
      'x'.repeat(150),
      'word '.repeat(200),
    ];
    for (const text of [...notes.map((n) => n.text), ...extra]) {
      const enc = hf(text, { truncation: true }) as unknown as { input_ids: { tolist(): bigint[][] } };
      const theirs = (enc.input_ids.tolist()[0] ?? []).map(Number);
      expect(ours.encode(text)).toEqual(theirs);
    }
  });
});
