/**
 * Plain HTTP transport (PROTOCOL.md section 5), for `fetch`-based clients:
 * - `GET /v1/evidence?nonce=<hex>`: the CBOR wire message {t:'evidence', bundle};
 * - `POST /v1/sealed`: body = the sealed request (at most `maxRequestBytes`); response = the
 *   chunked sealed response, streamed as the engine produces it (status 200), or a CBOR
 *   {t:'err', code} with a 4xx/5xx status when the request could not be opened.
 * - `POST /v1/ohttp`: standard Oblivious HTTP (RFC 9458, `message/ohttp-req`) with Binary HTTP
 *   (RFC 9292) inside, for OpenAI-shaped requests from unmodified OHTTP clients (../ohttp-gateway.ts).
 * - `GET /v1/log/head`, `/v1/log/proof`, `/v1/log/consistency`: receipts-v2 tree heads and proofs (../log-endpoint.ts).
 * - `GET /healthz`, `/readyz`, `/metrics`: operator endpoints in plain text / JSON (../ops.ts).
 * The end of the HTTP body is the end of the sealed stream: a body cut short lacks its
 * authenticated final chunk, which the client reports as STREAM_TRUNCATED.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { asCloisterError, wireCodeOf } from '../../errors.js';
import type { ErrorCode } from '../../errors.js';
import { encodeWireMessage, LIMIT_HEADER, MAX_NONCE_BYTES, MAX_PROTOCOL_VERSION } from '../../protocol/wire.js';
import { CHUNKED_RESPONSE_TYPE } from '../../protocol/chunked.js';
import type { ServerContext } from '../context.js';
import { handleSealedRequest, handleSessionOpen, handleSessionRequest } from '../handler.js';
import type { RequestHandler } from '../handler.js';
import { handleOhttpRequest, OHTTP_PATH, OHTTP_RESPONSE_MEDIA_TYPE } from '../ohttp-gateway.js';
import { answerLog, LOG_PATHS } from '../log-endpoint.js';
import type { SlidingWindowLimiter } from '../rate-limit.js';
import { OP_NONE } from '../stats.js';
import { handleOps, OPS_PATHS } from '../ops.js';
import type { OpsProvider } from '../ops.js';
import { LOCAL_SOURCE } from '../sources.js';

/** What the server knows of a socket: its connection counter and its source address. */
interface SocketInfo {
  readonly conn: number;
  readonly source: string;
}

const EVIDENCE_PATH = '/v1/evidence';
const SEALED_PATH = '/v1/sealed';
/** Protocol v2 (PROTOCOL.md section 11): open a session; a request of a session (its id is the resumable ticket). */
const SESSION_OPEN_PATH = '/v2/session';
const SESSION_SEALED_PATH = '/v2/sealed';
const SEALED_HANDLERS: ReadonlyMap<string, RequestHandler> = new Map([
  [SEALED_PATH, handleSealedRequest],
  [SESSION_OPEN_PATH, handleSessionOpen],
  [SESSION_SEALED_PATH, handleSessionRequest],
]);
const CBOR_TYPE = 'application/cbor';

function statusOf(code: ErrorCode): number {
  switch (code) {
    case 'NOT_FOUND':
      return 404;
    case 'LIMIT_EXCEEDED':
      return 413;
    case 'RATE_LIMITED':
      return 429;
    case 'TIMEOUT':
      return 408;
    case 'OVERLOADED':
    case 'ATTESTER_FAILED':
      return 503;
    case 'INTERNAL':
      return 500;
    case 'PROTOCOL_VIOLATION':
      return 405;
    default:
      return 400;
  }
}

function sendError(res: ServerResponse, code: ErrorCode): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const wire = wireCodeOf(code);
  const body = encodeWireMessage({ t: 'err', code: wire });
  res.writeHead(statusOf(wire), { 'content-type': CBOR_TYPE, 'content-length': body.byteLength, 'cache-control': 'no-store' });
  res.end(body);
}

