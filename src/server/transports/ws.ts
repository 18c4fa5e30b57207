/**
 * WebSocket transport (PROTOCOL.md section 5): one CBOR wire message per binary frame, many
 * sealed requests multiplexed by client-chosen stream id, cancel, and backpressure.
 *
 * Backpressure: every frame sent is counted until `ws` reports it written to the socket.
 * While more than `highWaterMarkBytes` are queued, request handlers stop pulling their
 * engine's output (their `write` waits) and the connection stops reading new frames
 * (`ws.pause()`), so a client that does not read cannot make the server buffer without bound.
 *
 * Stall: a peer that stops reading altogether would leave those writers waiting, and its
 * requests holding in-flight slots. When bytes are queued and none were written for
 * `sendStallTimeoutMs`, the connection is closed (1008, reason TIMEOUT) and its socket
 * destroyed at once: the close frame cannot get past the unread bytes anyway.
 */
import type { WebSocket } from 'ws';
import { asCloisterError, wireCodeOf } from '../../errors.js';
import type { ErrorCode } from '../../errors.js';
import { decodeWireMessage, encodeWireMessage, IDLE_CLOSE_REASON } from '../../protocol/wire.js';
import type { WireMessage } from '../../protocol/wire.js';
import type { ServerContext } from '../context.js';
import { handleSealedRequest, handleSessionOpen, handleSessionRequest } from '../handler.js';
import type { RequestHandler } from '../handler.js';
import type { SlidingWindowLimiter } from '../rate-limit.js';
import { OP_NONE } from '../stats.js';
import { LOCAL_SOURCE } from '../sources.js';
import { ResponseFrames } from './ws-frames.js';
import type { FrameSink } from './ws-frames.js';

/**
 * Pre-open failures of a sealed request that cost the server an X25519 (and AEAD) before
 * failing: they count as bad frames. A stale or unknown key id fails before any public-key
 * work and is what an honest client sees after a rotation, so it does not count.
 */
const COSTLY_REJECTIONS: ReadonlySet<ErrorCode> = new Set(['DECRYPT_FAILED', 'MALFORMED', 'LIMIT_EXCEEDED', 'PROTOCOL_VIOLATION']);

export { RESPONSE_FRAME_BODY_BYTES } from './ws-frames.js';

export class WsSession {
  private readonly streams = new Map<number, AbortController>();
  private queuedBytes = 0;
  private drainWaiters: (() => void)[] = [];
  private closed = false;
  /** Set once this side started closing (bad-frame limit): later frames are ignored. */
  private closing = false;
  private badFrames = 0;
  private paused = false;
  private idleTimer: NodeJS.Timeout | undefined;
  private stallTimer: NodeJS.Timeout | undefined;
  /** performance.now() when the queue last became non-empty or the socket last took bytes. */
  private lastProgress = 0;
  private readonly evidenceLimiter: SlidingWindowLimiter;

  constructor(
    private readonly ctx: ServerContext,
    private readonly ws: WebSocket,
    readonly conn: number,
    /** The peer's source address (src/server/sources.ts), for the per-source evidence budget. */
    private readonly source: string = LOCAL_SOURCE,
  ) {
    this.evidenceLimiter = ctx.evidence.connectionLimiter();
    ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    ws.on('close', (closeCode) => this.onClose(closeCode));
    // A client's keepalive ping (ws answers it with a pong) is activity: a connection that
    // pings outlives idleTimeoutMs, one that says nothing at all does not.
    ws.on('ping', () => {
      if (!this.closing) this.armIdle();
    });
    ws.on('error', () => {
      // ws emits 'close' after 'error' (e.g. 1009 for a frame over maxPayload); count it here.
      ctx.stats.framesRejected++;
    });
    this.armIdle();
  }

