/**
 * Loading one ONNX model directory (Hugging Face layout: config.json, tokenizer.json,
 * onnx/model.onnx) with @huggingface/transformers on onnxruntime-node, local files only.
 *
 * The directory is measured (./digest.ts) before and after loading; a change in between fails
 * the start, so the digest published in the key config is what was loaded. A start-up check
 * (fail closed) runs a fixed input through the model and checks the output's shape.
 */
import { readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';

import { CloisterError } from '../../errors.js';
import type { Operation } from '../types.js';
import { modelDigest, modelDigestOfFiles } from './digest.js';
import { inferTexts } from './infer.js';
import type { LoadedModel, OnnxTask } from './infer.js';
import { modelRunner, type ModelRunner } from './runner.js';
import { loadTransformers, registerMemoryModel } from './transformers-env.js';
import { isRecord } from '../../core/validate.js';

export interface OnnxModelConfig {
  /** Name requests use to address the model. */
  readonly name: string;
  /** Hugging Face-layout directory: config.json, tokenizer.json, onnx/model.onnx. */
  readonly dir: string;
  /** Task to serve; default: inferred from config.json `architectures`. */
  readonly task?: OnnxTask;
  /**
   * The model held in memory instead (a sealed model opened inside the TEE): relative path ->
   * contents. `dir` is then only a virtual name (an absolute path that must not exist on disk),
   * and nothing is read from disk.
   */
  readonly files?: ReadonlyMap<string, Uint8Array>;
}

export interface LoadOptions {
  /** Most files in a model directory (see digest.ts). */
  readonly maxModelFiles: number;
  /** ONNX Runtime intra-op threads per session; undefined: ONNX Runtime's choice. */
  readonly intraOpNumThreads: number | undefined;
}

export const OPERATION_OF: Readonly<Record<OnnxTask, Operation>> = {
  'text-classification': 'classify',
  'feature-extraction': 'embed',
  'token-classification': 'token-classify',
};

async function mustExist(path: string, what: string): Promise<void> {
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new CloisterError('CONFIG_INVALID', `${what} is not a regular file`);
  } catch (cause) {
    if (cause instanceof CloisterError) throw cause;
    throw new CloisterError('NOT_FOUND', `model ${what} not found`, { cause, detail: { file: what } });
  }
}

function inferTask(config: Record<string, unknown>): OnnxTask | undefined {
  const arch = config['architectures'];
  if (!Array.isArray(arch)) return undefined;
  const names = arch.filter((a): a is string => typeof a === 'string');
  if (names.some((a) => a.endsWith('ForSequenceClassification'))) return 'text-classification';
  if (names.some((a) => a.endsWith('ForTokenClassification'))) return 'token-classification';
  if (names.some((a) => a.endsWith('Model'))) return 'feature-extraction';
  return undefined;
}

