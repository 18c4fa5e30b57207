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
import { concatBytes } from '../../core/bytes.js';
import { decodeWireMessage, encodeWireMessage, IDLE_CLOSE_REASON } from '../../protocol/wire.js';
import type { WireMessage } from '../../protocol/wire.js';
import type { ServerContext } from '../context.js';
import { handleSealedRequest } from '../handler.js';
import type { SlidingWindowLimiter } from '../rate-limit.js';
import { OP_NONE } from '../stats.js';
import { LOCAL_SOURCE } from '../sources.js';

/**
 * Pre-open failures of a sealed request that cost the server an X25519 (and AEAD) before
 * failing: they count as bad frames. A stale or unknown key id fails before any public-key
 * work and is what an honest client sees after a rotation, so it does not count.
 */
const COSTLY_REJECTIONS: ReadonlySet<ErrorCode> = new Set(['DECRYPT_FAILED', 'MALFORMED', 'LIMIT_EXCEEDED', 'PROTOCOL_VIOLATION']);

/** Largest sealed-stream piece in one `res` frame (see the flush in onRequest). */
const RESPONSE_FRAME_BODY_BYTES = 1024 * 1024;

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
        this.onEvidenceRequest(msg.nonce);
        return;
      case 'req':
        this.onRequest(msg.sid, msg.body);
        return;
      case 'cancel':
        this.streams.get(msg.sid)?.abort();
        return;
      default:
        // Server-to-client messages are not valid from a client.
        this.badFrame('PROTOCOL_VIOLATION', data instanceof Buffer ? data.byteLength : 0);
    }
  }

  private onEvidenceRequest(nonce: Uint8Array | undefined): void {
    const limiters = this.source === LOCAL_SOURCE ? [this.evidenceLimiter] : [this.evidenceLimiter, this.ctx.sources.entry(this.source).evidence];
    this.ctx.evidence.get(nonce, limiters).then(
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

  private onRequest(sid: number, body: Uint8Array): void {
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
    // Response bytes written in the same event-loop turn (the chunks an engine produced
    // together, the final chunk) leave in ONE `res` frame: the sealed stream is
    // self-delimiting, so the client's parser takes any split, and the frame that carries
    // the end of the final chunk has `fin` (no separate `end` frame). Nothing waits for more
    // data: the flush is a process.nextTick, which runs once the promise continuations of
    // the current turn are done but before any I/O or timer (setImmediate would wait for
    // the rest of the poll phase).
    // The first write (the response nonce, useless to the client on its own) is held until
    // the next one, so even an engine that answers in a later turn costs one frame. The
    // handler's `flush` sends the first chunk of a stream at once (time to first token).
    let pending: Uint8Array[] = [];
    let pendingBytes = 0;
    let scheduled = false;
    let writes = 0;
    const flush = (fin: boolean): void => {
      scheduled = false;
      const body = pending.length === 1 && pending[0] !== undefined ? pending[0] : concatBytes(...pending);
      const n = pendingBytes;
      pending = [];
      pendingBytes = 0;
      this.queuedBytes -= n;
      if (abort.signal.aborted) {
        // A cancelled stream's unsent bytes are dropped; release any writer waiting on them.
        if (n > 0 && this.queuedBytes <= this.ctx.limits.highWaterMarkBytes) this.drained();
        return;
      }
      if (n === 0 && !fin) return;
      // `res` frames carry arbitrary splits of the sealed stream: a big response chunk (up to
      // MAX_RESPONSE_CHUNK_LENGTH) leaves in frames of at most RESPONSE_FRAME_BODY_BYTES,
      // well under the client's message limit (4 MiB by default).
      for (let off = 0; ; off += RESPONSE_FRAME_BODY_BYTES) {
        const last = off + RESPONSE_FRAME_BODY_BYTES >= body.byteLength;
        const part = off === 0 && last ? body : body.subarray(off, Math.min(off + RESPONSE_FRAME_BODY_BYTES, body.byteLength));
        void this.send(fin && last ? { t: 'res', sid, body: part, fin: true } : { t: 'res', sid, body: part });
        if (last) break;
      }
    };
    const out = {
      write: (bytes: Uint8Array): Promise<void> | undefined => {
        if (abort.signal.aborted || this.closed) return undefined;
        pending.push(bytes);
        pendingBytes += bytes.byteLength;
        // Counted as queued from now on, so backpressure sees bytes not yet framed.
        this.enqueue(bytes.byteLength);
        writes++;
        if (writes > 1 && !scheduled) {
          scheduled = true;
          process.nextTick(flush, false);
        }
        return this.wait();
      },
      flush: () => {
        if (pendingBytes > 0) flush(false);
      },
      end: () => {
        if (abort.signal.aborted) return;
        flush(true);
      },
      fail: (code: ErrorCode) => {
        this.sendError(code, sid);
        // Junk sealed requests (each costs an X25519) count against maxBadFramesPerConnection.
        if (COSTLY_REJECTIONS.has(code)) {
          this.ctx.stats.framesRejected++;
          this.countBad();
        }
      },
    };
    handleSealedRequest(this.ctx.handlerDeps, body, out, { conn: this.conn, sid, signal: abort.signal })
      .catch(() => undefined)
      .finally(() => {
        // Bytes still held (a response nonce with nothing after it: cancelled, or the handler
        // stopped) leave or, when cancelled, are dropped: queuedBytes must not keep them.
        if (pendingBytes > 0) flush(false);
        stats.inFlight--;
        if (this.streams.get(sid) === abort) this.streams.delete(sid);
        if (this.ctx.state.draining && this.streams.size === 0) this.drain();
        else this.armIdle();
      });
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