  private armIdle(): void {
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      if (this.streams.size > 0) {
        this.armIdle();
        return;
      }
      this.ctx.logger.log('info', 'conn.idle-timeout', { conn: this.conn });
      // From here no frame is read: a request that crossed the close on the wire is never
      // run, so the client may send it again over a new connection (close 1000, reason 'idle').
      this.closing = true;
      this.ws.close(1000, IDLE_CLOSE_REASON);
    }, this.ctx.limits.idleTimeoutMs);
    this.idleTimer.unref();
  }

  /** Counts bytes as queued to the peer and watches that they leave (sendStallTimeoutMs). */
  private enqueue(n: number): void {
    if (this.queuedBytes <= 0) this.lastProgress = performance.now();
    this.queuedBytes += n;
    if (this.stallTimer === undefined && !this.closed) this.armStall(this.ctx.limits.sendStallTimeoutMs);
  }

  /** One timer per connection, re-armed lazily: no timer work per frame. */
  private armStall(delayMs: number): void {
    this.stallTimer = setTimeout(() => {
      this.stallTimer = undefined;
      if (this.closed || this.queuedBytes <= 0) return;
      const limit = this.ctx.limits.sendStallTimeoutMs;
      const idle = performance.now() - this.lastProgress;
      if (idle < limit) {
        this.armStall(limit - idle);
        return;
      }
      this.closing = true;
      this.ctx.stats.count('TIMEOUT');
      this.ctx.logger.log('warn', 'conn.stalled', { conn: this.conn, code: 'TIMEOUT', bytesOut: this.queuedBytes, inFlight: this.streams.size });
      this.ws.close(1008, 'TIMEOUT');
      this.ws.terminate();
      // Abort its requests now, not when ws reports the close: their slots are free at once.
      this.onClose(1008);
    }, delayMs);
    this.stallTimer.unref();
  }

  private send(msg: WireMessage): Promise<void> {
    if (this.closed) return Promise.resolve();
    const frame = encodeWireMessage(msg);
    this.enqueue(frame.byteLength);
    this.ws.send(frame, { binary: true }, () => {
      this.queuedBytes -= frame.byteLength;
      this.lastProgress = performance.now();
      if (this.queuedBytes <= this.ctx.limits.highWaterMarkBytes) this.drained();
    });
    return this.pressure();
  }

  /** Resolves at once below the high-water mark, else once the socket drained (backpressure). */
  private pressure(): Promise<void> {
    return this.wait() ?? Promise.resolve();
  }

  /** Nothing below the high-water mark (the writer goes on), else a promise of the drain. */
  private wait(): Promise<void> | undefined {
    if (this.queuedBytes <= this.ctx.limits.highWaterMarkBytes) return undefined;
    this.ctx.stats.backpressureWaits++;
    if (!this.paused) {
      this.paused = true;
      this.ws.pause();
      this.ctx.logger.log('debug', 'conn.backpressure', { conn: this.conn, bytesOut: this.queuedBytes });
    }
    return new Promise<void>((resolve) => this.drainWaiters.push(resolve));
  }

  private drained(): void {
    if (this.paused && !this.closed) {
      this.paused = false;
      this.ws.resume();
    }
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }

  private sendError(code: ErrorCode, sid?: number): void {
    void this.send(sid === undefined ? { t: 'err', code: wireCodeOf(code) } : { t: 'err', sid, code: wireCodeOf(code) });
  }

  /**
   * A frame that is not a valid client message: a coded error, and past
   * `maxBadFramesPerConnection` of them the connection is closed with 1008 (policy
   * violation, RFC 6455 section 7.4.1), so a peer cannot keep the server decoding garbage.
   */
  private badFrame(code: ErrorCode, bytesIn: number): void {
    const { stats, logger } = this.ctx;
    stats.framesRejected++;
    stats.count(code);
    logger.log('info', 'frame.rejected', { conn: this.conn, code, bytesIn });
    if (this.countBad()) this.sendError(code);
  }

  /** Counts one bad frame; past the limit, closes the connection and returns false. */
  private countBad(): boolean {
    const { stats, logger, limits } = this.ctx;
    this.badFrames++;
    if (this.badFrames <= limits.maxBadFramesPerConnection) return true;
    this.closing = true;
    stats.count('LIMIT_EXCEEDED');
    logger.log('warn', 'conn.rejected', { conn: this.conn, code: 'LIMIT_EXCEEDED' });
    this.sendError('LIMIT_EXCEEDED');
    this.ws.close(1008, 'LIMIT_EXCEEDED');
    return false;
  }

  private onMessage(data: unknown, isBinary: boolean): void {
    if (this.closing) return;
    this.armIdle();
    let msg: WireMessage;
    try {
      if (!isBinary || !(data instanceof Buffer)) throw asCloisterError(new Error('text frame'), 'MALFORMED');
      msg = decodeWireMessage(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    } catch (err) {
      this.badFrame(asCloisterError(err, 'MALFORMED').code, data instanceof Buffer ? data.byteLength : 0);
      return;
    }
    switch (msg.t) {
      case 'evidence-req':
        this.onEvidenceRequest(msg.nonce, msg.v);
        return;
      case 'req':
        this.onRequest(msg.sid, msg.body, handleSealedRequest);
        return;
      case 'sopen':
        this.onRequest(msg.sid, msg.body, handleSessionOpen);
        return;
      case 'sreq':
        this.onRequest(msg.sid, msg.body, handleSessionRequest);
        return;
      case 'cancel':
        this.streams.get(msg.sid)?.abort();
        return;
      default:
        // Server-to-client messages are not valid from a client.
        this.badFrame('PROTOCOL_VIOLATION', data instanceof Buffer ? data.byteLength : 0);
    }
  }

  private onEvidenceRequest(nonce: Uint8Array | undefined, version: number | undefined): void {
    const limiters = this.source === LOCAL_SOURCE ? [this.evidenceLimiter] : [this.evidenceLimiter, this.ctx.sources.entry(this.source).evidence];
    this.ctx.evidence.get(nonce, limiters, version).then(
      (bundle) => {
        this.ctx.stats.evidenceServed++;
        this.ctx.logger.log('debug', 'evidence.served', { conn: this.conn, bytesOut: bundle.evidence.byteLength });
        void this.send({ t: 'evidence', bundle });
      },
      (err: unknown) => {
        const code = asCloisterError(err, 'ATTESTER_FAILED').code;
        this.ctx.stats.count(code);
        this.ctx.logger.log('warn', 'evidence.rejected', { conn: this.conn, code });
        this.sendError(code);
      },
    );
  }

  private onRequest(sid: number, body: Uint8Array, handle: RequestHandler): void {
    const { stats, limits } = this.ctx;
    let refuse: ErrorCode | undefined;
    if (this.streams.has(sid)) refuse = 'PROTOCOL_VIOLATION';
    else if (this.streams.size >= limits.maxInFlightPerConnection) refuse = 'LIMIT_EXCEEDED';
    else if (stats.inFlight >= limits.maxInFlightTotal || this.ctx.state.draining) refuse = 'OVERLOADED';
    if (refuse !== undefined) {
      stats.sealedRequestsReceived++;
      stats.count(refuse);
      stats.recordRequest(OP_NONE, refuse);
      this.ctx.logger.log('info', 'request.rejected', { conn: this.conn, sid, code: refuse, inFlight: stats.inFlight });
      this.sendError(refuse, sid);
      return;
    }
    const abort = new AbortController();
    this.streams.set(sid, abort);
    stats.inFlight++;
    const out = new ResponseFrames(sid, abort.signal, this.frameSink(sid));
    handle(this.ctx.handlerDeps, body, out, { conn: this.conn, sid, source: this.source, signal: abort.signal })
      .catch(() => undefined)
      .finally(() => {
        out.release();
        stats.inFlight--;
        if (this.streams.get(sid) === abort) this.streams.delete(sid);
        if (this.ctx.state.draining && this.streams.size === 0) this.drain();
        else this.armIdle();
      });
  }

  /** What stream `sid`'s frames need from this connection (queue accounting, send, errors). */
  private frameSink(sid: number): FrameSink {
    return {
      isClosed: () => this.closed,
      enqueue: (n) => this.enqueue(n),
      unqueue: (n, dropped) => {
        this.queuedBytes -= n;
        // Dropped bytes (a cancelled stream) will never drain: release any writer waiting on them.
        if (dropped && n > 0 && this.queuedBytes <= this.ctx.limits.highWaterMarkBytes) this.drained();
      },
      send: (msg) => void this.send(msg),
      wait: () => this.wait(),
      fail: (code) => {
        this.sendError(code, sid);
        // Junk sealed requests (each costs an X25519) count against maxBadFramesPerConnection.
        if (COSTLY_REJECTIONS.has(code)) {
          this.ctx.stats.framesRejected++;
          this.countBad();
        }
      },
    };
  }

  /**
   * The server is shutting down: once no request of this connection is in flight, close it
   * with 1001 (going away, RFC 6455 section 7.4.1) so the client reconnects elsewhere. New
   * requests meanwhile are refused OVERLOADED (onRequest).
   */
  drain(): void {
    if (this.closed || this.closing || this.streams.size > 0) return;
    this.closing = true;
    this.ws.close(1001, 'shutting down');
  }

  /** Whether the connection is closed (the server forgets it then). */
  get isClosed(): boolean {
    return this.closed;
  }

  private onClose(closeCode: number): void {
    if (this.closed) return;
    this.closed = true;
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    if (this.stallTimer !== undefined) clearTimeout(this.stallTimer);
    for (const abort of this.streams.values()) abort.abort();
    this.drained();
    // connectionsOpen is kept by the server per socket (HTTP and WebSocket alike).
    this.ctx.logger.log('info', 'conn.close', { conn: this.conn, closeCode });
  }
}
