/**
 * HTTP client transport over `fetch`: `GET /v1/evidence?nonce=hex`, `POST /v1/sealed`
 * with the sealed request as the body and the chunked sealed response streamed back.
 */
import { concatBytes } from '../crypto/bytes.js';
import { CloisterError, isErrorCode } from '../errors.js';
import type { EvidenceBundle } from '../attestation/types.js';
import { decodeWireMessage } from '../protocol/wire.js';
import { DEFAULT_CLIENT_MAX_MESSAGE_BYTES } from './transport.js';
import type { ClientTransport, SealedExchange, TransportLimits } from './transport.js';

const CHUNKED_RESPONSE_TYPE = 'message/ohttp-chunked-res';

async function readBounded(res: Response, max: number): Promise<Uint8Array> {
  const declared = Number(res.headers.get('content-length') ?? '0');
  if (declared > max) throw new CloisterError('LIMIT_EXCEEDED', 'server message too large');
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
      throw new CloisterError('LIMIT_EXCEEDED', 'server message too large');
    }
    parts.push(value);
  }
  return concatBytes(...parts);
}

/** Turns a non-200 answer into the server's coded error (or PROTOCOL_VIOLATION). */
async function errorOf(res: Response, max: number): Promise<CloisterError> {
  try {
    const msg = decodeWireMessage(await readBounded(res, max));
    if (msg.t === 'err' && isErrorCode(msg.code)) return new CloisterError(msg.code, undefined, { detail: { origin: 'server', status: res.status } });
  } catch {
    // fall through
  }
  return new CloisterError('PROTOCOL_VIOLATION', `unexpected HTTP ${res.status}`, { detail: { status: res.status } });
}

export class HttpClientTransport implements ClientTransport {
  private readonly base: string;
  private readonly max: number;

  constructor(url: string, limits: TransportLimits = {}) {
    this.base = url.replace(/\/+$/, '');
    this.max = limits.maxMessageBytes ?? DEFAULT_CLIENT_MAX_MESSAGE_BYTES;
  }

  private async fetch(path: string, init: RequestInit): Promise<Response> {
    try {
      return await fetch(`${this.base}${path}`, init);
    } catch (cause) {
      if (init.signal?.aborted === true) throw new CloisterError('CANCELLED', undefined, { cause });
      throw new CloisterError('CONNECTION_FAILED', 'HTTP request failed', { cause });
    }
  }

  async fetchEvidence(nonce: Uint8Array | undefined): Promise<EvidenceBundle> {
    const q = nonce === undefined ? '' : `?nonce=${Buffer.from(nonce).toString('hex')}`;
    const res = await this.fetch(`/v1/evidence${q}`, { method: 'GET' });
    if (res.status !== 200) throw await errorOf(res, this.max);
    const msg = decodeWireMessage(await readBounded(res, this.max));
    if (msg.t !== 'evidence') throw new CloisterError('PROTOCOL_VIOLATION', 'expected evidence');
    return msg.bundle;
  }

  exchange(sealed: Uint8Array, signal?: AbortSignal): SealedExchange {
    return { mode: 'stream', pieces: this.pieces(sealed, signal) };
  }

  private async *pieces(sealed: Uint8Array, signal: AbortSignal | undefined): AsyncGenerator<Uint8Array> {
    {
      const res = await this.fetch('/v1/sealed', {
        method: 'POST',
        headers: { 'content-type': 'message/ohttp-chunked-req' },
        body: sealed,
        ...(signal === undefined ? {} : { signal }),
      });
      if (res.status !== 200) throw await errorOf(res, this.max);
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
