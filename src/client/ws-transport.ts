/**
 * WebSocket client transport: one CBOR wire message per binary frame (src/protocol/wire.ts),
 * sealed requests multiplexed by stream id, cancel on abort, and flow control (the socket
 * stops being read while a slow consumer has more than `highWaterMarkBytes` queued).
 */
import { WebSocket } from 'ws';
import { CloisterError, isErrorCode } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import type { EvidenceBundle } from '../core/types.js';
import { decodeWireMessage, encodeWireMessage, IDLE_CLOSE_REASON, MAX_FRAME_BYTES_HEADER, MAX_IN_FLIGHT_HEADER, MAX_STREAM_ID } from '../protocol/wire.js';
import type { WireMessage } from '../protocol/wire.js';
import {
  DEFAULT_CLIENT_HIGH_WATER_MARK,
  DEFAULT_CLIENT_MAX_MESSAGE_BYTES,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_KEEPALIVE_INTERVAL_MS,
} from './transport.js';
import { connectionFailed, notCloister, targetOf } from './connection-error.js';
import type { ClientTransport, SealedExchange, TransportLimits } from './transport.js';
import { checkUnixSocketPath, wsUnixSocketPath } from '../core/unix-socket.js';

function serverError(code: ErrorCode): CloisterError {
  return new CloisterError(code, undefined, { detail: { origin: 'server' } });
}

/** A WebSocket exchange that the client's deadline stops directly (see cancellableExchange). */
interface CancellableExchange extends SealedExchange {
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
  private keepAlive: NodeJS.Timeout | undefined;
  /** Whether the peer showed life (a pong or any frame) since the last keepalive ping. */
  private alive = true;
  private readonly closeListeners: ((err: CloisterError) => void)[] = [];

  private constructor(
    private readonly ws: WebSocket,
    limits: TransportLimits,
    /** `host:port` of the server, for errors. */
    readonly target: string,
    /** The server's largest accepted message, from its upgrade answer (absent from older servers). */
    readonly serverMaxFrameBytes: number | undefined,
    /** The server's maxInFlightPerConnection, from its upgrade answer (absent from older servers). */
    readonly serverMaxInFlight: number | undefined = undefined,
  ) {
    this.hwm = limits.highWaterMarkBytes ?? DEFAULT_CLIENT_HIGH_WATER_MARK;
    ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    ws.on('pong', () => {
      this.alive = true;
    });
    ws.on('close', (code: number, reason: Buffer) => {
      const idle = code === 1000 && reason.toString('utf8') === IDLE_CLOSE_REASON;
      this.fail(this.closedError(code, idle), idle);
    });
    ws.on('error', (err) => this.fail(connectionFailed(target, 'connection to', err)));
    const interval = limits.keepAliveIntervalMs ?? DEFAULT_KEEPALIVE_INTERVAL_MS;
    if (interval > 0) {
      this.keepAlive = setInterval(() => this.ping(interval), interval);
      this.keepAlive.unref();
    }
  }

  /** Keepalive tick: a peer silent since the previous ping is dead (no pong); else ping again. */
  private ping(interval: number): void {
    if (this.failure !== undefined) return;
    // While we do not read (a slow consumer paused the socket), pongs cannot arrive: not a sign of death.
    if (!this.alive && !this.paused) {
      this.fail(new CloisterError('CONNECTION_FAILED', `connection to ${this.target} lost: no pong within ${interval} ms (keepAliveIntervalMs)`, { detail: { target: this.target } }));
      this.ws.terminate();
      return;
    }
    this.alive = false;
    try {
      this.ws.ping();
    } catch {
      // not open: the close handler reports it
    }
  }

  private closedError(code: number, idle = false): CloisterError {
    if (code === 1009) {
      return new CloisterError('LIMIT_EXCEEDED', `${this.target} closed the connection: a message exceeded its maxFrameBytes (WebSocket close 1009)`, {
        detail: { target: this.target, limit: 'maxFrameBytes' },
      });
    }
    const why = idle ? ' by the server for idleness' : '';
    return new CloisterError('CONNECTION_FAILED', `connection to ${this.target} closed${why} (WebSocket close ${code})`, { detail: { target: this.target, closeCode: code } });
  }

