/**
 * The in-TEE CPU generation engine (docs/GENERATION.md): decoder-only models in the Hugging
 * Face / Optimum ONNX layout (./model.ts), loaded with transformers.js on onnxruntime-node,
 * local files only, served as the OpenAI operations `chat` and `completion` with the same
 * request and response shapes an upstream engine relays, so the gateway and the SDK treat
 * both alike.
 *
 * - The digest of each model directory (../onnx/digest.ts) is taken before and after loading;
 *   a change in between fails the start. The digest goes into the key config.
 * - The decode loop is the engine's own (transformers.js runs each model step): the KV cache
 *   is carried between steps, the chat template is applied here (inside the TEE), sampling is
 *   seeded (./sampling.ts), stop sequences are cut (./text.ts), and every step first checks
 *   the request's signal, so a cancel, a disconnect or the deadline frees the CPU within one
 *   step (a decode step or one prefill chunk).
 * - Admission and CPU sharing: ./scheduler.ts (bounded active generations, bounded queue, one
 *   step at a time in FIFO turns).
 * - Memory: the prompt plus max_tokens must fit `maxKvTokens` (LIMIT_EXCEEDED naming it and
 *   its size in bytes), so KV memory is at most maxActiveGenerations * maxKvTokens * bytes/token.
 * - Errors never carry request content; library failures become ENGINE_FAILED naming only the
 *   model and the error class.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { dirname, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';

import { CloisterError } from '../../errors.js';
import { DEFAULT_MAX_MODEL_FILES, modelDigest } from '../onnx/digest.js';
import { loadTransformers } from '../onnx/transformers-env.js';
import type { Engine, EngineRequest, ModelInfo, Operation, RunOptions } from '../types.js';
import { GENERATION_DTYPES, type GenerationDtype, type LoadedGenerator, loadGenerator, ONNX_FILE_OF } from './model.js';
import { type GenerationOp, type GenerationRequest, type ParamLimits, parseGenerationRequest } from './params.js';
import { applyPenalties, chooseToken, type SamplingParams, SamplingRng } from './sampling.js';
import { generationSemaphore } from './scheduler.js';
import type { FifoSemaphore } from './scheduler.js';
import { IncrementalText, StopText } from './text.js';

export type { GenerationDtype } from './model.js';

export interface GenerationModelConfig {
  /** Name requests use to address the model. */
  readonly name: string;
  /** Hugging Face / Optimum layout directory (see ./model.ts). */
  readonly dir: string;
  /** Which ONNX variant to load: fp32 (onnx/model.onnx), q8 (model_quantized), q4 (model_q4). Default fp32. */
  readonly dtype?: GenerationDtype;
}

export interface GenerationEngineOptions {
  readonly models: readonly GenerationModelConfig[];
  /** Generations holding a KV cache and taking steps at once. Default 4. */
  readonly maxActiveGenerations?: number;
  /** Generations waiting for an active slot; OVERLOADED beyond. Default 64. */
  readonly maxQueueDepth?: number;
  /** Most tokens (prompt + generated) in one generation's KV cache; LIMIT_EXCEEDED beyond. Default 4096 (capped by config.json max_position_embeddings). */
  readonly maxKvTokens?: number;
  /** Largest max_tokens a request may ask for (and the default bound). Default 2048. */
  readonly maxNewTokens?: number;
  /** Most prompt characters (all messages together). Default 65536. */
  readonly maxInputChars?: number;
  /** Most chat messages in one request. Default 256. */
  readonly maxMessages?: number;
  /** Most prompt tokens fed to the model in one step (prefill in chunks). Default 512. */
  readonly prefillChunkTokens?: number;
  /** ONNX Runtime intra-op threads per session; default: ONNX Runtime's choice (all cores). */
  readonly intraOpNumThreads?: number;
  /** Most files in a model directory (see ../onnx/digest.ts). Default 1024. */
  readonly maxModelFiles?: number;
  /**
   * Streams: after the first text chunk (sent at once), text produced less than this many
   * milliseconds after the last chunk waits and goes out with the next piece, so one sealed
   * chunk carries several tokens of a fast model (each chunk costs sealing, framing and the
   * client's opening, docs/PERFORMANCE.md). A token waits at most this long plus one turn of
   * steps (one step per active generation); a model whose step takes longer is streamed token
   * by token. 0 sends every piece as it comes. Default 8.
   */
  readonly streamCoalesceMs?: number;
}

