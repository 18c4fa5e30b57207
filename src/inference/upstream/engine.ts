/**
 * The upstream engine: an OpenAI-compatible HTTP server (vLLM, TensorRT-LLM `trtllm-serve`,
 * SGLang) on the same confidential VM, reached over loopback or a Unix socket
 * (DESIGN.md "Engines"). Cloister is its attested, encrypting front door: every sealed
 * request for op chat / completion / embeddings / models becomes one call to
 * /v1/chat/completions, /v1/completions, /v1/embeddings or /v1/models. The SSE events of a
 * streamed answer are yielded the moment they arrive, all events of one read together as one
 * JsonResults (their validated JSON text, relayed without re-encoding), so the server can
 * seal them without adding latency.
 *
 * Fail closed: a stream that ends without `data: [DONE]` is an error (ENGINE_FAILED), never a
 * short answer; a start-up canary with a known answer keeps a misbehaving engine from ever
 * taking traffic. The `model` field is always forced to the configured upstream model, so a
 * client cannot address another model (or LoRA adapter) the engine happens to load.
 */
import { createHash } from 'node:crypto';
import { Agent } from 'node:http';
import { checkUpstreamBody } from './fields.js';
import { CloisterError } from '../../errors.js';
import { JsonResults } from '../../protocol/messages.js';
import type { Engine, EngineRequest, ModelInfo, Operation, RunOptions } from '../types.js';
import { ConcurrencyGate } from './gate.js';
import { UpstreamExchange } from './http.js';
import type { ExchangeLimits, UpstreamTarget } from './http.js';
import { DEFAULT_MAX_EVENT_BYTES, SseParser } from './sse.js';
import { parseTarget } from './target.js';
import { nonNegativeInt, positiveInt } from '../../core/validate.js';
import { linkSignals, sleep } from '../../core/signals.js';

export type UpstreamKind = 'vllm' | 'trtllm' | 'sglang' | 'openai';
export const UPSTREAM_KINDS: readonly UpstreamKind[] = ['vllm', 'trtllm', 'sglang', 'openai'];

export type UpstreamOperation = Extract<Operation, 'chat' | 'completion' | 'embeddings' | 'models'>;
const UPSTREAM_OPERATIONS: readonly UpstreamOperation[] = ['chat', 'completion', 'embeddings', 'models'];

/** What goes into the key config's `engine` field (PROTOCOL.md section 1, key 13). */
interface UpstreamIdentity {
  readonly kind: UpstreamKind;
  readonly model: string;
  readonly imageDigest?: string;
}

/** Embeddings canary: `anchor` must be closer to `similar` than `minSimilarity` and than to `dissimilar`. */
interface EmbeddingsCanary {
  readonly anchor: string;
  readonly similar: string;
  readonly dissimilar: string;
  /** Cosine similarity that anchor/similar must reach, in [-1, 1]. */
  readonly minSimilarity: number;
}

