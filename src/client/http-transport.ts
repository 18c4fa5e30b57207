/**
 * HTTP client transport over `fetch`: `GET /v1/evidence?nonce=hex`, `POST /v1/sealed`
 * with the sealed request as the body and the chunked sealed response streamed back.
 */
import { concatBytes } from '../core/bytes.js';
import { CloisterError, isErrorCode } from '../errors.js';
import type { EvidenceBundle } from '../core/types.js';
import { decodeWireMessage, LIMIT_HEADER } from '../protocol/wire.js';
import { CHUNKED_RESPONSE_TYPE } from '../protocol/chunked.js';
import { connectionFailed, notCloister, targetOf } from './connection-error.js';
import { DEFAULT_CLIENT_MAX_MESSAGE_BYTES, DEFAULT_CONNECT_TIMEOUT_MS } from './transport.js';
import type { ClientTransport, ExchangeKind, SealedExchange, TransportLimits } from './transport.js';


function tooLarge(max: number): CloisterError {
  return new CloisterError('LIMIT_EXCEEDED', `the server's message exceeds the client's maxMessageBytes (${max} bytes)`, { detail: { limit: 'maxMessageBytes', max } });
}

async function readBounded(res: Response, max: number): Promise<Uint8Array> {
  const declared = Number(res.headers.get('content-length') ?? '0');
  if (declared > max) throw tooLarge(max);
  if (res.body === null) return new Uint8Array(0);
  const parts: Uint8Array[] = [];
  let size = 0;
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel();
      throw tooLarge(max);
    }
    parts.push(value);
  }
  return concatBytes(...parts);
}

/**
 * Turns a non-200 answer into the server's coded error; an answer that is no Cloister error
 * message (a 404 from some other web server) says so, naming the address and the request.
 */
async function errorOf(res: Response, max: number, target: string, request: string): Promise<CloisterError> {
  try {
    const msg = decodeWireMessage(await readBounded(res, max));
    if (msg.t === 'err' && isErrorCode(msg.code)) {
      if (msg.code === 'LIMIT_EXCEEDED') {
        // The server names the limit it applied (a header: the plaintext error message carries only the code).
        const limit = /^([A-Za-z]{1,64})=(\d{1,16})$/.exec(res.headers.get(LIMIT_HEADER) ?? '');
        if (limit !== null) {
          return new CloisterError('LIMIT_EXCEEDED', `${request} on ${target}: the server's ${limit[1]} (${limit[2]} bytes) was exceeded`, {
            detail: { origin: 'server', status: res.status, limit: limit[1] ?? '', max: Number(limit[2]) },
          });
        }
      }
      return new CloisterError(msg.code, undefined, { detail: { origin: 'server', status: res.status } });
    }
  } catch {
    // fall through
  }
  return notCloister(target, request, res.status);
}

/** The path of each kind of sealed body (PROTOCOL.md sections 7 and 11). */
const PATHS: Readonly<Record<ExchangeKind, string>> = { req: '/v1/sealed', sopen: '/v2/session', sreq: '/v2/sealed' };

export class HttpClientTransport implements ClientTransport {
  private readonly base: string;
  private readonly max: number;
  private readonly connectTimeoutMs: number;
  /** `host:port` of the server, for errors. */
  readonly target: string;

  constructor(url: string, limits: TransportLimits = {}) {
    this.base = url.replace(/\/+$/, '');
    this.max = limits.maxMessageBytes ?? DEFAULT_CLIENT_MAX_MESSAGE_BYTES;
    this.connectTimeoutMs = limits.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.target = targetOf(url);
  }

  private async fetch(path: string, init: RequestInit): Promise<Response> {
    const method = init.method ?? 'GET';
    try {
      // redirect: 'error': a 3xx from the network must not send the client elsewhere
      // (a request to an address of the attacker's choosing).
      return await fetch(`${this.base}${path}`, { ...init, redirect: 'error' });
    } catch (cause) {
      if (init.signal?.aborted === true) {
        const reason: unknown = init.signal.reason;
        if (!(reason instanceof Error && reason.name === 'TimeoutError')) throw new CloisterError('CANCELLED', undefined, { cause });
        throw new CloisterError('CONNECTION_FAILED', `${method} ${path.split('?')[0] ?? path} on ${this.target} failed: timed out after ${this.connectTimeoutMs} ms (connectTimeoutMs)`, {
          cause,
          detail: { target: this.target },
        });
      }
      if (cause instanceof TypeError && /redirect/i.test(messageOf(cause))) {
        throw new CloisterError('CONNECTION_FAILED', `${method} ${path.split('?')[0] ?? path} on ${this.target} answered with a redirect, which the client does not follow`, {
          cause,
          detail: { target: this.target },
        });
      }
      throw connectionFailed(this.target, `${method} ${path.split('?')[0] ?? path} on`, cause);
    }
  }

