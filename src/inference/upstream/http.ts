/**
 * HTTP to the upstream engine over loopback TCP or a Unix socket, on undici: one keep-alive
 * Pool per engine, with the timeouts and limits a hostile or sick engine needs: connect
 * (the pool's connectTimeout), first byte (headersTimeout), idle gap between body bytes
 * (bodyTimeout), overall deadline, response size, and immediate abort.
 *
 * Every failure becomes a coded CloisterError:
 *   - cannot connect, or the connection drops before a response head: ENGINE_UNAVAILABLE
 *   - a timer fired: TIMEOUT
 *   - the caller's signal aborted: CANCELLED
 *   - the body was cut after the head arrived: ENGINE_FAILED
 *   - more than maxResponseBytes: LIMIT_EXCEEDED
 * No error message carries request or response content.
 */
import { Pool } from 'undici';
import type { Dispatcher } from 'undici';
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

export interface ClientLimits {
  readonly connectTimeoutMs: number;
  /** How long an idle connection is kept for the next request; 0: one connection per request. */
  readonly keepAliveTimeoutMs: number;
  /** Most connections to the engine. */
  readonly maxConnections: number;
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

/** Body bytes queued for a consumer before the response is paused (Readable's default high-water mark). */
const READER_HIGH_WATER = 16 * 1024;

/** Errors on a pooled connection, before any response byte, that mean the engine closed it while idle. */
const STALE_SOCKET_CODES: ReadonlySet<string> = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE']);

export class UpstreamClient {
  readonly #pool: Pool;
  readonly #target: UpstreamTarget;
  readonly #keepAlive: boolean;

  constructor(target: UpstreamTarget, limits: ClientLimits) {
    this.#target = target;
    this.#keepAlive = limits.keepAliveTimeoutMs > 0;
    const keepAlive = Math.max(1, limits.keepAliveTimeoutMs);
    this.#pool = new Pool(`http://${target.hostHeader}`, {
      connections: limits.maxConnections,
      connect: { timeout: limits.connectTimeoutMs },
      ...(target.socketPath === undefined ? {} : { socketPath: target.socketPath }),
      // The engine's `keep-alive: timeout=N` hint may shorten the idle time, never lengthen it.
      keepAliveTimeout: keepAlive,
      keepAliveMaxTimeout: keepAlive,
    });
  }

  /**
   * Send the request and wait for the response head. With keep-alive the connection is
   * reused after a complete response; without it each exchange has its own connection
   * (`connection: close`). Either way, an exchange that ends early (cancel, timeout, limit,
   * error) destroys its socket, so the engine sees the close and a half-read response is
   * never reused.
   */
  open(limits: ExchangeLimits, request: ExchangeRequest): Promise<UpstreamExchange> {
    return this.#open(limits, request, false);
  }

  async #open(limits: ExchangeLimits, request: ExchangeRequest, retried: boolean): Promise<UpstreamExchange> {
    const exchange = new UpstreamExchange(limits, request);
    try {
      await exchange.dispatch(this.#pool, this.#target, request, !this.#keepAlive);
      return exchange;
    } catch (err) {
      // A pooled socket the engine closed while it sat idle (a race with keepAliveTimeoutMs)
      // fails before any response byte. RFC 9112 section 9.3.1 asks for care with
      // non-idempotent requests: an OpenAI call has no side effect beyond compute, so one
      // retry (which may open a new connection) is the lesser harm than a spurious error.
      const errno = err instanceof CloisterError ? err.detail?.['errno'] : undefined;
      if (this.#keepAlive && !retried && !request.signal.aborted && typeof errno === 'string' && STALE_SOCKET_CODES.has(errno)) {
        return this.#open(limits, request, true);
      }
      throw err;
    }
  }

  /** Destroy every connection, in flight or idle. */
  async close(): Promise<void> {
    await this.#pool.destroy();
  }
}

/**
 * One request and its response: an undici dispatch handler that queues body chunks for a
 * pull-style reader. The response is paused once READER_HIGH_WATER bytes wait for the
 * consumer (backpressure reaches the engine, and undici's body timer does not run while
 * paused: a slow reader is not a slow engine).
 */
export class UpstreamExchange implements Dispatcher.DispatchHandler {
  #status = 0;
  #contentType = '';
  readonly #limits: ExchangeLimits;
  readonly #signal: AbortSignal;
  #controller: Dispatcher.DispatchController | undefined;
  #timer: NodeJS.Timeout | undefined;
  #failure: CloisterError | undefined;
  #headed = false;
  #ended = false;
  #closed = false;
  readonly #queue: Buffer[] = [];
  #queuedBytes = 0;
  #received = 0;
  #wake: (() => void) | undefined;
  #onHead: ((err?: CloisterError) => void) | undefined;
  readonly #onAbort = (): void => this.#fail(cancelled());

  /** @internal Created by UpstreamClient.open. */
  constructor(limits: ExchangeLimits, request: ExchangeRequest) {
    this.#limits = limits;
    this.#signal = request.signal;
  }