export interface UpstreamEngineOptions {
  /** Base URL of the OpenAI-compatible API, e.g. "http://127.0.0.1:8000/v1". */
  readonly baseUrl: string;
  /** The model name the engine serves (vLLM `--served-model-name`, or the path it loaded). */
  readonly model: string;
  /** Name clients use in sealed requests and that goes into the key config. Default: `model`. */
  readonly name?: string;
  /** Which server this is; recorded in the key config. Default "openai" (generic). */
  readonly kind?: UpstreamKind;
  /** Digest of the engine's container image, recorded in the key config when given. */
  readonly imageDigest?: string;
  /**
   * 32-byte digest for the key config's model entry (e.g. SHA-256 over the weights, computed
   * at image build). Default: SHA-256 over the engine identity (kind, model, image digest),
   * which names the configuration but does not measure the weights.
   */
  readonly modelDigest?: Uint8Array;
  /** Hugging Face style task for the key config. Default "text-generation". */
  readonly task?: string;
  /** Operations offered. Default: chat, completion, embeddings, models. */
  readonly operations?: readonly UpstreamOperation[];
  /** Unix socket of the engine; `baseUrl` then only supplies the path prefix. */
  readonly socketPath?: string;
  /** Allow a non-loopback engine address. Default false: plaintext must not leave the TEE. */
  readonly allowNonLoopback?: boolean;
  /** Whole-request deadline, streams included. Default 600 000. */
  readonly requestTimeoutMs?: number;
  /** TCP / socket connect deadline. Default 5 000. */
  readonly connectTimeoutMs?: number;
  /** Wait for the response head of a streamed request or a GET. Default 60 000. */
  readonly firstByteTimeoutMs?: number;
  /** Largest silence between body bytes (between SSE events). Default 120 000. */
  readonly idleTimeoutMs?: number;
  /** Requests in flight at the engine. Default 64. */
  readonly maxConcurrency?: number;
  /**
   * How long an idle connection to the engine is kept for the next request (HTTP
   * keep-alive); 0 opens a new connection per request. Default 4 000: below the 5 s
   * keep-alive timeout of uvicorn (vLLM, SGLang), so the engine rarely closes a socket
   * Cloister is about to reuse.
   */
  readonly keepAliveTimeoutMs?: number;
  /** Requests waiting for a slot; beyond this OVERLOADED. Default 256. */
  readonly maxQueued?: number;
  /** Largest response body (a whole stream included). Default 64 MiB. */
  readonly maxResponseBytes?: number;
  /** Largest single SSE event. Default 1 MiB. */
  readonly maxEventBytes?: number;
  /** Retries of idempotent requests (models, embeddings) that failed before any result. Default 2. */
  readonly maxRetries?: number;
  /** First retry delay, doubled each time. Default 200. */
  readonly retryDelayMs?: number;
  /** How long start() keeps polling /v1/models for the engine to come up. Default 0 (one try). */
  readonly readyTimeoutMs?: number;
  /** Poll interval while waiting for readiness. Default 1 000. */
  readonly readyPollMs?: number;
  /** Start-up canary prompt (chat, temperature 0). Requires canaryExpect. */
  readonly canaryPrompt?: string;
  /** Substring, or regular expression, the canary answer must contain. */
  readonly canaryExpect?: string | RegExp;
  /** Which endpoint the canary prompt goes to. Default "chat". */
  readonly canaryOp?: 'chat' | 'completion';
  /** max_tokens for the canary. Default 32. */
  readonly canaryMaxTokens?: number;
  /** Embeddings canary, for embedding models. */
  readonly canaryEmbeddings?: EmbeddingsCanary;
  /**
   * Request fields clients may send beyond the per-operation allow-list (./fields.ts), e.g.
   * an engine's sampling extension such as "min_p". Default none. Each one is forwarded to
   * the engine as sent: allow only fields that cannot make the engine fetch or read anything.
   */
  readonly allowFields?: readonly string[];
}

interface Resolved {
  readonly model: string;
  readonly name: string;
  readonly kind: UpstreamKind;
  readonly operations: ReadonlySet<UpstreamOperation>;
  readonly requestTimeoutMs: number;
  readonly limits: ExchangeLimits;
  readonly maxEventBytes: number;
  readonly maxRetries: number;
  readonly retryDelayMs: number;
  readonly readyTimeoutMs: number;
  readonly readyPollMs: number;
}

/** Most stream events relayed as one JsonResults (one sealed chunk when read together). */
export const MAX_BATCH_EVENTS = 64;
/** A JsonResults is cut once its texts reach this many UTF-16 code units (bounds one sealed chunk). */
export const MAX_BATCH_TEXT_CHARS = 64 * 1024;

const PATHS: Readonly<Record<UpstreamOperation, string>> = {
  chat: '/chat/completions',
  completion: '/completions',
  embeddings: '/embeddings',
  models: '/models',
};

/** Requests that may be sent twice without harm (no sampling, no side effects). */
const IDEMPOTENT: ReadonlySet<UpstreamOperation> = new Set<UpstreamOperation>(['models', 'embeddings']);

