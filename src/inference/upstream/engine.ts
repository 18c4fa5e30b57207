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
import { checkUpstreamBody } from './fields.js';
import { CloisterError } from '../../errors.js';
import { JsonResults } from '../../protocol/messages.js';
import type { Engine, EngineRequest, ModelInfo, RunOptions } from '../types.js';
import { runCanaries } from './canary.js';
import { ConcurrencyGate } from './gate.js';
import { UpstreamClient } from './http.js';
import type { ExchangeLimits, UpstreamExchange } from './http.js';
import { resolveOptions, UPSTREAM_OPERATIONS } from './options.js';
import type { ResolvedUpstreamOptions, UpstreamEngineOptions, UpstreamIdentity, UpstreamOperation } from './options.js';
import { SseParser } from './sse.js';
import { linkSignals, sleep } from '../../core/signals.js';

export { UPSTREAM_KINDS } from './options.js';
export type { UpstreamEngineOptions, UpstreamKind, UpstreamOperation } from './options.js';

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
  readonly #opts: ResolvedUpstreamOptions;
  readonly #gate: ConcurrencyGate;
  /** The options as given: the canaries read theirs at start(). */
  readonly #canary: UpstreamEngineOptions;
  readonly #closing = new AbortController();
  /** Connections to the engine (at most maxConcurrency, kept alive for keepAliveTimeoutMs). */
  readonly #http: UpstreamClient;
  #started = false;

  constructor(options: UpstreamEngineOptions) {
    const o = resolveOptions(options);
    this.#opts = o;
    this.#canary = options;
    this.#gate = new ConcurrencyGate(o.maxConcurrency, o.maxQueued);
    this.#http = new UpstreamClient(o.target, o.client);
  }

  /** The engine identity for the key config's `engine` field. */
  identity(): UpstreamIdentity {
    return { ...this.#opts.identity };
  }

  models(): readonly ModelInfo[] {
    const info = this.#opts.info;
    return [{ ...info, operations: [...info.operations], digest: info.digest.slice() }];
  }

  /**
   * Wait for the engine, check it serves the configured model, then run the canary. Rejects
   * with ENGINE_UNAVAILABLE (fail closed) when any of this goes wrong.
   */
  async start(): Promise<void> {
    if (this.#started) return;
    if (this.#closing.signal.aborted) throw new CloisterError('ENGINE_UNAVAILABLE', 'upstream engine is closed');
    await this.#waitReady();
    await runCanaries(this.#canary, this.#opts.model, (op, body) => this.#canaryCall(op, body));
    this.#started = true;
  }

  async close(): Promise<void> {
    this.#started = false;
    this.#closing.abort();
    await this.#http.close();
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
    // One signal for the caller's cancel and the engine's close; not AbortSignal.any (its cost:
    // docs/PERFORMANCE.md, "Measured costs behind the code").
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
    if (op !== 'models') checkUpstreamBody(op, { ...(input as Record<string, unknown>), ...request.params }, this.#opts.allowFields);
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
    const exchange = await this.#http.open(limits, {
      method: body === undefined ? 'GET' : 'POST',
      path: PATHS[op],
      ...(body === undefined ? {} : { body }),
      accept: 'application/json',
      signal,
      deadline,
    });
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
    const exchange = await this.#http.open(this.#opts.limits, {
      method: 'POST',
      path,
      body,
      accept: 'text/event-stream',
      signal,
      deadline,
    });
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
