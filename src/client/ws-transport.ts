/**
 * WebSocket client transport: one CBOR wire message per binary frame (src/protocol/wire.ts),
 * sealed requests multiplexed by stream id, cancel on abort, and flow control (the socket
 * stops being read while a slow consumer has more than `highWaterMarkBytes` queued).
 */
import { WebSocket } from 'ws';
import { CloisterError, isErrorCode } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import type { EvidenceBundle } from '../attestation/types.js';
import { decodeWireMessage, encodeWireMessage, MAX_STREAM_ID } from '../protocol/wire.js';
import type { WireMessage } from '../protocol/wire.js';
import {
  DEFAULT_CLIENT_HIGH_WATER_MARK,
  DEFAULT_CLIENT_MAX_MESSAGE_BYTES,
  DEFAULT_CONNECT_TIMEOUT_MS,
} from './transport.js';
import type { ClientTransport, SealedExchange, TransportLimits } from './transport.js';
import { checkUnixSocketPath, wsUnixSocketPath } from '../util/unix-socket.js';

function serverError(code: ErrorCode): CloisterError {
  return new CloisterError(code, undefined, { detail: { origin: 'server' } });
}

/** A WebSocket exchange that the client's deadline stops directly (see cancellableExchange). */
export interface CancellableExchange extends SealedExchange {
  readonly mode: 'stream';
  readonly pieces: AsyncGenerator<Uint8Array>;
  cancel(reason: CloisterError): void;
}

class Stream {
  readonly pieces: Uint8Array[] = [];
  ended = false;
  error: CloisterError | undefined;
  started = false;
  wake: (() => void) | undefined;
  notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}

export class WsClientTransport implements ClientTransport {
  private readonly streams = new Map<number, Stream>();
  private readonly evidenceWaiters: { resolve: (b: EvidenceBundle) => void; reject: (e: CloisterError) => void }[] = [];
  private nextSid = 1;
  private queued = 0;
  private paused = false;
  private failure: CloisterError | undefined;
  private readonly hwm: number;

  private constructor(private readonly ws: WebSocket, limits: TransportLimits) {
    this.hwm = limits.highWaterMarkBytes ?? DEFAULT_CLIENT_HIGH_WATER_MARK;
    ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    ws.on('close', () => this.fail(new CloisterError('CONNECTION_FAILED', 'connection closed')));
    ws.on('error', (err) => this.fail(new CloisterError('CONNECTION_FAILED', 'connection error', { cause: err })));
  }