function labelsOf(config: Record<string, unknown>): string[] {
  const id2label = config['id2label'];
  if (!isRecord(id2label)) return [];
  const labels: string[] = [];
  for (let i = 0; i < Object.keys(id2label).length; i++) {
    const l = id2label[String(i)];
    if (typeof l !== 'string') throw new CloisterError('CONFIG_INVALID', 'config.json id2label is not a dense list of strings');
    labels.push(l);
  }
  return labels;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

async function disposePipeline(pipe: unknown): Promise<void> {
  if ((typeof pipe === 'object' || typeof pipe === 'function') && pipe !== null) {
    const dispose: unknown = Reflect.get(pipe, 'dispose');
    if (typeof dispose === 'function') await Promise.resolve(dispose.call(pipe)).catch(() => undefined);
  }
}

/** Where a model's files come from: its directory, or memory (a sealed model). */
interface ModelSource {
  mustExist(rel: string): Promise<void>;
  readText(rel: string): Promise<string>;
  digest(): Promise<Uint8Array>;
}

function diskSource(dir: string, maxFiles: number): ModelSource {
  return {
    mustExist: (rel) => mustExist(join(dir, ...rel.split('/')), rel),
    readText: (rel) => readFile(join(dir, ...rel.split('/')), 'utf8'),
    digest: () => modelDigest(dir, { maxFiles }),
  };
}

function memorySource(files: ReadonlyMap<string, Uint8Array>): ModelSource {
  return {
    mustExist: (rel) => (files.has(rel) ? Promise.resolve() : Promise.reject(new CloisterError('NOT_FOUND', `model ${rel} not found`, { detail: { file: rel } }))),
    readText: (rel) => {
      const b = files.get(rel);
      return b === undefined ? Promise.reject(new CloisterError('NOT_FOUND', `model ${rel} not found`)) : Promise.resolve(new TextDecoder('utf-8', { fatal: true }).decode(b));
    },
    digest: () => Promise.resolve(modelDigestOfFiles(files)),
  };
}

/** tokenizer.json and tokenizer_config.json (absent: {}), read between the two digests. */
async function readTokenizerFiles(src: ModelSource): Promise<{ tokenizerJson: unknown; tokenizerConfig: unknown }> {
  const tokenizerJson: unknown = JSON.parse(await src.readText('tokenizer.json'));
  const configText = await src.readText('tokenizer_config.json').catch(() => '{}');
  const tokenizerConfig: unknown = JSON.parse(configText);
  return { tokenizerJson, tokenizerConfig };
}

/** config.json read and checked: the task to serve and its labels. */
async function readModelConfig(cfg: OnnxModelConfig, src: ModelSource): Promise<{ task: OnnxTask; labels: string[] }> {
  const dir = cfg.dir;
  if (cfg.files === undefined) {
    const dirStat = await stat(dir).catch((cause: unknown) => {
      throw new CloisterError('NOT_FOUND', 'model directory not found', { cause, detail: { model: cfg.name } });
    });
    if (!dirStat.isDirectory()) throw new CloisterError('CONFIG_INVALID', 'model path is not a directory', { detail: { model: cfg.name } });
  } else if (await stat(dir).then(() => true, () => false)) {
    // The virtual name must miss on disk, so transformers.js can only read the memory copy.
    throw new CloisterError('CONFIG_INVALID', 'the virtual directory of an in-memory model exists on disk', { detail: { model: cfg.name } });
  }
  await src.mustExist('config.json');
  await src.mustExist('tokenizer.json');
  await src.mustExist('onnx/model.onnx');
  let config: unknown;
  try {
    config = JSON.parse(await src.readText('config.json'));
  } catch (cause) {
    throw new CloisterError('CONFIG_INVALID', 'config.json is not valid JSON', { cause, detail: { model: cfg.name } });
  }
  if (!isRecord(config) || typeof config['model_type'] !== 'string') {
    throw new CloisterError('CONFIG_INVALID', 'config.json has no model_type', { detail: { model: cfg.name } });
  }
  const task = cfg.task ?? inferTask(config);
  if (task === undefined) {
    throw new CloisterError('CONFIG_INVALID', 'cannot infer the task from config.json architectures; set task', {
      detail: { model: cfg.name },
    });
  }
  const labels = labelsOf(config);
  if (task !== 'feature-extraction' && labels.length === 0) {
    throw new CloisterError('CONFIG_INVALID', 'config.json needs id2label for a classification task', { detail: { model: cfg.name } });
  }
  return { task, labels };
}

/** The model runner for `dir` (transformers.js loads model and tokenizer; runner.ts drives them). */
async function createRunner(cfg: OnnxModelConfig, src: ModelSource, task: OnnxTask, options: LoadOptions): Promise<ModelRunner> {
  const dir = cfg.dir;
  const mod = await loadTransformers(dirname(dir));
  const unregister = cfg.files === undefined ? undefined : registerMemoryModel(dir, cfg.files);
  let created: unknown;
  try {
    const sessionOptions: Record<string, unknown> = {};
    if (options.intraOpNumThreads !== undefined) sessionOptions['intraOpNumThreads'] = options.intraOpNumThreads;
    created = await mod.pipeline(task, dir, {
      local_files_only: true,
      device: 'cpu',
      dtype: 'fp32',
      subfolder: 'onnx',
      model_file_name: 'model',
      session_options: sessionOptions,
    });
    return modelRunner(created, mod, await readTokenizerFiles(src));
  } catch (cause) {
    await disposePipeline(created);
    throw new CloisterError('CONFIG_INVALID', 'the model could not be loaded', { cause, detail: { model: cfg.name, task } });
  } finally {
    unregister?.();
  }
}

/** Start-up check (fail closed): the model answers a fixed input with well-formed output. */
async function selfCheck(model: LoadedModel): Promise<void> {
  let out: unknown[];
  try {
    out = await inferTexts(model, ['start-up check']);
  } catch (cause) {
    await model.runner.dispose();
    throw new CloisterError('ENGINE_UNAVAILABLE', 'model failed its start-up check', { cause, detail: { model: model.info.name } });
  }
  const first = out[0];
  const ok =
    model.task === 'text-classification'
      ? Array.isArray(first) && first.length === model.labels.length
      : model.task === 'feature-extraction'
        ? Array.isArray(first) && first.length > 0
        : Array.isArray(first);
  if (!ok) {
    await model.runner.dispose();
    throw new CloisterError('ENGINE_UNAVAILABLE', 'model output has an unexpected shape', { detail: { model: model.info.name } });
  }
}

/** Load, measure and check one model directory or in-memory model (`cfg.dir` already absolute). */
export async function loadModel(cfg: OnnxModelConfig, options: LoadOptions): Promise<LoadedModel> {
  const src = cfg.files === undefined ? diskSource(cfg.dir, options.maxModelFiles) : memorySource(cfg.files);
  const { task, labels } = await readModelConfig(cfg, src);
  const before = await src.digest();
  const runner = await createRunner(cfg, src, task, options);
  const after = await src.digest();
  if (!sameBytes(before, after)) {
    await runner.dispose();
    throw new CloisterError('CONFIG_INVALID', 'model files changed while loading', { detail: { model: cfg.name } });
  }
  const model: LoadedModel = {
    info: { name: cfg.name, task, operations: [OPERATION_OF[task]], digest: after },
    task,
    labels,
    runner,
  };
  await selfCheck(model);
  return model;
}
