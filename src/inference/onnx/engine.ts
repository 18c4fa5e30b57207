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
import { resolve } from 'node:path';

import { CloisterError } from '../../errors.js';
import type { Engine, EngineRequest, ModelInfo, RunOptions } from '../types.js';
import { BatchQueue, cancelled } from './batch-queue.js';
import type { BatchQueueStats } from './batch-queue.js';
import { DEFAULT_MAX_MODEL_FILES } from './digest.js';
import { inferTexts } from './infer.js';
import type { LoadedModel } from './infer.js';
import { loadModel, OPERATION_OF } from './load.js';
import type { OnnxModelConfig } from './load.js';
import type { LabelScore } from '../../protocol/messages.js';
import { positiveInt } from '../../core/validate.js';

export type { OnnxTask } from './infer.js';
export type { OnnxModelConfig } from './load.js';

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
export type OnnxEngineStats = BatchQueueStats;

export const ONNX_ENGINE_DEFAULTS = {
  maxQueueDepth: 256,
  maxBatchSize: 32,
  batching: true,
  maxInputsPerRequest: 64,
  maxInputChars: 16_384,
} as const;


function engineFailed(model: LoadedModel, cause: unknown): CloisterError {
  // No `cause`: library errors may quote tokens or inputs; keep only the error's class name.
  const errorName = cause instanceof Error ? cause.name : typeof cause;
  return new CloisterError('ENGINE_FAILED', 'the ONNX pipeline failed', {
    detail: { model: model.info.name, op: OPERATION_OF[model.task], errorName },
  });
}

export class OnnxEngine implements Engine {
  readonly kind = 'onnx';
  readonly #configs: readonly OnnxModelConfig[];
  readonly #queue: BatchQueue<LoadedModel>;
  readonly #maxInputs: number;
  readonly #maxChars: number;
  readonly #maxModelFiles: number;
  readonly #intraOpNumThreads: number | undefined;
  readonly #models = new Map<string, LoadedModel>();
  #state: 'new' | 'starting' | 'ready' | 'closed' = 'new';

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
    this.#queue = new BatchQueue<LoadedModel>({
      maxQueueDepth: positiveInt('maxQueueDepth', options.maxQueueDepth, ONNX_ENGINE_DEFAULTS.maxQueueDepth),
      maxBatchSize: positiveInt('maxBatchSize', options.maxBatchSize, ONNX_ENGINE_DEFAULTS.maxBatchSize),
      batching: options.batching ?? ONNX_ENGINE_DEFAULTS.batching,
    }, inferTexts, engineFailed);
    this.#maxInputs = positiveInt('maxInputsPerRequest', options.maxInputsPerRequest, ONNX_ENGINE_DEFAULTS.maxInputsPerRequest);
    this.#maxChars = positiveInt('maxInputChars', options.maxInputChars, ONNX_ENGINE_DEFAULTS.maxInputChars);
    this.#maxModelFiles = positiveInt('maxModelFiles', options.maxModelFiles, DEFAULT_MAX_MODEL_FILES);
    this.#intraOpNumThreads =
      options.intraOpNumThreads === undefined ? undefined : positiveInt('intraOpNumThreads', options.intraOpNumThreads, 1);
  }

  models(): readonly ModelInfo[] {
    return [...this.#models.values()].map((m) => m.info);
  }

  stats(): OnnxEngineStats {
    return this.#queue.stats();
  }

  /** Requests currently waiting in the queue (not running). */
  get queuedRequests(): number {
    return this.#queue.queued;
  }

  async start(): Promise<void> {
    if (this.#state !== 'new') throw new CloisterError('INVALID_ARGUMENT', 'OnnxEngine.start() may be called once');
    this.#state = 'starting';
    try {
      for (const cfg of this.#configs) {
        const model = await loadModel(cfg, { maxModelFiles: this.#maxModelFiles, intraOpNumThreads: this.#intraOpNumThreads });
        this.#models.set(cfg.name, model);
      }
      this.#state = 'ready';
    } catch (err) {
      await this.#disposeAll();
      this.#state = 'closed';
      throw err;
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

    const results = await this.#queue.enqueue(model, texts, signal);
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

  async close(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    await this.#queue.close(() => new CloisterError('ENGINE_UNAVAILABLE', 'the ONNX engine was closed'));
    await this.#disposeAll();
  }

  async #disposeAll(): Promise<void> {
    const models = [...this.#models.values()];
    this.#models.clear();
    await Promise.allSettled(models.map((m) => m.runner.dispose()));
  }
}