  static async connect(url: string, limits: TransportLimits = {}): Promise<WsClientTransport> {
    const socketPath = wsUnixSocketPath(url);
    if (socketPath !== undefined) checkUnixSocketPath(socketPath, 'INVALID_ARGUMENT');
    const ws = new WebSocket(url, {
      maxPayload: limits.maxMessageBytes ?? DEFAULT_CLIENT_MAX_MESSAGE_BYTES,
      handshakeTimeout: limits.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      perMessageDeflate: false,
    });
    ws.binaryType = 'nodebuffer';
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        ws.off('open', onOpen);
        reject(new CloisterError('CONNECTION_FAILED', 'could not connect', { cause: err }));
      };
      const onOpen = (): void => {
        ws.off('error', onError);
        resolve();
      };
      ws.once('open', onOpen);
      ws.once('error', onError);
      ws.once('unexpected-response', (_req, res) => {
        ws.off('open', onOpen);
        reject(new CloisterError(res.statusCode === 503 ? 'OVERLOADED' : 'CONNECTION_FAILED', `server answered HTTP ${res.statusCode ?? 0}`));
      });
    });
    return new WsClientTransport(ws, limits);
  }

  private send(msg: WireMessage): void {
    if (this.failure !== undefined) throw this.failure;
    this.ws.send(encodeWireMessage(msg), { binary: true });
  }

  private fail(err: CloisterError): void {
    if (this.failure !== undefined) return;
    this.failure = err;
    for (const w of this.evidenceWaiters.splice(0)) w.reject(err);
    for (const s of this.streams.values()) {
      // A response that had started and lost its connection is a truncated stream.
      s.error ??= s.started ? new CloisterError('STREAM_TRUNCATED', 'connection closed mid-response', { cause: err }) : err;
      s.notify();
    }
    this.streams.clear();
  }

  private onMessage(data: unknown, isBinary: boolean): void {
    let msg: WireMessage;
    try {
      if (!isBinary || !(data instanceof Buffer)) throw new CloisterError('MALFORMED', 'text frame');
      msg = decodeWireMessage(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    } catch (err) {
      // A frame we cannot parse means the channel is corrupt: fail closed, everything pending.
      this.fail(err instanceof CloisterError ? err : new CloisterError('MALFORMED', undefined, { cause: err }));
      this.ws.terminate();
      return;
    }
    switch (msg.t) {
      case 'evidence':
        this.evidenceWaiters.shift()?.resolve(msg.bundle);
        return;
      case 'res': {
        const s = this.streams.get(msg.sid);
        if (s === undefined || s.ended) return; // a cancelled stream's late frames
        s.started = true;
        s.pieces.push(msg.body);
        this.queued += msg.body.byteLength;
        if (this.queued > this.hwm && !this.paused) {
          this.paused = true;
          this.ws.pause();
        }
        if (msg.fin === true) {
          // This frame ends the sealed stream (PROTOCOL.md section 5): no `end` frame follows.
          s.ended = true;
          this.streams.delete(msg.sid);
        }
        s.notify();
        return;
      }
      case 'end': {
        const s = this.streams.get(msg.sid);
        if (s === undefined) return;
        s.ended = true;
        this.streams.delete(msg.sid);
        s.notify();
        return;
      }
      case 'err': {
        const code = isErrorCode(msg.code) ? msg.code : 'PROTOCOL_VIOLATION';
        if (msg.sid === undefined) {
          const w = this.evidenceWaiters.shift();
          if (w !== undefined) w.reject(serverError(code));
          return;
        }
        const s = this.streams.get(msg.sid);
        if (s === undefined) return;
        s.error = serverError(code);
        this.streams.delete(msg.sid);
        s.notify();
        return;
      }
      default:
        this.fail(new CloisterError('PROTOCOL_VIOLATION', 'unexpected message from server'));
        this.ws.terminate();
    }
  }

  private consumed(n: number): void {
    this.queued -= n;
    if (this.paused && this.queued <= this.hwm) {
      this.paused = false;
      this.ws.resume();
    }
  }

  fetchEvidence(nonce: Uint8Array | undefined): Promise<EvidenceBundle> {
    return new Promise<EvidenceBundle>((resolve, reject) => {
      try {
        this.send(nonce === undefined ? { t: 'evidence-req' } : { t: 'evidence-req', nonce });
      } catch (err) {
        reject(err instanceof Error ? err : new CloisterError('CONNECTION_FAILED'));
        return;
      }
      this.evidenceWaiters.push({ resolve, reject });
    });
  }

  exchange(sealed: Uint8Array, signal?: AbortSignal): SealedExchange {
    const ex = this.cancellableExchange(sealed);
    // `res` frames carry arbitrary splits of the sealed byte stream (several chunks per frame).
    return { mode: ex.mode, pieces: signal === undefined ? ex.pieces : this.abortable(ex, signal) };
  }

  /**
   * Internal (CloisterClient): an exchange stopped by `cancel(reason)` rather than by an
   * AbortSignal. A client deadline without a caller's signal needs no AbortController (about
   * 5-9 us each in Node 20, a visible share of a small request's CPU): its timer calls
   * `cancel` directly. Cancelling tells the server (`cancel` frame) once the request was sent,
   * and makes the iterator throw `reason`; before the first `next()` nothing is sent at all.
   */
  cancellableExchange(sealed: Uint8Array): CancellableExchange {
    const sid = this.nextSid;
    this.nextSid = this.nextSid >= MAX_STREAM_ID ? 1 : this.nextSid + 1;
    const s = new Stream();
    const cancel = (reason: CloisterError): void => {
      if (this.streams.get(sid) === s) {
        this.streams.delete(sid);
        try {
          this.send({ t: 'cancel', sid });
        } catch {
          // connection already gone
        }
      }
      s.error ??= reason;
      s.notify();
    };
    return { mode: 'stream', pieces: this.pieces(sid, s, sealed), cancel };
  }

  /** `ex.pieces`, cancelled (CANCELLED) when `signal` aborts. */
  private async *abortable(ex: CancellableExchange, signal: AbortSignal): AsyncGenerator<Uint8Array> {
    if (signal.aborted) throw new CloisterError('CANCELLED');
    const onAbort = (): void => ex.cancel(new CloisterError('CANCELLED'));
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      yield* ex.pieces;
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  private async *pieces(sid: number, s: Stream, sealed: Uint8Array): AsyncGenerator<Uint8Array> {
    if (this.failure !== undefined) throw this.failure;
    // Cancelled before the first step: nothing was sent, nothing to tell the server.
    if (s.error !== undefined) throw s.error;
    this.streams.set(sid, s);
    try {
      this.send({ t: 'req', sid, body: sealed });
      for (;;) {
        const piece = s.pieces.shift();
        if (piece !== undefined) {
          this.consumed(piece.byteLength);
          yield piece;
          continue;
        }
        if (s.error !== undefined) throw s.error;
        if (s.ended) return;
        await new Promise<void>((resolve) => {
          s.wake = resolve;
        });
      }
    } finally {
      for (const p of s.pieces.splice(0)) this.consumed(p.byteLength);
      if (this.streams.get(sid) === s) {
        // The consumer stopped early (break / throw): tell the server to stop.
        this.streams.delete(sid);
        try {
          this.send({ t: 'cancel', sid });
        } catch {
          // connection already gone
        }
      }
    }
  }

  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      this.ws.once('close', () => resolve());
      this.ws.close(1000);
    });
  }
}