export class UpstreamEngine implements Engine {
  readonly kind = 'upstream';
  readonly #opts: Resolved;
  readonly #target: UpstreamTarget;
  readonly #gate: ConcurrencyGate;
  readonly #identity: UpstreamIdentity;
  readonly #info: ModelInfo;
  readonly #canary: UpstreamEngineOptions;
  readonly #closing = new AbortController();
  readonly #allowFields: ReadonlySet<string>;
  /** Keep-alive pool (at most maxConcurrency sockets); undefined when keepAliveTimeoutMs is 0. */
  readonly #agent: Agent | undefined;
  #started = false;

  constructor(options: UpstreamEngineOptions) {
    if (typeof options.model !== 'string' || options.model === '') {
      throw new CloisterError('CONFIG_INVALID', 'upstream model name is required');
    }
    const kind = options.kind ?? 'openai';
    if (!UPSTREAM_KINDS.includes(kind)) throw new CloisterError('CONFIG_INVALID', 'unknown upstream kind');
    const operations = options.operations ?? UPSTREAM_OPERATIONS;
    if (operations.length === 0 || operations.some((op) => !UPSTREAM_OPERATIONS.includes(op))) {
      throw new CloisterError('CONFIG_INVALID', 'upstream operations must be a non-empty subset of chat, completion, embeddings, models');
    }
    this.#target = parseTarget(options);
    for (const f of options.allowFields ?? []) {
      if (typeof f !== 'string' || !/^[a-z][a-z0-9_]{0,63}$/.test(f)) throw new CloisterError('CONFIG_INVALID', `upstream allowFields: '${String(f)}' is not a field name`);
    }
    this.#allowFields = new Set(options.allowFields ?? []);
    this.#opts = {
      model: options.model,
      name: options.name ?? options.model,
      kind,
      operations: new Set(operations),
      requestTimeoutMs: positiveInt('requestTimeoutMs', options.requestTimeoutMs, 600_000),
      limits: {
        connectTimeoutMs: positiveInt('connectTimeoutMs', options.connectTimeoutMs, 5_000),
        firstByteTimeoutMs: positiveInt('firstByteTimeoutMs', options.firstByteTimeoutMs, 60_000),
        idleTimeoutMs: positiveInt('idleTimeoutMs', options.idleTimeoutMs, 120_000),
        maxResponseBytes: positiveInt('maxResponseBytes', options.maxResponseBytes, 64 * 1024 * 1024),
      },
      maxEventBytes: positiveInt('maxEventBytes', options.maxEventBytes, DEFAULT_MAX_EVENT_BYTES),
      maxRetries: nonNegativeInt('maxRetries', options.maxRetries, 2),
      retryDelayMs: nonNegativeInt('retryDelayMs', options.retryDelayMs, 200),
      readyTimeoutMs: nonNegativeInt('readyTimeoutMs', options.readyTimeoutMs, 0),
      readyPollMs: positiveInt('readyPollMs', options.readyPollMs, 1_000),
    };
    const maxConcurrency = positiveInt('maxConcurrency', options.maxConcurrency, 64);
    this.#gate = new ConcurrencyGate(maxConcurrency, nonNegativeInt('maxQueued', options.maxQueued, 256));
    const keepAliveMs = nonNegativeInt('keepAliveTimeoutMs', options.keepAliveTimeoutMs, 4_000);
    // The gate already bounds requests in flight; the pool's bounds only repeat it. `timeout`
    // is how long a free socket waits before the agent destroys it.
    this.#agent = keepAliveMs === 0
      ? undefined
      : new Agent({ keepAlive: true, maxSockets: maxConcurrency, maxFreeSockets: maxConcurrency, timeout: keepAliveMs, scheduling: 'lifo' });
    if ((options.canaryPrompt === undefined) !== (options.canaryExpect === undefined)) {
      throw new CloisterError('CONFIG_INVALID', 'canaryPrompt and canaryExpect go together');
    }
    if (options.canaryEmbeddings !== undefined) {
      const m = options.canaryEmbeddings.minSimilarity;
      if (typeof m !== 'number' || !(m >= -1 && m <= 1)) {
        throw new CloisterError('CONFIG_INVALID', 'canaryEmbeddings.minSimilarity must be in [-1, 1]');
      }
    }
    this.#canary = options;
    if (options.imageDigest !== undefined && options.imageDigest === '') {
      throw new CloisterError('CONFIG_INVALID', 'imageDigest must not be empty');
    }
    this.#identity = {
      kind,
      model: options.model,
      ...(options.imageDigest === undefined ? {} : { imageDigest: options.imageDigest }),
    };
    let digest: Uint8Array;
    if (options.modelDigest === undefined) {
      digest = new Uint8Array(
        createHash('sha256')
          .update(`cloister/upstream-identity/v1\0${kind}\0${options.model}\0${options.imageDigest ?? ''}`)
          .digest(),
      );
    } else {
      if (!(options.modelDigest instanceof Uint8Array) || options.modelDigest.length !== 32) {
        throw new CloisterError('CONFIG_INVALID', 'modelDigest must be exactly 32 bytes');
      }
      digest = options.modelDigest.slice();
    }
    this.#info = {
      name: this.#opts.name,
      task: options.task ?? 'text-generation',
      operations: [...operations],
      digest,
    };
  }

  /** The engine identity for the key config's `engine` field. */
  identity(): UpstreamIdentity {
    return { ...this.#identity };
  }

  models(): readonly ModelInfo[] {
    return [{ ...this.#info, operations: [...this.#info.operations], digest: this.#info.digest.slice() }];
  }

  /**
   * Wait for the engine, check it serves the configured model, then run the canary. Rejects
   * with ENGINE_UNAVAILABLE (fail closed) when any of this goes wrong.
   */
  async start(): Promise<void> {
    if (this.#started) return;
    if (this.#closing.signal.aborted) throw new CloisterError('ENGINE_UNAVAILABLE', 'upstream engine is closed');
    await this.#waitReady();
    if (this.#canary.canaryPrompt !== undefined && this.#canary.canaryExpect !== undefined) {
      await this.#textCanary(this.#canary.canaryPrompt, this.#canary.canaryExpect);
    }
    if (this.#canary.canaryEmbeddings !== undefined) await this.#embeddingsCanary(this.#canary.canaryEmbeddings);
    this.#started = true;
  }

  async close(): Promise<void> {
    this.#started = false;
    this.#closing.abort();
    this.#agent?.destroy();
  }

  run(request: EngineRequest, options: RunOptions): AsyncIterable<unknown> {
    return this.#run(request, options.signal);
  }

  async *#run(request: EngineRequest, callerSignal: AbortSignal): AsyncGenerator<unknown, void, undefined> {
    if (!this.#started) throw new CloisterError('ENGINE_UNAVAILABLE', 'upstream engine is not started');
    const op = request.op as UpstreamOperation;
    if (!UPSTREAM_OPERATIONS.includes(op) || !this.#opts.operations.has(op)) {
      throw new CloisterError('UNKNOWN_OPERATION', 'operation not offered by the upstream engine', { detail: { op: request.op } });
    }
    if (request.model !== this.#opts.name) {
      throw new CloisterError('UNKNOWN_MODEL', 'model not served by the upstream engine');
    }
    const streaming = request.stream && (op === 'chat' || op === 'completion');
    const body = op === 'models' ? undefined : this.#body(op, request, streaming);
    // One signal for the caller's cancel and the engine's close. Not AbortSignal.any: in Node 20
    // that costs about 25-30 us per request (weak refs, a finalization registry); one
    // controller and two listeners removed in `finally` do the same job.
    const linked = linkSignals(callerSignal, this.#closing.signal);
    const signal = linked.signal;
    let release: (() => void) | undefined;
    try {
      release = await this.#gate.acquire(signal);
      const deadline = Date.now() + this.#opts.requestTimeoutMs;
      if (streaming && body !== undefined) {
        yield* this.#stream(PATHS[op], body, signal, deadline);
      } else {
        yield await this.#withRetries(op, body, signal, deadline);
      }
    } finally {
      release?.();
      linked.dispose();
    }
  }

  /** The request body: the client's OpenAI body with `model` and `stream` forced. */
  #body(op: UpstreamOperation, request: EngineRequest, streaming: boolean): Uint8Array {
    const input = request.input;
    if (typeof input !== 'object' || input === null || Array.isArray(input) || input instanceof Uint8Array) {
      throw new CloisterError('INVALID_ARGUMENT', 'upstream request input must be an OpenAI-shaped JSON object', { detail: { op } });
    }
    // Only the fields the operation allows (./fields.ts): nothing that makes the TEE fetch URLs.
    if (op !== 'models') checkUpstreamBody(op, { ...(input as Record<string, unknown>), ...request.params }, this.#allowFields);
    // params, when present, override body fields; model and stream are never the client's.
    const body: Record<string, unknown> = { ...(input as Record<string, unknown>), ...request.params, model: this.#opts.model };
    if (op === 'embeddings') delete body['stream'];
    else body['stream'] = streaming;
    if (!streaming) delete body['stream_options'];
    let text: string;
    try {
      text = JSON.stringify(body);
    } catch (cause) {
      throw new CloisterError('INVALID_ARGUMENT', 'upstream request input is not JSON-serialisable', { cause, detail: { op } });
    }
    return utf8Encoder.encode(text);
  }

  async #withRetries(op: UpstreamOperation, body: Uint8Array | undefined, signal: AbortSignal, deadline: number): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#once(op, body, signal, deadline);
      } catch (err) {
        // Retry only what is safe to send twice and only failures that say "not served",
        // never a timeout (the engine may still be working on it) and never a cancel.
        if (!IDEMPOTENT.has(op) || attempt >= this.#opts.maxRetries || !isRetryable(err) || signal.aborted) throw err;
        await sleep(this.#opts.retryDelayMs * 2 ** attempt, signal);
      }
    }
  }

  async #once(op: UpstreamOperation, body: Uint8Array | undefined, signal: AbortSignal, deadline: number): Promise<unknown> {
    const result = await this.#request(op, body, signal, deadline);
    if (op === 'models') return this.#modelsList(result);
    this.#renameModel(result);
    return result;
  }

  /** One non-streamed exchange: status checked, body bounded, parsed as a JSON object. */
  async #request(
    op: UpstreamOperation,
    body: Uint8Array | undefined,
    signal: AbortSignal,
    deadline: number,
  ): Promise<Record<string, unknown>> {
    // A non-streamed POST answers only when generation is done: its head is bounded by the
    // request deadline, not by firstByteTimeoutMs.
    const limits: ExchangeLimits = body === undefined
      ? this.#opts.limits
      : { ...this.#opts.limits, firstByteTimeoutMs: Math.max(1, Math.min(deadline - Date.now(), 2 ** 31 - 1)) };
    const exchange = await UpstreamExchange.open(this.#target, limits, {
      method: body === undefined ? 'GET' : 'POST',
      path: PATHS[op],
      ...(body === undefined ? {} : { body }),
      accept: 'application/json',
      signal,
      deadline,
    }, this.#agent);
    let bytes: Uint8Array;
    try {
      checkStatus(exchange);
      bytes = await exchange.readAll();
    } finally {
      exchange.close();
    }
    return parseObject(bytes, 'response');
  }

  async *#stream(path: string, body: Uint8Array, signal: AbortSignal, deadline: number): AsyncGenerator<unknown, void, undefined> {
    const exchange = await UpstreamExchange.open(this.#target, this.#opts.limits, {
      method: 'POST',
      path,
      body,
      accept: 'text/event-stream',
      signal,
      deadline,
    }, this.#agent);
    try {
      checkStatus(exchange);
      if (!exchange.contentType.startsWith('text/event-stream')) {
        throw new CloisterError('ENGINE_FAILED', 'upstream engine answered a stream request without text/event-stream');
      }
      const parser = new SseParser({ maxEventBytes: this.#opts.maxEventBytes });
      // The first event goes alone (time to first token: the server seals and sends it at
      // once, without the rest of its read); later batches hold up to MAX_BATCH_EVENTS.
      let batchEvents = 1;
      for await (const bytes of exchange.chunks()) {
        // Every event of one read goes out as one JsonResults (one step for the server, one
        // sealed `json` chunk): the events are checked here and their JSON text is relayed,
        // never re-encoded. A batch is cut at MAX_BATCH_EVENTS / MAX_BATCH_TEXT_CHARS.
        let texts: string[] = [];
        let textChars = 0;
        for (const event of parser.push(bytes)) {
          if (event.event === 'error') {
            throw new CloisterError('ENGINE_FAILED', 'upstream engine reported an error mid-stream');
          }
          if (event.data === '[DONE]') {
            if (texts.length > 0) yield new JsonResults(texts);
            return;
          }
          const text = this.#relayText(event.data);
          texts.push(text);
          textChars += text.length;
          if (texts.length >= batchEvents || textChars >= MAX_BATCH_TEXT_CHARS) {
            yield new JsonResults(texts);
            texts = [];
            textChars = 0;
            batchEvents = MAX_BATCH_EVENTS;
          }
        }
        if (texts.length > 0) yield new JsonResults(texts);
      }
      // The body ended cleanly but without [DONE]: the engine stopped before finishing.
      throw new CloisterError('ENGINE_FAILED', 'upstream stream ended without [DONE]');
    } finally {
      exchange.close();
    }
  }

  /**
   * The JSON text to relay for one stream event. The client parses every text it receives
   * (MALFORMED when it is not JSON), so the server parses only when it must look inside:
   * the fast path takes an event that is braced like a JSON object and whose text cannot
   * hold an `error` member (no "error" and no \u escape, which could spell one), when no
   * rename is configured. Everything else is parsed: it must be a JSON object without an
   * `error` member (ENGINE_FAILED otherwise), and is re-serialised to rename `model`.
   */
  #relayText(data: string): string {
    if (this.#opts.name === this.#opts.model && looksLikePlainObject(data)) return data;
    const chunk = parseJson(data, 'stream event');
    const model = chunk['model'];
    if (typeof model !== 'string' || model === this.#opts.name) return data;
    chunk['model'] = this.#opts.name;
    return JSON.stringify(chunk);
  }

  /** Clients see the name they addressed, not the engine's internal model name or path. */
  #renameModel(obj: Record<string, unknown>): void {
    if (typeof obj['model'] === 'string') obj['model'] = this.#opts.name;
  }

  /** /v1/models filtered to the one configured model, renamed; fails if the engine lacks it. */
  #modelsList(result: Record<string, unknown>): unknown {
    const entry = findModel(result, this.#opts.model);
    if (entry === undefined) {
      throw new CloisterError('ENGINE_FAILED', 'upstream engine does not list the configured model');
    }
    const model: Record<string, unknown> = { id: this.#opts.name, object: 'model', owned_by: 'cloister' };
    if (typeof entry['created'] === 'number') model['created'] = entry['created'];
    if (typeof entry['max_model_len'] === 'number') model['max_model_len'] = entry['max_model_len'];
    return { object: 'list', data: [model] };
  }

  async #waitReady(): Promise<void> {
    const until = Date.now() + this.#opts.readyTimeoutMs;
    for (;;) {
      let list: Record<string, unknown>;
      try {
        const signal = AbortSignal.any([this.#closing.signal, AbortSignal.timeout(this.#opts.requestTimeoutMs)]);
        list = await this.#request('models', undefined, signal, Date.now() + this.#opts.requestTimeoutMs);
      } catch (err) {
        const retryable = isRetryable(err) || (err instanceof CloisterError && err.code === 'TIMEOUT');
        if (!retryable || Date.now() + this.#opts.readyPollMs > until) {
          throw new CloisterError('ENGINE_UNAVAILABLE', 'upstream engine is not ready', { cause: err });
        }
        await sleep(this.#opts.readyPollMs, this.#closing.signal);
        continue;
      }
      if (findModel(list, this.#opts.model) === undefined) {
        throw new CloisterError('ENGINE_UNAVAILABLE', `upstream engine does not serve model '${this.#opts.model}'`);
      }
      return;
    }
  }

  async #textCanary(prompt: string, expect: string | RegExp): Promise<void> {
    const op = this.#canary.canaryOp ?? 'chat';
    const maxTokens = positiveInt('canaryMaxTokens', this.#canary.canaryMaxTokens, 32);
    const body: Record<string, unknown> = op === 'chat'
      ? { messages: [{ role: 'user', content: prompt }] }
      : { prompt };
    Object.assign(body, { model: this.#opts.model, max_tokens: maxTokens, temperature: 0, stream: false });
    const result = await this.#canaryCall(op, body);
    const choice = Array.isArray(result['choices']) ? (result['choices'][0] as unknown) : undefined;
    let answer: unknown;
    if (typeof choice === 'object' && choice !== null) {
      const c = choice as Record<string, unknown>;
      if (op === 'chat') {
        const message = c['message'];
        answer = typeof message === 'object' && message !== null ? (message as Record<string, unknown>)['content'] : undefined;
      } else {
        answer = c['text'];
      }
    }
    if (typeof answer !== 'string') {
      throw new CloisterError('ENGINE_UNAVAILABLE', 'upstream canary failed: the engine returned no answer text');
    }
    const ok = typeof expect === 'string' ? answer.includes(expect) : new RegExp(expect.source, expect.flags.replace(/[gy]/g, '')).test(answer);
    if (!ok) {
      // The answer itself is not put in the error: only its length (no content in diagnostics).
      throw new CloisterError('ENGINE_UNAVAILABLE', 'upstream canary failed: the engine answered the canary prompt wrongly; refusing to serve', {
        detail: { canary: op, answerLength: answer.length },
      });
    }
  }

  async #embeddingsCanary(canary: EmbeddingsCanary): Promise<void> {
    const result = await this.#canaryCall('embeddings', {
      model: this.#opts.model,
      input: [canary.anchor, canary.similar, canary.dissimilar],
    });
    const vectors = embeddingVectors(result, 3);
    if (vectors === undefined) {
      throw new CloisterError('ENGINE_UNAVAILABLE', 'upstream canary failed: the engine returned malformed embeddings');
    }
    const [a, s, d] = vectors as [number[], number[], number[]];
    const near = cosine(a, s);
    const far = cosine(a, d);
    if (!(near >= canary.minSimilarity) || !(near > far)) {
      throw new CloisterError('ENGINE_UNAVAILABLE', 'upstream canary failed: embeddings do not separate similar from dissimilar text; refusing to serve', {
        detail: { similar: round(near), dissimilar: round(far), minSimilarity: canary.minSimilarity },
      });
    }
  }

  async #canaryCall(op: UpstreamOperation, body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const signal = AbortSignal.any([this.#closing.signal, AbortSignal.timeout(this.#opts.requestTimeoutMs)]);
    try {
      return await this.#request(op, new TextEncoder().encode(JSON.stringify(body)), signal, Date.now() + this.#opts.requestTimeoutMs);
    } catch (err) {
      throw new CloisterError('ENGINE_UNAVAILABLE', 'upstream canary request failed', { cause: err });
    }
  }
}

function checkStatus(exchange: UpstreamExchange): void {
  if (exchange.status >= 200 && exchange.status < 300) return;
  // The error body may echo the prompt: it is dropped, only the status is reported.
  throw new CloisterError('ENGINE_FAILED', `upstream engine answered HTTP ${exchange.status}`, {
    detail: { status: exchange.status },
  });
}

function isRetryable(err: unknown): boolean {
  if (!(err instanceof CloisterError)) return false;
  if (err.code === 'ENGINE_UNAVAILABLE') return true;
  const status = err.detail?.['status'];
  return err.code === 'ENGINE_FAILED' && (status === 502 || status === 503 || status === 504);
}

const utf8Fatal = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

/** JSON whitespace (RFC 8259 section 2). */
function isJsonSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

/**
 * True when `text` starts with "{" and ends with "}" (JSON whitespace aside) and contains
 * neither "error" nor a "\u" escape: if it is JSON at all, it is an object, and no member of
 * it can be named "error". A text that fails this is not rejected, only parsed.
 */
export function looksLikePlainObject(text: string): boolean {
  let a = 0;
  let b = text.length - 1;
  while (a <= b && isJsonSpace(text.charCodeAt(a))) a++;
  while (b >= a && isJsonSpace(text.charCodeAt(b))) b--;
  if (b <= a || text.charCodeAt(a) !== 0x7b || text.charCodeAt(b) !== 0x7d) return false;
  return !text.includes('error') && !text.includes('\\u');
}

function parseObject(bytes: Uint8Array, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = utf8Fatal.decode(bytes);
  } catch {
    throw new CloisterError('ENGINE_FAILED', `upstream ${what} is not valid JSON`);
  }
  return parseJson(text, what);
}

/** JSON text (already valid UTF-8) that must be one JSON object, not an error report. */
function parseJson(text: string, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    // No cause: the parser's message quotes part of the engine's output (content).
    throw new CloisterError('ENGINE_FAILED', `upstream ${what} is not valid JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new CloisterError('ENGINE_FAILED', `upstream ${what} is not a JSON object`);
  }
  const obj = value as Record<string, unknown>;
  // vLLM and SGLang report failures inside a 200 stream as {"error": {...}}.
  if (obj['error'] !== undefined && obj['error'] !== null) {
    throw new CloisterError('ENGINE_FAILED', `upstream engine reported an error in its ${what}`);
  }
  return obj;
}

function findModel(list: Record<string, unknown>, model: string): Record<string, unknown> | undefined {
  const data = list['data'];
  if (!Array.isArray(data)) return undefined;
  for (const entry of data as unknown[]) {
    if (typeof entry === 'object' && entry !== null && (entry as Record<string, unknown>)['id'] === model) {
      return entry as Record<string, unknown>;
    }
  }
  return undefined;
}

function embeddingVectors(result: Record<string, unknown>, count: number): number[][] | undefined {
  const data = result['data'];
  if (!Array.isArray(data) || data.length !== count) return undefined;
  const out: (number[] | undefined)[] = new Array<number[] | undefined>(count).fill(undefined);
  for (const [i, entry] of (data as unknown[]).entries()) {
    if (typeof entry !== 'object' || entry === null) return undefined;
    const e = entry as Record<string, unknown>;
    const index = typeof e['index'] === 'number' ? e['index'] : i;
    const v = e['embedding'];
    if (!Number.isInteger(index) || index < 0 || index >= count || out[index] !== undefined) return undefined;
    if (!Array.isArray(v) || v.length === 0 || !(v as unknown[]).every((x) => typeof x === 'number' && Number.isFinite(x))) return undefined;
    out[index] = v as number[];
  }
  const vectors = out.filter((v): v is number[] => v !== undefined);
  const dim = vectors[0]?.length;
  if (vectors.length !== count || vectors.some((v) => v.length !== dim)) return undefined;
  return vectors;
}

function cosine(a: readonly number[], b: readonly number[]): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  if (na === 0 || nb === 0) return Number.NaN; // a zero vector is garbage: fails every check
  return dot / Math.sqrt(na * nb);
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
