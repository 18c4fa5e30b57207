/**
 * One HTTP exchange with the upstream engine over loopback TCP or a Unix socket, with the
 * timeouts and limits a hostile or sick engine needs: connect, first byte (response head),
 * idle gap between body bytes, overall deadline, response size, and immediate abort.
 *
 * Every failure becomes a coded CloisterError:
 *   - cannot connect, or the connection drops before a response head: ENGINE_UNAVAILABLE
 *   - a timer fired: TIMEOUT
 *   - the caller's signal aborted: CANCELLED
 *   - the body was cut after the head arrived: ENGINE_FAILED
 *   - more than maxResponseBytes: LIMIT_EXCEEDED
 * No error message carries request or response content.
 */
import { request as httpRequest } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Agent, ClientRequest, IncomingMessage } from 'node:http';
import { concatBytes } from '../../core/bytes.js';
import { CloisterError } from '../../errors.js';

export interface UpstreamTarget {
  /** Host name or address (ignored for the TCP connection when socketPath is set). */
  readonly hostname: string;
  readonly port: number;
  readonly socketPath?: string;
  /** Path prefix of the OpenAI-compatible API, e.g. "/v1" (no trailing slash). */
  readonly basePath: string;
  /** Value of the Host header. */
  readonly hostHeader: string;
}

export interface ExchangeLimits {
  readonly connectTimeoutMs: number;
  readonly firstByteTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly maxResponseBytes: number;
}

interface ExchangeRequest {
  readonly method: 'GET' | 'POST';
  /** Path below the base path, e.g. "/chat/completions". */
  readonly path: string;
  readonly body?: Uint8Array;
  readonly accept: string;
  readonly signal: AbortSignal;
  /** Absolute time (Date.now() scale) after which the whole exchange fails with TIMEOUT. */
  readonly deadline: number;
}

export class UpstreamExchange {
  readonly status: number;
  readonly contentType: string;
  readonly #req: ClientRequest;
  readonly #res: IncomingMessage;
  readonly #limits: ExchangeLimits;
  readonly #state: ExchangeState;
  #received = 0;
  #closed = false;

  private constructor(req: ClientRequest, res: IncomingMessage, limits: ExchangeLimits, state: ExchangeState) {
    this.#req = req;
    this.#res = res;
    this.#limits = limits;
    this.#state = state;
    this.status = res.statusCode ?? 0;
    this.contentType = contentTypeOf(res.rawHeaders);
  }

  /**
   * Send the request and wait for the response head. With `agent` (a keep-alive pool owned
   * by the engine) the connection is reused after a complete response; without it each
   * exchange has its own connection (`connection: close`). Either way, an exchange that
   * ends early (cancel, timeout, limit, error) destroys its socket, so the engine sees the
   * close and a half-read response is never reused.
   */
  static open(target: UpstreamTarget, limits: ExchangeLimits, request: ExchangeRequest, agent?: Agent): Promise<UpstreamExchange> {
    return UpstreamExchange.#open(target, limits, request, agent, false);
  }

