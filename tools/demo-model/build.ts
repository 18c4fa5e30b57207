/**
 * Builds the bundled demo models without any network: trains a small clinical-note
 * department classifier on the shipped data set and writes two Hugging Face-layout ONNX
 * model directories that `OnnxEngine` (transformers.js on onnxruntime-node) loads:
 *
 *   <outDir>/classifier/  config.json tokenizer.json tokenizer_config.json training.json onnx/model.onnx
 *   <outDir>/embedder/    config.json tokenizer.json tokenizer_config.json onnx/model.onnx
 *   <outDir>/lm/          demo-lm, a small generative decoder with a KV cache (./lm.ts)
 *   <outDir>/phi-tagger/  a PHI token-classification model for the output guard (./phi.ts)
 *
 * Deterministic: the same data set and options give the same bytes (no timestamps, seeded
 * RNG, fixed key order), so the model digests in the key config are reproducible.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';

import { CloisterError } from '../../src/errors.js';
import { DEFAULT_DATASET_URL, DEPARTMENTS, parseClinicalNotes, type ClinicalNote } from './dataset.js';
import { classifierOnnx, embedderOnnx } from './graphs.js';
import { writeDemoLm } from './lm.js';
import { writePhiTagger } from './phi.js';
import {
  accuracy,
  type ClassifierWeights,
  DEFAULT_TRAIN_CONFIG,
  type Example,
  type TrainConfig,
  trainClassifier,
} from './train.js';
import {
  buildVocab,
  MODEL_MAX_LENGTH,
  PAD_ID,
  tokenizerConfigJson,
  tokenizerJson,
  WordPieceTokenizer,
} from './tokenizer.js';

/** Bumped when the builder's output format changes; recorded in every generated file. */
const DEMO_MODEL_VERSION = '1';

/** Words seen fewer times than this in training text are left to WordPiece sub-pieces. */
const MIN_WORD_COUNT = 2;

interface BuildDemoModelsOptions {
  /** Directory that receives `classifier/` and `embedder/` (both are replaced). */
  readonly outDir: string;
  /** JSON Lines data set; default: the shipped data/clinical-notes.jsonl. */
  readonly datasetPath?: string | URL;
  /** Training hyper-parameters; default DEFAULT_TRAIN_CONFIG. */
  readonly train?: Partial<TrainConfig>;
}

export interface DemoModelsResult {
  readonly classifierDir: string;
  readonly embedderDir: string;
  /** demo-lm, the generative model (./lm.ts). */
  readonly lmDir: string;
  /** The PHI tagger (./phi.ts): token classification, O / NAME / ID. */
  readonly phiTaggerDir: string;
  readonly labels: readonly string[];
  readonly trainExamples: number;
  readonly heldOutExamples: number;
  readonly trainAccuracy: number;
  readonly heldOutAccuracy: number;
  readonly vocabSize: number;
  /** Wall time of the build in milliseconds (not written to any file: output stays deterministic). */
  readonly buildMs: number;
}

function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

function round4(x: number): number {
  return Math.round(x * 1e4) / 1e4;
}

export interface DemoTraining {
  readonly labels: readonly string[];
  readonly vocab: readonly string[];
  readonly tokenizer: WordPieceTokenizer;
  readonly weights: ClassifierWeights;
  readonly train: readonly ClinicalNote[];
  readonly test: readonly ClinicalNote[];
  readonly trainAccuracy: number;
  readonly heldOutAccuracy: number;
  readonly heldOutAccuracyByLabel: Readonly<Record<string, number>>;
}

/** Tokenizer + weights trained on the notes' train split, scored on the held-out split. */
export function trainDemoClassifier(notes: readonly ClinicalNote[], config: TrainConfig = DEFAULT_TRAIN_CONFIG): DemoTraining {
  const labels = [...DEPARTMENTS];
  const train = notes.filter((n) => n.split === 'train');
  const test = notes.filter((n) => n.split === 'test');
  if (train.length === 0 || test.length === 0) {
    throw new CloisterError('MALFORMED', 'data set needs both train and test notes');
  }
  const vocab = buildVocab(
    train.map((n) => n.text),
    MIN_WORD_COUNT,
  );
  const tokenizer = new WordPieceTokenizer(vocab);
  const toExample = (n: ClinicalNote): Example => ({ ids: tokenizer.encode(n.text), label: labels.indexOf(n.department) });
  const trainExamples = train.map(toExample);
  const testExamples = test.map(toExample);
  const weights = trainClassifier(trainExamples, vocab.length, labels.length, config);
  return {
    labels,
    vocab,
    tokenizer,
    weights,
    train,
    test,
    trainAccuracy: accuracy(weights, trainExamples),
    heldOutAccuracy: accuracy(weights, testExamples),
    heldOutAccuracyByLabel: Object.fromEntries(
      labels.map((label, i) => [label, accuracy(weights, testExamples.filter((e) => e.label === i))]),
    ),
  };
}