export const GENERATION_ENGINE_DEFAULTS = {
  maxActiveGenerations: 4,
  maxQueueDepth: 64,
  maxKvTokens: 4096,
  maxNewTokens: 2048,
  maxInputChars: 65_536,
  maxMessages: 256,
  maxStopSequences: 4,
  maxStopChars: 256,
  prefillChunkTokens: 512,
  streamCoalesceMs: 8,
} as const;

/** Counters for tests and benchmarks; no content. */
export interface GenerationEngineStats {
  /** Model steps run (prefill chunks and decode steps). */
  readonly steps: number;
  /** Generations currently holding a slot / waiting for one. */
  readonly active: number;
  readonly queued: number;
}

interface Served {
  readonly info: ModelInfo;
  readonly gen: LoadedGenerator;
  readonly maxKvTokens: number;
}

type KvCache = Record<string, unknown>;

interface StepOut {
  readonly logits: Float32Array;
  readonly cache: KvCache;
}

export type FinishReason = 'stop' | 'length';

/** One piece of a generation: text as it is produced, then the end with usage. */
export type GenerationEvent =
  | { readonly kind: 'text'; readonly text: string }
  | { readonly kind: 'end'; readonly finishReason: FinishReason; readonly promptTokens: number; readonly completionTokens: number };

function positiveInt(value: number | undefined, fallback: number, name: string): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < 1) throw new CloisterError('CONFIG_INVALID', `${name} must be a positive integer`);
  return v;
}

function cancelled(): CloisterError {
  return new CloisterError('CANCELLED', 'the request was cancelled');
}

function engineFailed(model: string, cause: unknown): CloisterError {
  if (cause instanceof CloisterError) return cause;
  // No `cause`: library errors may quote token ids or text.
  const errorName = cause instanceof Error ? cause.name : typeof cause;
  return new CloisterError('ENGINE_FAILED', 'the generation step failed', { detail: { model, errorName } });
}

function mib(bytes: number): string {
  return (bytes / (1024 * 1024)).toFixed(1);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}

export class GenerationEngine implements Engine {
  readonly kind = 'onnx-generate';
  readonly #configs: readonly (GenerationModelConfig & { dtype: GenerationDtype })[];
  readonly #maxKvTokens: number;
  readonly #maxNewTokens: number;
  readonly #prefillChunk: number;
  readonly #limits: ParamLimits;
  readonly #intraOp: number | undefined;
  readonly #maxModelFiles: number;
  readonly #coalesceMs: number;
  readonly #slots: FifoSemaphore;
  readonly #steps: FifoSemaphore;
  readonly #models = new Map<string, Served>();
  readonly #closing = new AbortController();
  #stepCount = 0;
  /** The step running now (one at a time); close() waits for it before disposing sessions. */
  #inFlight: Promise<void> = Promise.resolve();
  #state: 'new' | 'starting' | 'ready' | 'closed' = 'new';

