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
import type { Agent, ClientRequest, IncomingMessage } from 'node:http';
import { concatBytes } from '../../crypto/bytes.js';
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

export interface ExchangeRequest {
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
    const ct = res.headers['content-type'];
    this.contentType = typeof ct === 'string' ? ct.toLowerCase() : '';
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
      const headers: Record<string, string | number> = {
        host: target.hostHeader,
        accept: request.accept,
      };
      // Without a pool: one connection per exchange.
      if (agent === undefined) headers['connection'] = 'close';
      if (request.body !== undefined) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = request.body.length;
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
    const it = this.#res[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    try {
      for (;;) {
        this.#state.arm(this.#limits.idleTimeoutMs, () => new CloisterError('TIMEOUT', 'upstream engine went silent', {
          detail: { limit: 'idleTimeoutMs', ms: this.#limits.idleTimeoutMs },
        }));
        let step: IteratorResult<Buffer>;
        try {
          step = await it.next();
        } catch (cause) {
          throw this.#state.failure ?? new CloisterError('ENGINE_FAILED', 'upstream engine connection broke mid-response', { cause });
        } finally {
          this.#state.clearTimer();
        }
        if (this.#state.failure !== undefined) throw this.#state.failure;
        if (step.done === true) {
          if (!this.#res.complete) throw new CloisterError('ENGINE_FAILED', 'upstream engine connection broke mid-response');
          return;
        }
        this.#received += step.value.length;
        if (this.#received > this.#limits.maxResponseBytes) {
          const err = new CloisterError('LIMIT_EXCEEDED', 'upstream response exceeds maxResponseBytes', {
            detail: { limit: 'maxResponseBytes', max: this.#limits.maxResponseBytes },
          });
          this.#fail(err);
          throw err;
        }
        yield new Uint8Array(step.value.buffer, step.value.byteOffset, step.value.byteLength);
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

/** Timer, deadline and abort wiring shared by the request and response phases. */
class ExchangeState {
  failure: CloisterError | undefined;
  onFailure: ((err: CloisterError) => void) | undefined;
  readonly #signal: AbortSignal;
  #timer: NodeJS.Timeout | undefined;
  readonly #deadlineTimer: NodeJS.Timeout;
  readonly #onAbort = (): void => this.#trip(cancelled());

  constructor(signal: AbortSignal, deadline: number) {
    this.#signal = signal;
    signal.addEventListener('abort', this.#onAbort, { once: true });
    this.#deadlineTimer = setTimeout(
      () => this.#trip(new CloisterError('TIMEOUT', 'upstream request exceeded requestTimeoutMs', { detail: { limit: 'requestTimeoutMs' } })),
      clampDelay(deadline - Date.now()),
    );
  }

  arm(ms: number, make: () => CloisterError): void {
    this.clearTimer();
    this.#timer = setTimeout(() => this.#trip(make()), clampDelay(ms));
  }

  clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  dispose(): void {
    this.clearTimer();
    clearTimeout(this.#deadlineTimer);
    this.#signal.removeEventListener('abort', this.#onAbort);
  }

  #trip(err: CloisterError): void {
    if (this.failure !== undefined) return;
    this.failure = err;
    this.onFailure?.(err);
  }
}

/** setTimeout fires at once for delays above 2^31 - 1 ms; clamp (about 24.8 days). */
function clampDelay(ms: number): number {
  return Math.min(Math.max(0, ms), 2 ** 31 - 1);
}

function cancelled(): CloisterError {
  return new CloisterError('CANCELLED', 'request cancelled');
}