  static #open(target: UpstreamTarget, limits: ExchangeLimits, request: ExchangeRequest, agent: Agent | undefined, retried: boolean): Promise<UpstreamExchange> {
    return new Promise<UpstreamExchange>((resolve, reject) => {
      if (request.signal.aborted) {
        reject(cancelled());
        return;
      }
      const state = new ExchangeState(request.signal, request.deadline);
      // Headers as a flat list: node:http still validates every name and value, but skips
      // the per-header setHeader bookkeeping of an object.
      const headers: string[] = ['host', target.hostHeader, 'accept', request.accept];
      // Without a pool: one connection per exchange.
      if (agent === undefined) headers.push('connection', 'close');
      if (request.body !== undefined) {
        headers.push('content-type', 'application/json', 'content-length', String(request.body.length));
      }
      const req = httpRequest({
        method: request.method,
        path: target.basePath + request.path,
        headers,
        agent: agent ?? false,
        ...(target.socketPath === undefined
          ? { hostname: target.hostname, port: target.port }
          : { socketPath: target.socketPath }),
      });
      let settled = false;
      const fail = (err: CloisterError): void => {
        if (settled) return;
        settled = true;
        state.dispose();
        req.destroy();
        reject(err);
      };
      state.onFailure = fail;

      state.arm(limits.connectTimeoutMs, () => new CloisterError('TIMEOUT', 'upstream engine connect timed out', {
        detail: { limit: 'connectTimeoutMs', ms: limits.connectTimeoutMs },
      }));
      req.on('socket', (socket) => {
        const connected = (): void => {
          state.arm(limits.firstByteTimeoutMs, () => new CloisterError('TIMEOUT', 'upstream engine sent no response in time', {
            detail: { limit: 'firstByteTimeoutMs', ms: limits.firstByteTimeoutMs },
          }));
        };
        if (socket.connecting) socket.once('connect', connected);
        else connected();
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (settled) return;
        // A pooled socket the engine closed while it sat idle (a race with keepAliveTimeoutMs)
        // fails at once with ECONNRESET / EPIPE, before any response byte. Node documents
        // `reusedSocket` for exactly this retry. RFC 9112 section 9.3.1 asks for care with
        // non-idempotent requests: an OpenAI call has no side effect beyond compute, so one
        // retry (which may open a new connection) is the lesser harm than a spurious error.
        if (agent !== undefined && !retried && req.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE') && !request.signal.aborted) {
          settled = true;
          state.dispose();
          req.destroy();
          resolve(UpstreamExchange.#open(target, limits, request, agent, true));
          return;
        }
        fail(new CloisterError('ENGINE_UNAVAILABLE', `upstream engine is not reachable (${err.code ?? 'connection error'})`, {
          cause: err,
          ...(err.code === undefined ? {} : { detail: { errno: err.code } }),
        }));
      });
      req.on('response', (res) => {
        if (settled) {
          res.destroy();
          return;
        }
        settled = true;
        state.clearTimer();
        const exchange = new UpstreamExchange(req, res, limits, state);
        state.onFailure = (err) => exchange.#fail(err);
        resolve(exchange);
      });
      req.end(request.body === undefined ? undefined : Buffer.from(request.body.buffer, request.body.byteOffset, request.body.byteLength));
    });
  }

