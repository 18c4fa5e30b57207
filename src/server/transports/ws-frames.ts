/**
 * The response side of one WebSocket stream (PROTOCOL.md section 5): gathers the sealed
 * response bytes written in one event-loop turn into one `res` frame.
 *
 * Response bytes written in the same turn (the chunks an engine produced together, the final
 * chunk) leave in ONE `res` frame: the sealed stream is self-delimiting, so the client's
 * parser takes any split, and the frame that carries the end of the final chunk has `fin`
 * (no separate `end` frame). Nothing waits for more data: the flush is a process.nextTick,
 * which runs once the promise continuations of the current turn are done but before any I/O
 * or timer (setImmediate would wait for the rest of the poll phase).
 * The first write (the response nonce, useless to the client on its own) is held until the
 * next one, so even an engine that answers in a later turn costs one frame. The handler's
 * `flush` sends the first chunk of a stream at once (time to first token).
 */
import type { ErrorCode } from '../../errors.js';
import { concatBytes } from '../../core/bytes.js';
import type { WireMessage } from '../../protocol/wire.js';
import type { ResponseOut } from '../handler.js';

/** Largest sealed-stream piece in one `res` frame (see `ResponseFrames.flush`). */
export const RESPONSE_FRAME_BODY_BYTES = 1024 * 1024;

/** What a stream's frames need from their connection (WsSession). */
export interface FrameSink {
  /** Whether the connection is closed (writes are then dropped). */
  isClosed(): boolean;
  /** Counts bytes as queued to the peer (backpressure and the stall watch see them). */
  enqueue(n: number): void;
  /** Uncounts bytes that `enqueue` counted: framed now (send counts them again), or dropped. */
  unqueue(n: number, dropped: boolean): void;
  /** Sends one wire message. */
  send(msg: WireMessage): void;
  /** Nothing below the high-water mark, else a promise of the drain. */
  wait(): Promise<void> | undefined;
  /** A plaintext coded error for the stream (the request could not be opened). */
  fail(code: ErrorCode): void;
}

/** The ResponseOut of one stream (`sid`) of a WebSocket connection. */
export class ResponseFrames implements ResponseOut {
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #scheduled = false;
  #writes = 0;
  readonly #flushLater = (): void => this.#flush(false);

  constructor(
    private readonly sid: number,
    /** Aborted when the stream was cancelled: its unsent bytes are dropped. */
    private readonly signal: AbortSignal,
    private readonly sink: FrameSink,
  ) {}

  write(bytes: Uint8Array): Promise<void> | undefined {
    if (this.signal.aborted || this.sink.isClosed()) return undefined;
    this.#pending.push(bytes);
    this.#pendingBytes += bytes.byteLength;
    // Counted as queued from now on, so backpressure sees bytes not yet framed.
    this.sink.enqueue(bytes.byteLength);
    this.#writes++;
    if (this.#writes > 1 && !this.#scheduled) {
      this.#scheduled = true;
      process.nextTick(this.#flushLater);
    }
    return this.sink.wait();
  }

  flush(): void {
    if (this.#pendingBytes > 0) this.#flush(false);
  }

  end(): void {
    if (this.signal.aborted) return;
    this.#flush(true);
  }

  fail(code: ErrorCode): void {
    this.sink.fail(code);
  }

  /**
   * The handler is done: bytes still held (a response nonce with nothing after it: cancelled,
   * or the handler stopped) leave or, when cancelled, are dropped; the queue must not keep them.
   */
  release(): void {
    if (this.#pendingBytes > 0) this.#flush(false);
  }

  #flush(fin: boolean): void {
    this.#scheduled = false;
    const pending = this.#pending;
    const body = pending.length === 1 && pending[0] !== undefined ? pending[0] : concatBytes(...pending);
    const n = this.#pendingBytes;
    this.#pending = [];
    this.#pendingBytes = 0;
    const aborted = this.signal.aborted;
    this.sink.unqueue(n, aborted);
    // A cancelled stream's unsent bytes are dropped.
    if (aborted) return;
    if (n === 0 && !fin) return;
    // `res` frames carry arbitrary splits of the sealed stream: a big response chunk (up to
    // MAX_RESPONSE_CHUNK_LENGTH) leaves in frames of at most RESPONSE_FRAME_BODY_BYTES, well
    // under the client's message limit (4 MiB by default).
    const sid = this.sid;
    for (let off = 0; ; off += RESPONSE_FRAME_BODY_BYTES) {
      const last = off + RESPONSE_FRAME_BODY_BYTES >= body.byteLength;
      const part = off === 0 && last ? body : body.subarray(off, Math.min(off + RESPONSE_FRAME_BODY_BYTES, body.byteLength));
      this.sink.send(fin && last ? { t: 'res', sid, body: part, fin: true } : { t: 'res', sid, body: part });
      if (last) break;
    }
  }
}