  static async connect(url: string, limits: TransportLimits = {}): Promise<WsClientTransport> {
    const target = targetOf(url);
    const socketPath = wsUnixSocketPath(url);
    if (socketPath !== undefined) checkUnixSocketPath(socketPath, 'INVALID_ARGUMENT');
    const interval = limits.keepAliveIntervalMs ?? DEFAULT_KEEPALIVE_INTERVAL_MS;
    if (!Number.isSafeInteger(interval) || interval < 0) throw new CloisterError('CONFIG_INVALID', 'keepAliveIntervalMs must be a non-negative integer');
    let ws: WebSocket;
    try {
      ws = new WebSocket(url, {
        maxPayload: limits.maxMessageBytes ?? DEFAULT_CLIENT_MAX_MESSAGE_BYTES,
        handshakeTimeout: limits.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
        perMessageDeflate: false,
        // A redirect from the network is not followed: the client talks to the URL it was given.
        followRedirects: false,
      });
    } catch (cause) {
      throw new CloisterError('INVALID_ARGUMENT', `not a usable WebSocket URL for ${target}`, { cause });
    }
    ws.binaryType = 'nodebuffer';
    let serverMax: number | undefined;
    let serverInFlight: number | undefined;
    const count = (v: unknown): number | undefined => (typeof v === 'string' && /^[1-9]\d{0,15}$/.test(v) ? Number(v) : undefined);
    ws.once('upgrade', (res) => {
      serverMax = count(res.headers[MAX_FRAME_BYTES_HEADER]);
      serverInFlight = count(res.headers[MAX_IN_FLIGHT_HEADER]);
    });
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        ws.off('open', onOpen);
        reject(connectionFailed(target, 'WebSocket connection to', err));
      };
      const onOpen = (): void => {
        ws.off('error', onError);
        resolve();
      };
      ws.once('open', onOpen);
      ws.once('error', onError);
      ws.once('unexpected-response', (_req, res) => {
        ws.off('open', onOpen);
        ws.off('error', onError);
        // terminate() reports "closed before the connection was established": already answered here.
        ws.on('error', () => undefined);
        const status = res.statusCode ?? 0;
        res.resume();
        ws.terminate();
        reject(
          status === 503
            ? new CloisterError('OVERLOADED', `${target} answered the WebSocket upgrade with HTTP 503 (overloaded)`, { detail: { target, status } })
            : notCloister(target, 'the WebSocket upgrade', status),
        );
      });
    });
    return new WsClientTransport(ws, limits, target, serverMax, serverInFlight);
  }

  /** The error that ended this connection, once it ended (the client then reconnects). */
  get closedWith(): CloisterError | undefined {
    return this.failure;
  }

  /** Calls `listener` once when the connection ends (at once when it already has). */
  onClose(listener: (err: CloisterError) => void): void {
    if (this.failure !== undefined) listener(this.failure);
    else this.closeListeners.push(listener);
  }

  private send(msg: WireMessage): void {
    if (this.failure !== undefined) throw this.failure;
    this.ws.send(encodeWireMessage(msg), { binary: true });
  }

  /**
   * Ends the connection with `err`. `idleClose`: the server closed for idleness (1000 'idle'),
   * after which it reads no frame, so a request without any answer yet was never run.
   */
  private fail(err: CloisterError, idleClose = false): void {
    if (this.failure !== undefined) return;
    this.failure = err;
    if (this.keepAlive !== undefined) clearInterval(this.keepAlive);
    for (const w of this.evidenceWaiters.splice(0)) w.reject(err);
    for (const s of this.streams.values()) {
      // A request written to the socket may have reached the server: it fails once, and is
      // never resent (the engine may have run it). A response that had started is truncated.
      // Only the server's idle close proves that an unanswered request was not run.
      s.error ??= s.started
        ? new CloisterError('STREAM_TRUNCATED', `${err.message}, mid-response; the request is not resent`, { cause: err, detail: { target: this.target } })
        : idleClose
          ? this.notSent(err)
          : new CloisterError(err.code, `${err.message}, while the request was in flight; it is not resent`, { cause: err, detail: { target: this.target, sent: true } });
      s.notify();
    }
    this.streams.clear();
    for (const l of this.closeListeners.splice(0)) l(err);
  }

  private onMessage(data: unknown, isBinary: boolean): void {
    this.alive = true;
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
      case 'err': {
        const code = isErrorCode(msg.code) ? msg.code : 'PROTOCOL_VIOLATION';
        if (msg.sid === undefined) {
          const w = this.evidenceWaiters.shift();
          if (w !== undefined) w.reject(serverError(code));
          return;
        }
        const s = this.streams.get(msg.sid);
        if (s === undefined) return;
        s.error = code === 'LIMIT_EXCEEDED' ? this.requestLimitError() : serverError(code);
        this.streams.delete(msg.sid);
        s.notify();
        return;
      }
      default:
        this.fail(new CloisterError('PROTOCOL_VIOLATION', 'unexpected message from server'));
        this.ws.terminate();
    }
  }

  /** A request refused with LIMIT_EXCEEDED (the plaintext error frame names no limit): which one, when we can tell. */
  private requestLimitError(): CloisterError {
    const inFlight = this.streams.size;
    const max = this.serverMaxInFlight;
    const message =
      max !== undefined && inFlight > max
        ? `${this.target} refused the request: ${inFlight} requests in flight on this connection exceed its maxInFlightPerConnection (${max})`
        : `${this.target} refused the request: a configured limit was hit (the sealed request over its maxRequestBytes, or ${max === undefined ? 'its maxInFlightPerConnection' : `its maxInFlightPerConnection (${max})`})`;
    return new CloisterError('LIMIT_EXCEEDED', message, { detail: { origin: 'server', target: this.target } });
  }

  private consumed(n: number): void {
    this.queued -= n;
    if (this.paused && this.queued <= this.hwm) {
      this.paused = false;
      // Pongs could not be read while paused: do not count that against the peer.
      this.alive = true;
      this.ws.resume();
    }
  }

  /** A request that provably never left this process (never written to the socket): safe to send again. */
  private notSent(err: CloisterError): CloisterError {
    return new CloisterError(err.code, `${err.message}; the request was not run by the server`, { cause: err, detail: { target: this.target, sent: false } });
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
    return { pieces: signal === undefined ? ex.pieces : this.abortable(ex, signal) };
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
    return { pieces: this.pieces(sid, s, sealed), cancel };
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
    if (this.failure !== undefined) throw this.notSent(this.failure);
    // Cancelled before the first step: nothing was sent, nothing to tell the server.
    if (s.error !== undefined) throw s.error;
    const frame = encodeWireMessage({ t: 'req', sid, body: sealed });
    if (this.serverMaxFrameBytes !== undefined && frame.byteLength > this.serverMaxFrameBytes) {
      // Sent, it would make the server close the whole connection (1009): refused here, by name.
      throw new CloisterError('LIMIT_EXCEEDED', `the sealed request (${frame.byteLength} bytes) exceeds the server's maxFrameBytes (${this.serverMaxFrameBytes} bytes)`, {
        detail: { limit: 'maxFrameBytes', max: this.serverMaxFrameBytes, target: this.target, sent: false },
      });
    }
    this.streams.set(sid, s);
    try {
      this.ws.send(frame, { binary: true });
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
    if (this.keepAlive !== undefined) clearInterval(this.keepAlive);
    if (this.ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      this.ws.once('close', () => resolve());
      this.ws.close(1000);
    });
  }
}