/** An upload in progress, oldest first in HttpTransport.uploads. */
interface Upload {
  readonly source: string;
  readonly startedAt: number;
  /** Ends the upload with 408 TIMEOUT, naming the limit, and closes its connection. */
  readonly cut: (limit: 'maxUploadsInProgress' | 'maxUploadsPerSource' | 'bodyTimeoutMs') => void;
}

export class HttpTransport {
  private readonly limiters = new WeakMap<Socket, SlidingWindowLimiter>();
  /** Uploads in progress in the order they started (ServerLimits.uploadEvictAfterMs). */
  private readonly uploads = new Set<Upload>();

  constructor(
    private readonly ctx: ServerContext,
    private readonly infoOf: (socket: Socket) => SocketInfo,
    private readonly ops?: OpsProvider,
  ) {}

  /** Answers a request with a coded error and closes its connection (used past maxConnections). */
  refuse(req: IncomingMessage, res: ServerResponse, code: ErrorCode): void {
    res.setHeader('connection', 'close');
    sendError(res, code);
    req.resume();
  }

  handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname === EVIDENCE_PATH) {
      if (req.method !== 'GET') return sendError(res, 'PROTOCOL_VIOLATION');
      return this.evidence(req, res, url);
    }
    const handler = SEALED_HANDLERS.get(url.pathname);
    if (handler !== undefined) {
      if (req.method !== 'POST') return sendError(res, 'PROTOCOL_VIOLATION');
      return this.sealed(req, res, handler);
    }
    if (url.pathname === OHTTP_PATH) {
      if (req.method !== 'POST') return sendError(res, 'PROTOCOL_VIOLATION');
      return this.sealed(req, res, null);
    }
    if (LOG_PATHS.has(url.pathname)) {
      if (req.method !== 'GET') return sendError(res, 'PROTOCOL_VIOLATION');
      const answer = answerLog(this.ctx.keys, url);
      if ('code' in answer) return sendError(res, answer.code);
      res.writeHead(200, { 'content-type': CBOR_TYPE, 'content-length': answer.body.byteLength, 'cache-control': 'no-store' });
      res.end(answer.body);
      return;
    }
    if (this.ops !== undefined && OPS_PATHS.has(url.pathname)) return handleOps(this.ops, url.pathname, req, res);
    sendError(res, 'NOT_FOUND');
  }

  private evidence(req: IncomingMessage, res: ServerResponse, url: URL): void {
    const { conn, source } = this.infoOf(req.socket);
    const hex = url.searchParams.get('nonce');
    let nonce: Uint8Array | undefined;
    if (hex !== null && hex !== '') {
      if (!/^(?:[0-9a-fA-F]{2})+$/.test(hex) || hex.length > 2 * MAX_NONCE_BYTES) return sendError(res, 'MALFORMED');
      nonce = Uint8Array.from(Buffer.from(hex, 'hex'));
    }
    // `v=2`: a client that speaks sessions gets the key config that offers them (section 11).
    const v = url.searchParams.get('v');
    if (v !== null && v !== String(MAX_PROTOCOL_VERSION)) return sendError(res, 'MALFORMED');
    const version = v === null ? 1 : MAX_PROTOCOL_VERSION;
    let limiter = this.limiters.get(req.socket);
    if (limiter === undefined) {
      limiter = this.ctx.evidence.connectionLimiter();
      this.limiters.set(req.socket, limiter);
    }
    // The connection's budget and its source's: a client that opens a new connection per
    // request is still one source (not for Unix-socket peers, which have no address).
    const limiters = source === LOCAL_SOURCE ? [limiter] : [limiter, this.ctx.sources.entry(source).evidence];
    this.ctx.evidence.get(nonce, limiters, version).then(
      (bundle) => {
        this.ctx.stats.evidenceServed++;
        const body = encodeWireMessage({ t: 'evidence', bundle });
        this.ctx.logger.log('debug', 'evidence.served', { conn, bytesOut: body.byteLength });
        res.writeHead(200, { 'content-type': CBOR_TYPE, 'content-length': body.byteLength, 'cache-control': 'no-store' });
        res.end(body);
      },
      (err: unknown) => {
        const code = asCloisterError(err, 'ATTESTER_FAILED').code;
        this.ctx.stats.count(code);
        this.ctx.logger.log('warn', 'evidence.rejected', { conn, code });
        sendError(res, code);
      },
    );
  }

  /** A sealed request for `handle`, or with `handle` null the RFC 9458 + RFC 9292 gateway at `POST /v1/ohttp` (../ohttp-gateway.ts): same upload limits. */
  private sealed(req: IncomingMessage, res: ServerResponse, handle: RequestHandler | null): void {
    const { limits, stats, logger, sources } = this.ctx;
    const { conn, source } = this.infoOf(req.socket);
    const reject = (code: ErrorCode, fields: { readonly bytesIn?: number; readonly limit?: keyof typeof limits }, close: boolean): void => {
      stats.sealedRequestsReceived++;
      stats.count(code);
      stats.recordRequest(OP_NONE, code);
      logger.log('info', 'request.rejected', { conn, code, inFlight: stats.inFlight, ...fields });
      if (close) res.setHeader('connection', 'close');
      // The limit that refused it, by name and value (not secret; the client's error names it).
      if (fields.limit !== undefined && !res.headersSent) res.setHeader(LIMIT_HEADER, `${fields.limit}=${limits[fields.limit]}`);
      sendError(res, code);
    };
    const declared = Number(req.headers['content-length'] ?? '0');
    if (declared > limits.maxRequestBytes) {
      reject('LIMIT_EXCEEDED', { bytesIn: declared, limit: 'maxRequestBytes' }, true);
      req.resume();
      return;
    }
    if (this.ctx.state.draining) {
      reject('OVERLOADED', {}, true);
      req.resume();
      return;
    }
    // Uploads in progress have their own small budget and a deadline (ServerLimits.
    // maxUploadsInProgress, maxUploadsPerSource, bodyTimeoutMs): a body is work only once it
    // is complete, so slow bodies cannot hold the in-flight slots that inference needs.
    const perSource = source === LOCAL_SOURCE ? undefined : sources.entry(source);
    // At a cap, the oldest upload (of this source, or of any at the global cap) that has run
    // for uploadEvictAfterMs gives way: a body that has taken that long is a slow one, and an
    // honest client's body arrives in a moment. Slow bodies then cannot keep out one that is not.
    const makeRoom = (limit: 'maxUploadsInProgress' | 'maxUploadsPerSource'): boolean => {
      const now = performance.now();
      for (const u of this.uploads) {
        if (now - u.startedAt < limits.uploadEvictAfterMs) break;
        if (limit === 'maxUploadsInProgress' || u.source === source) {
          u.cut(limit);
          return true;
        }
      }
      return false;
    };
    for (const limit of ['maxUploadsInProgress', 'maxUploadsPerSource'] as const) {
      const full = limit === 'maxUploadsInProgress' ? stats.uploadsInProgress >= limits.maxUploadsInProgress : perSource !== undefined && perSource.uploads >= limits.maxUploadsPerSource;
      if (full && !makeRoom(limit)) {
        reject('OVERLOADED', { limit }, true);
        if (perSource !== undefined) sources.release(source);
        // The body is not read: the connection closes once the answer is out.
        res.once('finish', () => req.socket.destroy());
        return;
      }
    }
    stats.uploadsInProgress++;
    if (perSource !== undefined) perSource.uploads++;
    let uploading = true;
    const upload: Upload = {
      source,
      startedAt: performance.now(),
      cut: (limit) => {
        if (!uploading) return;
        endUpload();
        done = true;
        parts.length = 0;
        reject('TIMEOUT', { bytesIn: size, limit }, true);
        res.once('finish', () => req.socket.destroy());
      },
    };
    this.uploads.add(upload);
    const endUpload = (): void => {
      if (!uploading) return;
      uploading = false;
      this.uploads.delete(upload);
      clearTimeout(bodyTimer);
      stats.uploadsInProgress--;
      if (perSource !== undefined) {
        perSource.uploads--;
        sources.release(source);
      }
    };
    const bodyTimer = setTimeout(() => upload.cut('bodyTimeoutMs'), limits.bodyTimeoutMs);
    bodyTimer.unref();

    const abort = new AbortController();
    res.on('close', () => {
      endUpload();
      if (!res.writableFinished) abort.abort();
    });
    const parts: Buffer[] = [];
    let size = 0;
    /** No more of this request is processed (rejected, timed out, or handed to the handler and finished). */
    let done = false;
    let counted = false;
    const finish = (): void => {
      done = true;
      if (counted) {
        counted = false;
        stats.inFlight--;
      }
    };
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.byteLength;
      if (size > limits.maxRequestBytes) {
        // Chunked uploads have no declared length: bound what we buffer as it arrives.
        endUpload();
        finish();
        parts.length = 0;
        reject('LIMIT_EXCEEDED', { bytesIn: size, limit: 'maxRequestBytes' }, true);
        return;
      }
      parts.push(chunk);
    });
    req.on('error', () => {
      endUpload();
      finish();
      abort.abort();
    });
    req.on('end', () => {
      endUpload();
      if (done) return;
      const body = new Uint8Array(Buffer.concat(parts, size));
      parts.length = 0;
      // The body is complete: now it is work, and counts against maxInFlightTotal.
      if (stats.inFlight >= limits.maxInFlightTotal) {
        done = true;
        reject('OVERLOADED', { bytesIn: size, limit: 'maxInFlightTotal' }, false);
        return;
      }
      stats.inFlight++;
      counted = true;
      if (handle === null) {
        handleOhttpRequest(this.ctx.handlerDeps, body, abort.signal, { source })
          .then((outcome) => {
            if (outcome.kind === 'error') return sendError(res, outcome.code);
            res.writeHead(200, { 'content-type': OHTTP_RESPONSE_MEDIA_TYPE, 'content-length': outcome.body.byteLength, 'cache-control': 'no-store' });
            res.end(outcome.body);
          })
          .catch(() => res.destroy())
          .finally(finish);
        return;
      }
      const out = {
        write: (bytes: Uint8Array): Promise<void> | undefined => {
          if (abort.signal.aborted) return undefined;
          if (!res.headersSent) {
            res.writeHead(200, { 'content-type': CHUNKED_RESPONSE_TYPE, 'cache-control': 'no-store' });
          }
          if (res.write(bytes)) return undefined;
          stats.backpressureWaits++;
          return new Promise<void>((resolve) => {
            const go = (): void => {
              res.off('drain', go);
              res.off('close', go);
              resolve();
            };
            res.on('drain', go);
            res.on('close', go);
          });
        },
        end: () => {
          res.end();
        },
        fail: (code: ErrorCode) => sendError(res, code),
      };
      // The whole response must reach the socket by the deadline plus the report grace
      // (ServerLimits.reportGraceMs); the handler itself ends by then whatever the peer does.
      const cutoffAt = performance.now() + limits.requestTimeoutMs + limits.reportGraceMs;
      handle(this.ctx.handlerDeps, body, out, { conn, source, signal: abort.signal })
        .catch(() => undefined)
        .finally(() => {
          finish();
          if (!res.writableEnded) {
            res.destroy();
            return;
          }
          if (res.writableFinished) return;
          // Ended but still buffered: a peer that stopped reading keeps neither the socket
          // nor its buffers past the cutoff.
          const cutoff = setTimeout(() => {
            if (!res.writableFinished) res.destroy();
          }, Math.max(0, cutoffAt - performance.now()));
          cutoff.unref();
          res.once('close', () => clearTimeout(cutoff));
          res.once('finish', () => clearTimeout(cutoff));
        });
    });
  }
}