  async fetchEvidence(nonce: Uint8Array | undefined, version?: number): Promise<EvidenceBundle> {
    const params = [...(nonce === undefined ? [] : [`nonce=${Buffer.from(nonce).toString('hex')}`]), ...(version === undefined || version === 1 ? [] : [`v=${version}`])];
    const q = params.length === 0 ? '' : `?${params.join('&')}`;
    const res = await this.fetch(`/v1/evidence${q}`, { method: 'GET', signal: AbortSignal.timeout(this.connectTimeoutMs) });
    if (res.status !== 200) throw await errorOf(res, this.max, this.target, 'GET /v1/evidence');
    let body: Uint8Array;
    try {
      body = await readBounded(res, this.max);
    } catch (cause) {
      if (cause instanceof CloisterError) throw cause;
      throw connectionFailed(this.target, 'reading the answer to GET /v1/evidence from', cause);
    }
    const msg = decodeWireMessage(body);
    if (msg.t !== 'evidence') throw new CloisterError('PROTOCOL_VIOLATION', 'expected evidence');
    return msg.bundle;
  }

  /**
   * `GET path` (a public read such as `/v1/log/head`, src/client/log-proofs.ts): the answer's
   * bytes, at most `max`; the server's coded error otherwise.
   */
  async get(path: string, max: number): Promise<Uint8Array> {
    const request = `GET ${path.split('?')[0] ?? path}`;
    const res = await this.fetch(path, { method: 'GET', signal: AbortSignal.timeout(this.connectTimeoutMs) });
    if (res.status !== 200) throw await errorOf(res, Math.min(max, this.max), this.target, request);
    try {
      return await readBounded(res, Math.min(max, this.max));
    } catch (cause) {
      if (cause instanceof CloisterError) throw cause;
      throw connectionFailed(this.target, `reading the answer to ${request} from`, cause);
    }
  }

  exchange(sealed: Uint8Array, signal?: AbortSignal, kind: ExchangeKind = 'req'): SealedExchange {
    return { pieces: this.pieces(sealed, signal, PATHS[kind]) };
  }

  private async *pieces(sealed: Uint8Array, signal: AbortSignal | undefined, path: string): AsyncGenerator<Uint8Array> {
    {
      const res = await this.fetch(path, {
        method: 'POST',
        headers: { 'content-type': 'message/ohttp-chunked-req' },
        body: sealed,
        ...(signal === undefined ? {} : { signal }),
      });
      if (res.status !== 200) throw await errorOf(res, this.max, this.target, `POST ${path}`);
      if (res.headers.get('content-type') !== CHUNKED_RESPONSE_TYPE || res.body === null) {
        throw new CloisterError('PROTOCOL_VIOLATION', 'unexpected response type');
      }
      const reader = res.body.getReader();
      try {
        for (;;) {
          let step: Awaited<ReturnType<typeof reader.read>>;
          try {
            step = await reader.read();
          } catch (cause) {
            if (signal?.aborted === true) throw new CloisterError('CANCELLED', undefined, { cause });
            // The body broke off: whatever arrived lacks its final chunk.
            throw new CloisterError('STREAM_TRUNCATED', 'response body ended abruptly', { cause });
          }
          if (step.done) return;
          yield step.value;
        }
      } finally {
        reader.releaseLock();
        if (signal?.aborted !== true) await res.body.cancel().catch(() => undefined);
      }
    }
  }

  async close(): Promise<void> {
    // fetch keeps no per-client connection state worth closing.
  }
}

function messageOf(err: Error): string {
  const cause = err.cause;
  return `${err.message} ${cause instanceof Error ? cause.message : ''}`;
}