export async function buildDemoModels(options: BuildDemoModelsOptions): Promise<DemoModelsResult> {
  const started = performance.now();
  if (typeof options.outDir !== 'string' || options.outDir.length === 0) {
    throw new CloisterError('INVALID_ARGUMENT', 'outDir must be a non-empty path');
  }
  const config: TrainConfig = { ...DEFAULT_TRAIN_CONFIG, ...options.train };
  let datasetBytes: Buffer;
  try {
    datasetBytes = await readFile(options.datasetPath ?? DEFAULT_DATASET_URL);
  } catch (cause) {
    throw new CloisterError('NOT_FOUND', 'demo data set file not found', { cause });
  }
  const notes = parseClinicalNotes(datasetBytes.toString('utf8'));
  const { labels, vocab, weights, train, test, trainAccuracy, heldOutAccuracy, heldOutAccuracyByLabel } =
    trainDemoClassifier(notes, config);
  const perDepartment = Object.fromEntries(Object.entries(heldOutAccuracyByLabel).map(([k, v]) => [k, round4(v)]));

  const datasetSha256 = createHash('sha256').update(datasetBytes).digest('hex');
  const training = {
    cloister_demo_model_version: DEMO_MODEL_VERSION,
    dataset: { file: 'data/clinical-notes.jsonl', sha256: datasetSha256, train: train.length, held_out: test.length },
    model: 'mean-pooled token embeddings + linear softmax classifier (fastText style)',
    hyperparameters: { ...config, min_word_count: MIN_WORD_COUNT, max_length: MODEL_MAX_LENGTH },
    vocab_size: vocab.length,
    labels,
    train_accuracy: round4(trainAccuracy),
    held_out_accuracy: round4(heldOutAccuracy),
    held_out_accuracy_by_label: perDepartment,
  };

  const id2label = Object.fromEntries(labels.map((l, i) => [String(i), l]));
  const label2id = Object.fromEntries(labels.map((l, i) => [l, i]));
  const common = {
    model_type: 'bert',
    hidden_size: weights.dim,
    vocab_size: vocab.length,
    max_position_embeddings: MODEL_MAX_LENGTH,
    pad_token_id: PAD_ID,
    'transformers.js_config': { dtype: 'fp32' },
  };
  const classifierConfig = {
    architectures: ['BertForSequenceClassification'],
    ...common,
    problem_type: 'single_label_classification',
    id2label,
    label2id,
    cloister_demo: {
      version: DEMO_MODEL_VERSION,
      task: 'text-classification',
      held_out_accuracy: round4(heldOutAccuracy),
      dataset_sha256: datasetSha256,
    },
  };
  const embedderConfig = {
    architectures: ['BertModel'],
    ...common,
    cloister_demo: { version: DEMO_MODEL_VERSION, task: 'feature-extraction', dataset_sha256: datasetSha256 },
  };
  const metadata = { cloister_demo_model_version: DEMO_MODEL_VERSION, dataset_sha256: datasetSha256 };

  const outDir = resolve(options.outDir);
  const classifierDir = join(outDir, 'classifier');
  const embedderDir = join(outDir, 'embedder');
  const tokJson = json(tokenizerJson(vocab));
  const tokConfig = json(tokenizerConfigJson());
  const write = async (dir: string, files: Readonly<Record<string, string | Uint8Array>>): Promise<void> => {
    // Replace the whole directory: a stale extra file would change the model digest.
    await rm(dir, { recursive: true, force: true });
    await mkdir(join(dir, 'onnx'), { recursive: true });
    for (const [name, data] of Object.entries(files)) await writeFile(join(dir, name), data);
  };
  await write(classifierDir, {
    'config.json': json(classifierConfig),
    'tokenizer.json': tokJson,
    'tokenizer_config.json': tokConfig,
    'training.json': json(training),
    'onnx/model.onnx': classifierOnnx(weights, metadata, DEMO_MODEL_VERSION),
  });
  await write(embedderDir, {
    'config.json': json(embedderConfig),
    'tokenizer.json': tokJson,
    'tokenizer_config.json': tokConfig,
    'onnx/model.onnx': embedderOnnx(weights, metadata, DEMO_MODEL_VERSION),
  });
  const lmDir = join(outDir, 'lm');
  await writeDemoLm(lmDir, notes, datasetSha256);
  const phiTaggerDir = join(outDir, 'phi-tagger');
  await writePhiTagger(phiTaggerDir, notes, datasetSha256);

  return {
    classifierDir,
    embedderDir,
    lmDir,
    phiTaggerDir,
    labels,
    trainExamples: train.length,
    heldOutExamples: test.length,
    trainAccuracy,
    heldOutAccuracy,
    vocabSize: vocab.length,
    buildMs: performance.now() - started,
  };
}