  constructor(options: GenerationEngineOptions) {
    if (!Array.isArray(options.models) || options.models.length === 0) {
      throw new CloisterError('CONFIG_INVALID', 'GenerationEngine needs at least one model');
    }
    const names = new Set<string>();
    this.#configs = options.models.map((m) => {
      if (typeof m.name !== 'string' || m.name === '' || names.has(m.name)) throw new CloisterError('CONFIG_INVALID', 'model names must be non-empty and unique');
      if (typeof m.dir !== 'string' || m.dir === '') throw new CloisterError('CONFIG_INVALID', 'model dir must be a path');
      const dtype = m.dtype ?? 'fp32';
      if (!GENERATION_DTYPES.includes(dtype)) throw new CloisterError('CONFIG_INVALID', `dtype must be one of ${GENERATION_DTYPES.join(', ')}`);
      names.add(m.name);
      return { ...m, dir: resolve(m.dir), dtype };
    });
    const d = GENERATION_ENGINE_DEFAULTS;
    this.#maxKvTokens = positiveInt(options.maxKvTokens, d.maxKvTokens, 'maxKvTokens');
    this.#maxNewTokens = positiveInt(options.maxNewTokens, d.maxNewTokens, 'maxNewTokens');
    this.#prefillChunk = positiveInt(options.prefillChunkTokens, d.prefillChunkTokens, 'prefillChunkTokens');
    this.#limits = {
      maxInputChars: positiveInt(options.maxInputChars, d.maxInputChars, 'maxInputChars'),
      maxMessages: positiveInt(options.maxMessages, d.maxMessages, 'maxMessages'),
      maxStopSequences: d.maxStopSequences,
      maxStopChars: d.maxStopChars,
    };
    this.#intraOp = options.intraOpNumThreads === undefined ? undefined : positiveInt(options.intraOpNumThreads, 1, 'intraOpNumThreads');
    const coalesce = options.streamCoalesceMs ?? d.streamCoalesceMs;
    if (!Number.isFinite(coalesce) || coalesce < 0 || coalesce > 10_000) throw new CloisterError('CONFIG_INVALID', 'streamCoalesceMs must be a number of milliseconds from 0 to 10000');
    this.#coalesceMs = coalesce;
    this.#maxModelFiles = positiveInt(options.maxModelFiles, DEFAULT_MAX_MODEL_FILES, 'maxModelFiles');
    const maxQueued = options.maxQueueDepth ?? d.maxQueueDepth;
    if (!Number.isSafeInteger(maxQueued) || maxQueued < 0) throw new CloisterError('CONFIG_INVALID', 'maxQueueDepth must be a non-negative integer');
    this.#slots = generationSemaphore(positiveInt(options.maxActiveGenerations, d.maxActiveGenerations, 'maxActiveGenerations'), maxQueued, 'maxQueueDepth');
    // Steps wait only behind active generations (at most maxActiveGenerations - 1 others).
    this.#steps = generationSemaphore(1, Number.MAX_SAFE_INTEGER, 'steps');
  }

  models(): readonly ModelInfo[] {
    return [...this.#models.values()].map((m) => ({ ...m.info, operations: [...m.info.operations], digest: m.info.digest.slice() }));
  }

  stats(): GenerationEngineStats {
    return { steps: this.#stepCount, active: this.#slots.active, queued: this.#slots.queued };
  }

  /** KV cache bytes per token of a served model (for sizing maxKvTokens; docs/GENERATION.md). */
  kvBytesPerToken(model: string): number | undefined {
    return this.#models.get(model)?.gen.kvBytesPerToken;
  }

  async start(): Promise<void> {
    if (this.#state !== 'new') throw new CloisterError('INVALID_ARGUMENT', 'GenerationEngine.start() may be called once');
    this.#state = 'starting';
    try {
      for (const cfg of this.#configs) this.#models.set(cfg.name, await this.#load(cfg));
      this.#state = 'ready';
    } catch (err) {
      await this.#disposeAll();
      this.#state = 'closed';
      throw err;
    }
  }

  async #load(cfg: GenerationModelConfig & { dtype: GenerationDtype }): Promise<Served> {
    const before = await modelDigest(cfg.dir, { maxFiles: this.#maxModelFiles }).catch((cause: unknown) => {
      if (cause instanceof CloisterError && cause.code !== 'NOT_FOUND') throw cause;
      throw new CloisterError('NOT_FOUND', `model '${cfg.name}': directory ${cfg.dir} not found`, { cause, detail: { model: cfg.name } });
    });
    const mod = await loadTransformers(dirname(cfg.dir));
    const sessionOptions: Record<string, unknown> = {};
    if (this.#intraOp !== undefined) sessionOptions['intraOpNumThreads'] = this.#intraOp;
    const gen = await loadGenerator(mod, cfg.dir, cfg.name, cfg.dtype, sessionOptions);
    try {
      const after = await modelDigest(cfg.dir, { maxFiles: this.#maxModelFiles });
      if (!Buffer.from(before).equals(Buffer.from(after))) {
        throw new CloisterError('CONFIG_INVALID', `model '${cfg.name}': files changed while loading`, { detail: { model: cfg.name } });
      }
      const operations: Operation[] = gen.hasChatTemplate ? ['chat', 'completion'] : ['completion'];
      const served: Served = {
        info: { name: cfg.name, task: 'text-generation', operations, digest: after },
        gen,
        maxKvTokens: Math.min(this.#maxKvTokens, gen.maxPositions ?? Number.MAX_SAFE_INTEGER),
      };
      await this.#selfCheck(served, cfg);
      return served;
    } catch (err) {
      await gen.model.dispose().catch(() => undefined);
      throw err;
    }
  }

  /** Start-up check (fail closed): one prefill step gives logits of config.json's vocabulary size. */
  async #selfCheck(m: Served, cfg: GenerationModelConfig & { dtype: GenerationDtype }): Promise<void> {
    const ids = m.gen.tokenizer.encode('start-up check', { add_special_tokens: true });
    if (ids.length === 0) throw new CloisterError('CONFIG_INVALID', `model '${cfg.name}': tokenizer.json gives no tokens for text`, { detail: { model: cfg.name, file: 'tokenizer.json' } });
    let out: StepOut;
    try {
      out = await this.#step(m, ids, undefined, ids.length, this.#closing.signal);
    } catch (err) {
      if (err instanceof CloisterError && err.code === 'CONFIG_INVALID') throw err;
      throw new CloisterError('ENGINE_UNAVAILABLE', `model '${cfg.name}' failed its start-up step`, { cause: err, detail: { model: cfg.name } });
    }
    if (!out.logits.every((x) => !Number.isNaN(x))) {
      throw new CloisterError('ENGINE_UNAVAILABLE', `model '${cfg.name}' gives NaN logits`, { detail: { model: cfg.name } });
    }
  }

  run(request: EngineRequest, options: RunOptions): AsyncIterable<unknown> {
    return this.#run(request, options.signal);
  }

  async *#run(request: EngineRequest, signal: AbortSignal): AsyncGenerator<unknown, void, undefined> {
    if (this.#state !== 'ready') throw new CloisterError('ENGINE_UNAVAILABLE', 'the generation engine is not running');
    const m = this.#models.get(request.model);
    if (m === undefined) throw new CloisterError('UNKNOWN_MODEL', 'no such model', { detail: { model: request.model } });
    const op = request.op;
    if ((op !== 'chat' && op !== 'completion') || !m.info.operations.includes(op)) {
      throw new CloisterError('UNKNOWN_OPERATION', `model '${m.info.name}' offers ${m.info.operations.join(', ')}`, {
        detail: { model: request.model, op, public: true },
      });
    }
    const req = parseGenerationRequest(op, request.input, request.params, this.#limits);
    const id = `${op === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`;
    const created = Math.floor(Date.now() / 1000);
    const model = m.info.name;
    // A chat answer starts at its first visible character (a continuation's leading space is
    // the tokenizer's, not the answer's); a completion keeps it, as OpenAI's does.
    const events = op === 'chat' ? trimStart(this.generate(model, req, signal)) : this.generate(model, req, signal);
    if (!request.stream) {
      let text = '';
      for await (const e of events) {
        if (e.kind === 'text') {
          text += e.text;
          continue;
        }
        const usage = { prompt_tokens: e.promptTokens, completion_tokens: e.completionTokens, total_tokens: e.promptTokens + e.completionTokens };
        const choice = op === 'chat'
          ? { index: 0, message: { role: 'assistant', content: text }, logprobs: null, finish_reason: e.finishReason }
          : { index: 0, text, logprobs: null, finish_reason: e.finishReason };
        yield { id, object: op === 'chat' ? 'chat.completion' : 'text_completion', created, model, choices: [choice], usage };
      }
      return;
    }
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}): Record<string, unknown> => ({
      id,
      object: op === 'chat' ? 'chat.completion.chunk' : 'text_completion',
      created,
      model,
      choices,
      ...extra,
    });
    const piece = (text: string | undefined, finish: FinishReason | null): unknown =>
      op === 'chat'
        ? { index: 0, delta: text === undefined ? {} : { content: text }, logprobs: null, finish_reason: finish }
        : { index: 0, text: text ?? '', logprobs: null, finish_reason: finish };
    // The first event is awaited before anything is sent: a refusal (queue full, KV bound) then
    // reaches the client as an error, not as a stream that breaks off after its first chunk.
    const iterator = events[Symbol.asyncIterator]();
    const first = await iterator.next();
    if (op === 'chat') yield chunk([{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
    const rest = async function* (): AsyncGenerator<GenerationEvent, void, undefined> {
      try {
        if (first.done === true) return;
        yield first.value;
        for (let next = await iterator.next(); next.done !== true; next = await iterator.next()) yield next.value;
      } finally {
        // A consumer that stops early ends the generation too (its slot is released).
        await iterator.return?.();
      }
    };
    // Text that came soon after the last chunk waits for the next piece (streamCoalesceMs).
    let pending = '';
    let sentAt = Number.NEGATIVE_INFINITY;
    for await (const e of rest()) {
      if (e.kind === 'text') {
        pending += e.text;
        const now = performance.now();
        if (now - sentAt < this.#coalesceMs) continue;
        sentAt = now;
        const text = pending;
        pending = '';
        yield chunk([piece(text, null)]);
        continue;
      }
      if (pending !== '') yield chunk([piece(pending, null)]);
      pending = '';
      yield chunk([piece(undefined, e.finishReason)]);
      if (req.includeUsage) {
        yield chunk([], { usage: { prompt_tokens: e.promptTokens, completion_tokens: e.completionTokens, total_tokens: e.promptTokens + e.completionTokens } });
      }
    }
  }

  /** The prompt's token ids: the chat template applied here, inside the TEE. */
  #promptIds(m: Served, req: GenerationRequest): number[] {
    const tok = m.gen.tokenizer;
    if (req.op === 'completion') return tok.encode(req.prompt ?? '', { add_special_tokens: true });
    let text: unknown;
    try {
      text = tok.apply_chat_template((req.messages ?? []).map((x) => ({ role: x.role, content: x.content })), { tokenize: false, add_generation_prompt: true });
    } catch {
      // The template's own message may quote the conversation: not passed on.
      throw new CloisterError('INVALID_ARGUMENT', `the chat template of model '${m.info.name}' refused these messages (roles or order)`, {
        detail: { field: 'messages', public: true },
      });
    }
    if (typeof text !== 'string') throw new CloisterError('ENGINE_FAILED', 'the chat template did not give text', { detail: { model: m.info.name } });
    // The template writes the special tokens (BOS) itself.
    return tok.encode(text, { add_special_tokens: false });
  }

  /**
   * Runs one generation: text pieces as they are produced, then `end` with the usage. The
   * library-neutral core of `run` (the benchmark calls it in process).
   */
  async *generate(modelName: string, req: GenerationRequest, callerSignal: AbortSignal): AsyncGenerator<GenerationEvent, void, undefined> {
    const m = this.#models.get(modelName);
    if (m === undefined || this.#state !== 'ready') throw new CloisterError('UNKNOWN_MODEL', 'no such model', { detail: { model: modelName } });
    const prompt = this.#promptIds(m, req);
    if (prompt.length === 0) throw new CloisterError('INVALID_ARGUMENT', 'the prompt is empty', { detail: { public: true } });
    const budget = this.#budget(m, prompt.length, req.maxTokens);
    const sampling = this.#sampling(m, req);
    const rng = new SamplingRng(req.seed ?? randomInt(0, 2 ** 48 - 1));
    const signal = AbortSignal.any([callerSignal, this.#closing.signal]);
    const release = await this.#slots.acquire(signal);
    try {
      const text = new IncrementalText((ids) => m.gen.tokenizer.decode(ids, { skip_special_tokens: true }), prompt);
      const stop = new StopText(req.stop);
      const counts = new Map<number, number>();
      let cache: KvCache | undefined;
      let logits: Float32Array | undefined;
      for (let at = 0; at < prompt.length; at += this.#prefillChunk) {
        const part = prompt.slice(at, at + this.#prefillChunk);
        const out = await this.#step(m, part, cache, at + part.length, signal);
        cache = out.cache;
        logits = out.logits;
      }
      let generated = 0;
      let finish: FinishReason = 'length';
      let stopSequence = false;
      while (logits !== undefined && cache !== undefined) {
        applyPenalties(logits, counts, sampling);
        const next = chooseToken(logits, sampling, rng);
        if (m.gen.eos.has(next)) {
          finish = 'stop';
          break;
        }
        generated++;
        counts.set(next, (counts.get(next) ?? 0) + 1);
        const r = stop.push(text.push(next));
        if (r.text !== '') yield { kind: 'text', text: r.text };
        if (r.stopped) {
          finish = 'stop';
          stopSequence = true;
          break;
        }
        if (generated >= budget) break;
        const out = await this.#step(m, [next], cache, prompt.length + generated, signal);
        cache = out.cache;
        logits = out.logits;
      }
      if (!stopSequence) {
        // Text still held: an unfinished character, or a possible start of a stop sequence.
        const rest = stop.push(text.flush());
        const tail = rest.text + (rest.stopped ? '' : stop.flush());
        if (rest.stopped) finish = 'stop';
        if (tail !== '') yield { kind: 'text', text: tail };
      }
      yield { kind: 'end', finishReason: finish, promptTokens: prompt.length, completionTokens: generated };
    } finally {
      release();
    }
  }

  /** Tokens this generation may produce; LIMIT_EXCEEDED when the KV cache bound cannot hold the request. */
  #budget(m: Served, promptTokens: number, maxTokens: number | undefined): number {
    const kvMiB = mib(m.maxKvTokens * m.gen.kvBytesPerToken);
    if (maxTokens !== undefined && maxTokens > this.#maxNewTokens) {
      throw new CloisterError('LIMIT_EXCEEDED', `max_tokens ${maxTokens} exceeds maxNewTokens (${this.#maxNewTokens}; serve --max-new-tokens)`, {
        detail: { limit: 'maxNewTokens', max: this.#maxNewTokens, public: true },
      });
    }
    const need = promptTokens + (maxTokens ?? 1);
    if (need > m.maxKvTokens) {
      throw new CloisterError(
        'LIMIT_EXCEEDED',
        `the prompt (${promptTokens} tokens) plus max_tokens (${maxTokens ?? 1}) needs ${need} KV cache tokens, above maxKvTokens (${m.maxKvTokens} tokens, ${kvMiB} MiB per generation; serve --max-kv-tokens)`,
        { detail: { limit: 'maxKvTokens', max: m.maxKvTokens, public: true } },
      );
    }
    return maxTokens ?? Math.min(this.#maxNewTokens, m.maxKvTokens - promptTokens);
  }

  /** The request's sampling, else generation_config.json's, else greedy. */
  #sampling(m: Served, req: GenerationRequest): SamplingParams {
    const d = m.gen.defaults;
    const explicit = req.temperature !== undefined || req.topP !== undefined || req.topK !== undefined;
    const temperature = req.temperature ?? (explicit || d.doSample ? d.temperature ?? 1 : 0);
    return {
      temperature,
      topP: req.topP ?? (d.doSample ? d.topP ?? 1 : 1),
      topK: req.topK ?? (d.doSample ? d.topK ?? 0 : 0),
      presencePenalty: req.presencePenalty,
      frequencyPenalty: req.frequencyPenalty,
    };
  }

  /** One model step over `ids` (a prefill chunk or one token); `total`: tokens in the cache after it. */
  async #step(m: Served, ids: readonly number[], cache: KvCache | undefined, total: number, signal: AbortSignal): Promise<StepOut> {
    const release = await this.#steps.acquire(signal);
    try {
      if (signal.aborted) throw cancelled();
      const T = m.gen.mod.Tensor;
      const inputs: Record<string, unknown> = {
        input_ids: new T('int64', BigInt64Array.from(ids, (x) => BigInt(x)), [1, ids.length]),
        attention_mask: new T('int64', new BigInt64Array(total).fill(1n), [1, total]),
      };
      if (cache !== undefined) inputs['past_key_values'] = cache;
      if (m.gen.sessionInputs.has('num_logits_to_keep')) inputs['num_logits_to_keep'] = new T('int64', BigInt64Array.from([1n]), []);
      this.#stepCount++;
      let out: Record<string, unknown>;
      const running = m.gen.model.forward(inputs);
      this.#inFlight = running.then(() => undefined, () => undefined);
      try {
        out = await running;
      } catch (cause) {
        throw engineFailed(m.info.name, cause);
      }
      const logitsTensor = out['logits'];
      const dims = isRecord(logitsTensor) ? logitsTensor['dims'] : undefined;
      const data = isRecord(logitsTensor) ? logitsTensor['data'] : undefined;
      if (!Array.isArray(dims) || dims.length !== 3 || !(data instanceof Float32Array)) {
        throw new CloisterError('ENGINE_FAILED', 'the model gave no float32 logits [batch, sequence, vocabulary]', { detail: { model: m.info.name } });
      }
      const v = dims[2] as number;
      if (v !== m.gen.vocabSize) {
        throw new CloisterError('CONFIG_INVALID', `config.json vocab_size is ${m.gen.vocabSize} but the model gives ${v} logits`, {
          detail: { model: m.info.name, file: 'config.json' },
        });
      }
      const rows = dims[1] as number;
      const logits = data.slice((rows - 1) * v, rows * v);
      const next: KvCache = {};
      for (const [name, t] of Object.entries(out)) {
        if (name.startsWith('present.')) next[`past_key_values.${name.slice('present.'.length)}`] = t;
        else if (name.startsWith('present_')) next[`past_${name.slice('present_'.length)}`] = t;
      }
      return { logits, cache: next };
    } finally {
      release();
    }
  }

  async close(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#closing.abort();
    const closed = new CloisterError('ENGINE_UNAVAILABLE', 'the generation engine was closed');
    this.#slots.rejectAll(closed);
    this.#steps.rejectAll(closed);
    // A step in flight finishes first (its generation then sees the aborted signal).
    await this.#inFlight;
    await this.#disposeAll();
  }

  async #disposeAll(): Promise<void> {
    const models = [...this.#models.values()];
    this.#models.clear();
    await Promise.allSettled(models.map((m) => m.gen.model.dispose()));
  }
}

async function* trimStart(events: AsyncIterable<GenerationEvent>): AsyncGenerator<GenerationEvent, void, undefined> {
  let leading = true;
  for await (const e of events) {
    if (leading && e.kind === 'text') {
      const text = e.text.trimStart();
      if (text === '') continue;
      leading = false;
      yield { kind: 'text', text };
      continue;
    }
    yield e;
  }
}

export { ONNX_FILE_OF };
export type { GenerationOp };