  /**
   * The body, chunk by chunk, as it arrives. The idle timer runs only while waiting on the
   * engine, never while the consumer holds a chunk (a slow reader is not a slow engine).
   */
  async *chunks(): AsyncGenerator<Uint8Array, void, undefined> {
    const reader = new BodyReader(this.#res);
    const idle = (): CloisterError => new CloisterError('TIMEOUT', 'upstream engine went silent', {
      detail: { limit: 'idleTimeoutMs', ms: this.#limits.idleTimeoutMs },
    });
    try {
      for (;;) {
        let chunk = reader.take();
        if (chunk === undefined) {
          this.#state.arm(this.#limits.idleTimeoutMs, idle);
          try {
            await reader.wait();
          } finally {
            this.#state.clearTimer();
          }
          chunk = reader.take();
        }
        if (this.#state.failure !== undefined) throw this.#state.failure;
        if (chunk === undefined) {
          if (reader.error !== undefined) {
            throw new CloisterError('ENGINE_FAILED', 'upstream engine connection broke mid-response', { cause: reader.error });
          }
          if (!reader.ended) continue;
          if (!this.#res.complete) throw new CloisterError('ENGINE_FAILED', 'upstream engine connection broke mid-response');
          return;
        }
        this.#received += chunk.length;
        if (this.#received > this.#limits.maxResponseBytes) {
          const err = new CloisterError('LIMIT_EXCEEDED', 'upstream response exceeds maxResponseBytes', {
            detail: { limit: 'maxResponseBytes', max: this.#limits.maxResponseBytes },
          });
          this.#fail(err);
          throw err;
        }
        yield new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      }
    } finally {
      reader.detach();
      this.close();
    }
  }

  /** The whole body (bounded by maxResponseBytes). */
  async readAll(): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    for await (const c of this.chunks()) parts.push(c);
    return concatBytes(...parts);
  }

  /** Release the connection; an unfinished response is aborted (the engine sees the close). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#state.dispose();
    if (!this.#res.complete) this.#req.destroy();
    this.#res.resume();
  }

  #fail(err: CloisterError): void {
    this.#state.failure ??= err;
    this.#closed = true;
    this.#state.dispose();
    this.#req.destroy();
    this.#res.destroy();
  }
}

/**
 * Pull-style reader of a response body: chunks are queued as the socket delivers them, and the
 * response is paused once READER_HIGH_WATER bytes wait for the consumer (backpressure reaches
 * the engine; the queue holds at most that plus one socket read). Cheaper per chunk than the
 * generic Readable async iterator, and than a pause/resume per chunk.
 * 'end', 'close' and 'error' all mark the body as ended; the caller tells a complete body
 * from a cut one with `IncomingMessage.complete` (and an 'error' is always a failure).
 */
class BodyReader {
  readonly #res: IncomingMessage;
  readonly #queue: Buffer[] = [];
  #queuedBytes = 0;
  #paused = false;
  ended = false;
  error: unknown;
  #wake: (() => void) | undefined;
  readonly #onData = (b: Buffer): void => {
    this.#queue.push(b);
    this.#queuedBytes += b.length;
    if (this.#wake !== undefined) {
      this.#notify();
    } else if (this.#queuedBytes >= READER_HIGH_WATER && !this.#paused) {
      this.#paused = true;
      this.#res.pause();
    }
  };
  readonly #onEnd = (): void => {
    this.ended = true;
    this.#notify();
  };
  readonly #onError = (err: unknown): void => {
    this.error ??= err;
    this.ended = true;
    this.#notify();
  };

  constructor(res: IncomingMessage) {
    this.#res = res;
    res.on('data', this.#onData);
    res.on('end', this.#onEnd);
    res.on('close', this.#onEnd);
    res.on('error', this.#onError);
  }

  /**
   * Everything queued, as one buffer (as Readable.read() does), or undefined when nothing is
   * queued: the events of one burst from the engine then travel together downstream.
   */
  take(): Buffer | undefined {
    const n = this.#queue.length;
    if (n === 0) return undefined;
    const b = n === 1 ? this.#queue[0] : Buffer.concat(this.#queue, this.#queuedBytes);
    this.#queue.length = 0;
    this.#queuedBytes = 0;
    return b;
  }

  /** Resolves once a chunk is queued or the body ended (or failed). */
  wait(): Promise<void> {
    if (this.#queue.length > 0 || this.ended) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.#wake = resolve;
      if (this.#paused) {
        this.#paused = false;
        this.#res.resume();
      }
    });
  }

  /** Stop listening; queued chunks are dropped. */
  detach(): void {
    this.#res.off('data', this.#onData);
    this.#res.off('end', this.#onEnd);
    this.#res.off('close', this.#onEnd);
    // An 'error' after this point must not become an unhandled 'error' event.
    this.#res.off('error', this.#onError);
    this.#res.on('error', ignore);
    this.#queue.length = 0;
    this.#queuedBytes = 0;
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

/** Body bytes queued for a consumer before the response is paused (Readable's default high-water mark). */
const READER_HIGH_WATER = 16 * 1024;

function ignore(): void {
  // Errors after the exchange is over carry nothing the caller can act on.
}

/**
 * Timer, deadline and abort wiring shared by the request and response phases.
 *
 * One lazy timer serves both the whole-exchange deadline and the current phase (connect,
 * first byte, idle gap): arming a phase only records its expiry, and when the timer fires it
 * trips whatever has expired or re-schedules itself for the earliest expiry still pending. A
 * streamed answer re-arms the idle phase around every read, so this replaces a
 * setTimeout/clearTimeout pair per read (and several per request) with one timer per exchange
 * in the common case; the limits are enforced exactly as before, never later than set.
 */
class ExchangeState {
  failure: CloisterError | undefined;
  onFailure: ((err: CloisterError) => void) | undefined;
  readonly #signal: AbortSignal;
  /** The exchange's deadline on the monotonic clock (performance.now() scale). */
  readonly #deadline: number;
  /** Expiry (monotonic) of the armed phase; Infinity when none is armed. */
  #phaseAt = Number.POSITIVE_INFINITY;
  #phaseError: (() => CloisterError) | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** When #timer fires (monotonic); Infinity when no timer is pending. */
  #timerAt = Number.POSITIVE_INFINITY;
  #disposed = false;
  readonly #onAbort = (): void => this.#trip(cancelled());
  readonly #onTimer = (): void => {
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    if (this.#disposed || this.failure !== undefined) return;
    const now = performance.now();
    if (now >= this.#deadline) {
      this.#trip(new CloisterError('TIMEOUT', 'upstream request exceeded requestTimeoutMs', { detail: { limit: 'requestTimeoutMs' } }));
    } else if (now >= this.#phaseAt && this.#phaseError !== undefined) {
      this.#trip(this.#phaseError());
    } else {
      this.#schedule(now);
    }
  };

  /** `deadline` is on the Date.now() scale (the caller's); it is kept as a monotonic time. */
  constructor(signal: AbortSignal, deadline: number) {
    this.#signal = signal;
    const now = performance.now();
    this.#deadline = now + (deadline - Date.now());
    signal.addEventListener('abort', this.#onAbort, { once: true });
    this.#schedule(now);
  }

  arm(ms: number, make: () => CloisterError): void {
    const now = performance.now();
    this.#phaseAt = now + clampDelay(ms);
    this.#phaseError = make;
    this.#schedule(now);
  }

  /** Disarm the current phase (the deadline stays armed). */
  clearTimer(): void {
    this.#phaseAt = Number.POSITIVE_INFINITY;
    this.#phaseError = undefined;
  }

  dispose(): void {
    this.#disposed = true;
    this.clearTimer();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    this.#signal.removeEventListener('abort', this.#onAbort);
  }

  /** Make sure a timer fires no later than the earliest pending expiry. */
  #schedule(now: number): void {
    if (this.#disposed) return;
    const at = Math.min(this.#deadline, this.#phaseAt);
    // A pending timer that fires no later than `at` will re-schedule itself when it fires.
    if (this.#timerAt <= at) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timerAt = at;
    // Whole milliseconds: Node keeps one timer list per distinct duration.
    this.#timer = setTimeout(this.#onTimer, clampDelay(Math.ceil(at - now)));
  }

  #trip(err: CloisterError): void {
    if (this.failure !== undefined) return;
    this.failure = err;
    this.onFailure?.(err);
  }
}

/**
 * The first Content-Type of the response, lower-cased ('' when absent), read from the raw
 * header list: `IncomingMessage.headers` would build an object of every header for this one
 * value. The first one wins, as node:http does for this header.
 */
function contentTypeOf(raw: readonly string[]): string {
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i];
    if (name !== undefined && name.length === 12 && name.toLowerCase() === 'content-type') return (raw[i + 1] ?? '').toLowerCase();
  }
  return '';
}

/** setTimeout fires at once for delays above 2^31 - 1 ms; clamp (about 24.8 days). */
function clampDelay(ms: number): number {
  return Math.min(Math.max(0, ms), 2 ** 31 - 1);
}

function cancelled(): CloisterError {
  return new CloisterError('CANCELLED', 'request cancelled');
}