  /** @internal Send the request; resolves at the response head. */
  dispatch(pool: Pool, target: UpstreamTarget, request: ExchangeRequest, reset: boolean): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#onHead = (err) => (err === undefined ? resolve() : reject(err));
      if (request.signal.aborted) {
        this.#fail(cancelled());
        return;
      }
      request.signal.addEventListener('abort', this.#onAbort, { once: true });
      this.#timer = setTimeout(() => {
        this.#fail(new CloisterError('TIMEOUT', 'upstream request exceeded requestTimeoutMs', { detail: { limit: 'requestTimeoutMs' } }));
      }, clampDelay(request.deadline - Date.now()));
      const headers: string[] = ['host', target.hostHeader, 'accept', request.accept];
      if (request.body !== undefined) headers.push('content-type', 'application/json');
      try {
        pool.dispatch({
          method: request.method,
          path: target.basePath + request.path,
          headers,
          body: request.body === undefined ? null : request.body,
          reset,
          headersTimeout: this.#limits.firstByteTimeoutMs,
          bodyTimeout: this.#limits.idleTimeoutMs,
        }, this);
      } catch (err) {
        this.#fail(headError(err instanceof Error ? err : new Error(String(err)), this.#limits));
      }
    });
  }

  get status(): number {
    return this.#status;
  }

  /** The first Content-Type of the response, lower-cased ('' when absent). */
  get contentType(): string {
    return this.#contentType;
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    if (this.#failure !== undefined) controller.abort(this.#failure);
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    if (this.#failure !== undefined) return;
    this.#headed = true;
    this.#status = statusCode;
    const type = headers['content-type'];
    this.#contentType = (Array.isArray(type) ? type[0] ?? '' : type ?? '').toLowerCase();
    this.#settleHead();
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#failure !== undefined) return;
    this.#received += chunk.length;
    if (this.#received > this.#limits.maxResponseBytes) {
      this.#fail(new CloisterError('LIMIT_EXCEEDED', 'upstream response exceeds maxResponseBytes', {
        detail: { limit: 'maxResponseBytes', max: this.#limits.maxResponseBytes },
      }));
      return;
    }
    this.#queue.push(chunk);
    this.#queuedBytes += chunk.length;
    if (this.#wake !== undefined) this.#notify();
    else if (this.#queuedBytes >= READER_HIGH_WATER) controller.pause();
  }

  onResponseEnd(): void {
    this.#ended = true;
    this.#dispose();
    this.#notify();
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    this.#fail(this.#headed ? bodyError(err, this.#limits) : headError(err, this.#limits));
  }

  /**
   * The body, chunk by chunk, as it arrives: everything queued since the last read as one
   * buffer, so the events of one burst from the engine travel together downstream.
   */
  async *chunks(): AsyncGenerator<Uint8Array, void, undefined> {
    try {
      for (;;) {
        if (this.#queue.length === 0 && !this.#ended && this.#failure === undefined) await this.#wait();
        if (this.#failure !== undefined) throw this.#failure;
        const n = this.#queue.length;
        if (n === 0) {
          if (this.#ended) return;
          continue;
        }
        const b = n === 1 ? (this.#queue[0] as Buffer) : Buffer.concat(this.#queue, this.#queuedBytes);
        this.#queue.length = 0;
        this.#queuedBytes = 0;
        yield new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
      }
    } finally {
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
    this.#queue.length = 0;
    this.#queuedBytes = 0;
    if (!this.#ended) this.#fail(cancelled());
    this.#dispose();
  }

  #wait(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#wake = resolve;
      if (this.#controller?.paused === true) this.#controller.resume();
    });
  }

  #fail(err: CloisterError): void {
    if (this.#failure !== undefined || this.#ended) return;
    this.#failure = err;
    this.#dispose();
    this.#controller?.abort(err);
    this.#settleHead(err);
    this.#notify();
  }

  #settleHead(err?: CloisterError): void {
    const settle = this.#onHead;
    this.#onHead = undefined;
    settle?.(err);
  }

  #dispose(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#signal.removeEventListener('abort', this.#onAbort);
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

function errnoOf(err: Error): string | undefined {
  const code = (err as NodeJS.ErrnoException).code;
  return typeof code === 'string' ? code : undefined;
}

/** A failure before the response head. */
function headError(err: Error, limits: ExchangeLimits): CloisterError {
  const code = errnoOf(err);
  if (code === 'UND_ERR_CONNECT_TIMEOUT') {
    return new CloisterError('TIMEOUT', 'upstream engine connect timed out', {
      detail: { limit: 'connectTimeoutMs', ms: limits.connectTimeoutMs },
    });
  }
  if (code === 'UND_ERR_HEADERS_TIMEOUT') {
    return new CloisterError('TIMEOUT', 'upstream engine sent no response in time', {
      detail: { limit: 'firstByteTimeoutMs', ms: limits.firstByteTimeoutMs },
    });
  }
  return new CloisterError('ENGINE_UNAVAILABLE', `upstream engine is not reachable (${code ?? 'connection error'})`, {
    cause: err,
    ...(code === undefined ? {} : { detail: { errno: code } }),
  });
}

/** A failure after the response head. */
function bodyError(err: Error, limits: ExchangeLimits): CloisterError {
  if (errnoOf(err) === 'UND_ERR_BODY_TIMEOUT') {
    return new CloisterError('TIMEOUT', 'upstream engine went silent', { detail: { limit: 'idleTimeoutMs', ms: limits.idleTimeoutMs } });
  }
  return new CloisterError('ENGINE_FAILED', 'upstream engine connection broke mid-response', { cause: err });
}

/** setTimeout fires at once for delays above 2^31 - 1 ms; clamp (about 24.8 days). */
function clampDelay(ms: number): number {
  return Math.min(Math.max(0, ms), 2 ** 31 - 1);
}

function cancelled(): CloisterError {
  return new CloisterError('CANCELLED', 'request cancelled');
}
