/**
 * The in-TEE CPU engine (DESIGN.md "Engines", onnx): Hugging Face-layout ONNX model
 * directories loaded with @huggingface/transformers on onnxruntime-node, local files only.
 *
 * - Each model is measured (see ./digest.ts) before and after loading; a change in between
 *   fails the start, so the digest published in the key config is what was loaded.
 * - Requests wait in a bounded queue (`maxQueueDepth` across all models; OVERLOADED when
 *   full). One model call per model runs at a time; with batching on, the requests that
 *   arrived while it ran are merged into the next call (up to `maxBatchSize` texts) and the
 *   results split back per request. Batching never changes results: each text is tokenized
 *   alone, padded to the longest text in the batch with the padding masked, and
 *   post-processed from its own output rows only (test/inference/onnx-batching.test.ts).
 * - transformers.js loads the model and tokenizer (`pipeline`), but the engine drives them
 *   itself (runner.ts): the pipeline's per-call work (an ONNX Runtime TopK session per text,
 *   a BigInt per token, the regex-per-character tokenizer) capped batching at 1.4x. Plain
 *   ASCII texts take a checked fast WordPiece path (wordpiece.ts); results are the pipeline's.
 * - An aborted signal removes a queued request (CANCELLED); a request whose batch is already
 *   running is answered CANCELLED at once and its share of the result dropped.
 * - Errors never carry request content: pipeline failures become ENGINE_FAILED with only the
 *   model name, operation and error class as detail.
 */
import { readFile, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';

import { CloisterError } from '../../errors.js';
import type { Engine, EngineRequest, ModelInfo, Operation, RunOptions } from '../types.js';
import { buildBatchInputs } from './batch-inputs.js';
import { DEFAULT_MAX_MODEL_FILES, modelDigest } from './digest.js';
import { type LabelScore, meanPoolNormalized, rankLabels, tokenEntities } from './postprocess.js';
import { modelRunner, type ModelRunner } from './runner.js';
import { loadTransformers } from './transformers-env.js';
import { isRecord, positiveInt } from '../../core/validate.js';

export type OnnxTask = 'text-classification' | 'feature-extraction' | 'token-classification';

export interface OnnxModelConfig {
  /** Name requests use to address the model. */
  readonly name: string;
  /** Hugging Face-layout directory: config.json, tokenizer.json, onnx/model.onnx. */
  readonly dir: string;
  /** Task to serve; default: inferred from config.json `architectures`. */
  readonly task?: OnnxTask;
}

export interface OnnxEngineOptions {
  readonly models: readonly OnnxModelConfig[];
  /** Requests waiting (not yet running) across all models; OVERLOADED beyond. Default 256. */
  readonly maxQueueDepth?: number;
  /** Most texts in one model call when batching. Default 32. */
  readonly maxBatchSize?: number;
  /** Merge concurrent requests into one model call. Default true. */
  readonly batching?: boolean;
  /** Most texts in one request (LIMIT_EXCEEDED beyond). Default 64. */
  readonly maxInputsPerRequest?: number;
  /** Longest text, in UTF-16 code units (LIMIT_EXCEEDED beyond). Default 16384. */
  readonly maxInputChars?: number;
  /** Most files in a model directory (see digest.ts). Default 1024. */
  readonly maxModelFiles?: number;
  /** ONNX Runtime intra-op threads per session; default: ONNX Runtime's choice. */
  readonly intraOpNumThreads?: number;
}

/** Counters for benchmarks and tests; no content. */
export interface OnnxEngineStats {
  /** Model calls made for requests (the start-up checks are not counted; name kept from the pipeline days). */
  readonly pipelineCalls: number;
  /** Requests answered through those calls. */
  readonly requests: number;
  /** Most texts in one model call so far. */
  readonly largestBatch: number;
}

export const ONNX_ENGINE_DEFAULTS = {
  maxQueueDepth: 256,
  maxBatchSize: 32,
  batching: true,
  maxInputsPerRequest: 64,
  maxInputChars: 16_384,
} as const;

export type { LabelScore as ClassLabelScore, TokenEntity } from './postprocess.js';

const OPERATION_OF: Readonly<Record<OnnxTask, Operation>> = {
  'text-classification': 'classify',
  'feature-extraction': 'embed',
  'token-classification': 'token-classify',
};

interface LoadedModel {
  readonly info: ModelInfo;
  readonly task: OnnxTask;
  readonly labels: readonly string[];
  readonly runner: ModelRunner;
  readonly queue: Job[];
  running: boolean;
}

interface Job {
  readonly model: LoadedModel;
  readonly texts: readonly string[];
  readonly signal: AbortSignal;
  settled: boolean;
  resolve(results: unknown[]): void;
  reject(err: CloisterError): void;
  detach(): void;
}

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

function engineFailed(model: string, op: string, cause: unknown): CloisterError {
  // No `cause`: library errors may quote tokens or inputs; keep only the error's class name.
  const errorName = cause instanceof Error ? cause.name : typeof cause;
  return new CloisterError('ENGINE_FAILED', 'the ONNX pipeline failed', { detail: { model, op, errorName } });
}

async function disposePipeline(pipe: unknown): Promise<void> {
  if ((typeof pipe === 'object' || typeof pipe === 'function') && pipe !== null) {
    const dispose: unknown = Reflect.get(pipe, 'dispose');
    if (typeof dispose === 'function') await Promise.resolve(dispose.call(pipe)).catch(() => undefined);
  }
}

/** tokenizer.json and tokenizer_config.json (absent: {}), read between the two digests. */
async function readTokenizerFiles(dir: string): Promise<{ tokenizerJson: unknown; tokenizerConfig: unknown }> {
  const tokenizerJson: unknown = JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8'));
  const configText = await readFile(join(dir, 'tokenizer_config.json'), 'utf8').catch(() => '{}');
  const tokenizerConfig: unknown = JSON.parse(configText);
  return { tokenizerJson, tokenizerConfig };
}

/** The float32 data of a model output of the expected dims (-1: any positive size). */
function floatOutput(tensor: unknown, dims: readonly number[], what: string): Float32Array {
  if (!isRecord(tensor)) throw new TypeError(`${what} output is missing`);
  const got = tensor['dims'];
  const data = tensor['data'];
  if (!Array.isArray(got) || got.length !== dims.length || !(data instanceof Float32Array)) {
    throw new TypeError(`${what} output has the wrong shape`);
  }
  let size = 1;
  dims.forEach((d, k) => {
    const g: unknown = got[k];
    if (typeof g !== 'number' || !Number.isInteger(g) || g < 1 || (d !== -1 && g !== d)) throw new TypeError(`${what} output has the wrong shape`);
    size *= g;
  });
  if (data.length !== size) throw new TypeError(`${what} output has the wrong size`);
  return data;
}

function cancelled(): CloisterError {
  return new CloisterError('CANCELLED', 'the request was cancelled');
}

export class OnnxEngine implements Engine {
  readonly kind = 'onnx';
  readonly #configs: readonly OnnxModelConfig[];
  readonly #maxQueueDepth: number;
  readonly #maxBatchSize: number;
  readonly #batching: boolean;
  readonly #maxInputs: number;
  readonly #maxChars: number;
  readonly #maxModelFiles: number;
  readonly #intraOpNumThreads: number | undefined;
  readonly #models = new Map<string, LoadedModel>();
  #queued = 0;
  #stats = { pipelineCalls: 0, requests: 0, largestBatch: 0 };
  #state: 'new' | 'starting' | 'ready' | 'closed' = 'new';
  readonly #inFlight = new Set<Promise<void>>();

  constructor(options: OnnxEngineOptions) {
    if (!Array.isArray(options.models) || options.models.length === 0) {
      throw new CloisterError('CONFIG_INVALID', 'OnnxEngine needs at least one model');
    }
    const names = new Set<string>();
    for (const m of options.models) {
      if (typeof m.name !== 'string' || m.name.length === 0 || names.has(m.name)) {
        throw new CloisterError('CONFIG_INVALID', 'model names must be non-empty and unique');
      }
      if (typeof m.dir !== 'string' || m.dir.length === 0) throw new CloisterError('CONFIG_INVALID', 'model dir must be a path');
      names.add(m.name);
    }
    this.#configs = options.models.map((m) => ({ ...m, dir: resolve(m.dir) }));
    this.#maxQueueDepth = positiveInt('maxQueueDepth', options.maxQueueDepth, ONNX_ENGINE_DEFAULTS.maxQueueDepth);
    this.#maxBatchSize = positiveInt('maxBatchSize', options.maxBatchSize, ONNX_ENGINE_DEFAULTS.maxBatchSize);
    this.#maxInputs = positiveInt('maxInputsPerRequest', options.maxInputsPerRequest, ONNX_ENGINE_DEFAULTS.maxInputsPerRequest);
    this.#maxChars = positiveInt('maxInputChars', options.maxInputChars, ONNX_ENGINE_DEFAULTS.maxInputChars);
    this.#maxModelFiles = positiveInt('maxModelFiles', options.maxModelFiles, DEFAULT_MAX_MODEL_FILES);
    this.#batching = options.batching ?? ONNX_ENGINE_DEFAULTS.batching;
    this.#intraOpNumThreads =
      options.intraOpNumThreads === undefined ? undefined : positiveInt('intraOpNumThreads', options.intraOpNumThreads, 1);
  }

  models(): readonly ModelInfo[] {
    return [...this.#models.values()].map((m) => m.info);
  }

  stats(): OnnxEngineStats {
    return { ...this.#stats };
  }

  /** Requests currently waiting in the queue (not running). */
  get queuedRequests(): number {
    return this.#queued;
  }

  async start(): Promise<void> {
    if (this.#state !== 'new') throw new CloisterError('INVALID_ARGUMENT', 'OnnxEngine.start() may be called once');
    this.#state = 'starting';
    try {
      for (const cfg of this.#configs) {
        const model = await this.#load(cfg);
        this.#models.set(cfg.name, model);
      }
      this.#state = 'ready';
    } catch (err) {
      await this.#disposeAll();
      this.#state = 'closed';
      throw err;
    }
  }

  async #load(cfg: OnnxModelConfig): Promise<LoadedModel> {
    const dir = cfg.dir;
    const dirStat = await stat(dir).catch((cause: unknown) => {
      throw new CloisterError('NOT_FOUND', 'model directory not found', { cause, detail: { model: cfg.name } });
    });
    if (!dirStat.isDirectory()) throw new CloisterError('CONFIG_INVALID', 'model path is not a directory', { detail: { model: cfg.name } });
    await mustExist(join(dir, 'config.json'), 'config.json');
    await mustExist(join(dir, 'tokenizer.json'), 'tokenizer.json');
    await mustExist(join(dir, 'onnx', 'model.onnx'), 'onnx/model.onnx');
    let config: unknown;
    try {
      config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
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

    const before = await modelDigest(dir, { maxFiles: this.#maxModelFiles });
    const mod = await loadTransformers(dirname(dir));
    let runner: ModelRunner;
    let created: unknown;
    try {
      const sessionOptions: Record<string, unknown> = {};
      if (this.#intraOpNumThreads !== undefined) sessionOptions['intraOpNumThreads'] = this.#intraOpNumThreads;
      created = await mod.pipeline(task, dir, {
        local_files_only: true,
        device: 'cpu',
        dtype: 'fp32',
        subfolder: 'onnx',
        model_file_name: 'model',
        session_options: sessionOptions,
      });
      runner = modelRunner(created, mod, await readTokenizerFiles(dir));
    } catch (cause) {
      await disposePipeline(created);
      throw new CloisterError('CONFIG_INVALID', 'the model could not be loaded', { cause, detail: { model: cfg.name, task } });
    }
    const after = await modelDigest(dir, { maxFiles: this.#maxModelFiles });
    if (!sameBytes(before, after)) {
      await runner.dispose();
      throw new CloisterError('CONFIG_INVALID', 'model files changed while loading', { detail: { model: cfg.name } });
    }
    const model: LoadedModel = {
      info: { name: cfg.name, task, operations: [OPERATION_OF[task]], digest: after },
      task,
      labels,
      runner,
      queue: [],
      running: false,
    };
    await this.#selfCheck(model);
    return model;
  }

  /** Start-up check (fail closed): the model answers a fixed input with well-formed output. */
  async #selfCheck(model: LoadedModel): Promise<void> {
    let out: unknown[];
    try {
      out = await this.#infer(model, ['start-up check']);
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

  run(request: EngineRequest, options: RunOptions): AsyncIterable<unknown> {
    return this.#run(request, options);
  }

  async *#run(request: EngineRequest, options: RunOptions): AsyncGenerator<unknown> {
    yield await this.#handle(request, options.signal);
  }

  async #handle(request: EngineRequest, signal: AbortSignal): Promise<unknown> {
    if (this.#state !== 'ready') throw new CloisterError('ENGINE_UNAVAILABLE', 'the ONNX engine is not running');
    const model = this.#models.get(request.model);
    if (model === undefined) throw new CloisterError('UNKNOWN_MODEL', 'no such model', { detail: { model: request.model } });
    if (!model.info.operations.includes(request.op)) {
      throw new CloisterError('UNKNOWN_OPERATION', 'the model does not offer this operation', {
        detail: { model: request.model, op: request.op },
      });
    }
    const { texts, single } = this.#inputs(request.input);
    const topK = this.#params(model, request.params);
    if (signal.aborted) throw cancelled();

    const results = await this.#enqueue(model, texts, signal);
    const shaped = model.task === 'text-classification' ? results.map((r) => (r as LabelScore[]).slice(0, topK)) : results;
    return single ? shaped[0] : shaped;
  }

  #inputs(input: unknown): { texts: string[]; single: boolean } {
    const single = typeof input === 'string';
    const texts: unknown[] = single ? [input] : Array.isArray(input) ? input : [];
    if (!single && !Array.isArray(input)) throw new CloisterError('INVALID_ARGUMENT', 'input must be a string or an array of strings');
    if (texts.length === 0) throw new CloisterError('INVALID_ARGUMENT', 'input must not be empty', { detail: { public: true } });
    if (texts.length > this.#maxInputs) {
      throw new CloisterError('LIMIT_EXCEEDED', `${texts.length} inputs in one request exceed maxInputsPerRequest (${this.#maxInputs})`, {
        detail: { limit: 'maxInputsPerRequest', max: this.#maxInputs, public: true },
      });
    }
    const out: string[] = [];
    for (const t of texts) {
      if (typeof t !== 'string') throw new CloisterError('INVALID_ARGUMENT', 'every input must be a string');
      if (t.length > this.#maxChars) {
        throw new CloisterError('LIMIT_EXCEEDED', `an input text of ${t.length} characters exceeds maxInputChars (${this.#maxChars}; serve --max-input-chars)`, {
          detail: { limit: 'maxInputChars', max: this.#maxChars, public: true },
        });
      }
      // An empty text has nothing to classify: refused, not answered with a guess.
      if (t.length === 0) throw new CloisterError('INVALID_ARGUMENT', 'an input text is empty', { detail: { public: true } });
      out.push(t);
    }
    return { texts: out, single };
  }

  /** Validates params for the model's task; returns topK for classification (0 otherwise). */
  #params(model: LoadedModel, params: Readonly<Record<string, unknown>>): number {
    const allowed = model.task === 'text-classification' ? ['topK'] : [];
    for (const key of Object.keys(params)) {
      if (!allowed.includes(key)) throw new CloisterError('INVALID_ARGUMENT', 'unknown parameter', { detail: { param: key } });
    }
    if (model.task !== 'text-classification') return 0;
    const topK = params['topK'] ?? 1;
    if (typeof topK !== 'number' || !Number.isInteger(topK) || topK < 1 || topK > model.labels.length) {
      throw new CloisterError('INVALID_ARGUMENT', 'topK must be an integer from 1 to the number of labels', {
        detail: { max: model.labels.length },
      });
    }
    return topK;
  }

  #enqueue(model: LoadedModel, texts: readonly string[], signal: AbortSignal): Promise<unknown[]> {
    if (this.#queued >= this.#maxQueueDepth) {
      throw new CloisterError('OVERLOADED', 'the ONNX engine queue is full', { detail: { maxQueueDepth: this.#maxQueueDepth } });
    }
    return new Promise<unknown[]>((resolvePromise, rejectPromise) => {
      const onAbort = (): void => {
        const i = model.queue.indexOf(job);
        if (i >= 0) {
          model.queue.splice(i, 1);
          this.#queued--;
        }
        job.reject(cancelled());
      };
      const job: Job = {
        model,
        texts,
        signal,
        settled: false,
        resolve: (r) => {
          if (job.settled) return;
          job.settled = true;
          job.detach();
          resolvePromise(r);
        },
        reject: (e) => {
          if (job.settled) return;
          job.settled = true;
          job.detach();
          rejectPromise(e);
        },
        detach: () => signal.removeEventListener('abort', onAbort),
      };
      signal.addEventListener('abort', onAbort, { once: true });
      model.queue.push(job);
      this.#queued++;
      this.#pump(model);
    });
  }

  #pump(model: LoadedModel): void {
    if (model.running || model.queue.length === 0 || this.#state !== 'ready') return;
    const batch: Job[] = [];
    let count = 0;
    while (model.queue.length > 0) {
      const next = model.queue[0];
      if (next === undefined) break;
      if (batch.length > 0 && (!this.#batching || count + next.texts.length > this.#maxBatchSize)) break;
      model.queue.shift();
      this.#queued--;
      batch.push(next);
      count += next.texts.length;
      if (!this.#batching) break;
    }
    model.running = true;
    const done = this.#runBatch(model, batch).finally(() => {
      model.running = false;
      this.#inFlight.delete(done);
      this.#pump(model);
    });
    this.#inFlight.add(done);
  }

  async #runBatch(model: LoadedModel, batch: readonly Job[]): Promise<void> {
    const live = batch.filter((j) => !j.settled);
    if (live.length === 0) return;
    const texts = live.flatMap((j) => j.texts);
    this.#stats.pipelineCalls++;
    this.#stats.requests += live.length;
    this.#stats.largestBatch = Math.max(this.#stats.largestBatch, texts.length);
    try {
      const results = await this.#infer(model, texts);
      let offset = 0;
      for (const job of live) {
        job.resolve(results.slice(offset, offset + job.texts.length));
        offset += job.texts.length;
      }
    } catch (cause) {
      const err = engineFailed(model.info.name, OPERATION_OF[model.task], cause);
      for (const job of live) job.reject(err);
    }
  }

  /**
   * One model call over `texts`; one result per text, validated before it is returned.
   * Each text is tokenized alone, padded to the longest in the batch with its padding
   * masked, and post-processed from its own rows only (postprocess.ts).
   */
  async #infer(model: LoadedModel, texts: string[]): Promise<unknown[]> {
    const runner = model.runner;
    const encoded = runner.encode(texts);
    const needsTypes = runner.inputNames.has('token_type_ids');
    const batch = buildBatchInputs(encoded.ids, needsTypes ? encoded.typeIds : undefined, {
      padId: runner.padId,
      side: runner.paddingSide,
      withTokenTypes: needsTypes,
    });
    const feeds: Record<string, BigInt64Array> = { input_ids: batch.inputIds };
    if (runner.inputNames.has('attention_mask')) feeds['attention_mask'] = batch.attentionMask;
    if (batch.tokenTypeIds !== undefined) feeds['token_type_ids'] = batch.tokenTypeIds;
    const out = await runner.run(feeds, batch.rows, batch.seq);
    const rows = texts.length;
    switch (model.task) {
      case 'text-classification': {
        const n = model.labels.length;
        const logits = floatOutput(out['logits'], [rows, n], 'classification');
        const scratch = new Float32Array(n);
        return texts.map((_, i) => rankLabels(logits, i, model.labels, scratch));
      }
      case 'feature-extraction': {
        // The feature-extraction pipeline pools the first of these outputs the model has.
        const hidden = out['last_hidden_state'] ?? out['logits'] ?? out['token_embeddings'];
        const data = floatOutput(hidden, [rows, batch.seq, -1], 'embedding');
        const dim = data.length / (rows * batch.seq);
        return texts.map((_, i) => meanPoolNormalized(data, i, batch.seq, dim, batch.starts[i] ?? 0, encoded.ids[i]?.length ?? 0));
      }
      case 'token-classification': {
        const n = model.labels.length;
        const logits = floatOutput(out['logits'], [rows, batch.seq, n], 'token');
        const scratch = new Float32Array(n);
        const decode = (id: number): string => runner.decodeToken(id);
        return texts.map((_, i) =>
          tokenEntities(logits, i, batch.seq, model.labels, encoded.ids[i] ?? [], batch.starts[i] ?? 0, decode, scratch),
        );
      }
    }
  }

  async close(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    for (const model of this.#models.values()) {
      for (const job of model.queue.splice(0)) {
        this.#queued--;
        job.reject(new CloisterError('ENGINE_UNAVAILABLE', 'the ONNX engine was closed'));
      }
    }
    await Promise.allSettled([...this.#inFlight]);
    await this.#disposeAll();
  }

  async #disposeAll(): Promise<void> {
    const models = [...this.#models.values()];
    this.#models.clear();
    await Promise.allSettled(models.map((m) => m.runner.dispose()));
  }
}
