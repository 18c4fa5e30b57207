/**
 * The WebSocket response frame coalescer (src/server/transports/ws-frames.ts) without a
 * socket: writes of one event-loop turn leave in one `res` frame, the response nonce waits for
 * the next write, the final frame has `fin`, big bodies are cut, cancelled bytes are dropped.
 */
import { describe, expect, it } from 'vitest';
import type { ErrorCode } from '../../src/errors.js';
import type { WireMessage } from '../../src/protocol/wire.js';
import { RESPONSE_FRAME_BODY_BYTES, ResponseFrames } from '../../src/server/transports/ws-frames.js';
import type { FrameSink } from '../../src/server/transports/ws-frames.js';

class Sink implements FrameSink {
  queued = 0;
  dropped = 0;
  sent: WireMessage[] = [];
  failed: ErrorCode[] = [];
  closed = false;
  isClosed(): boolean {
    return this.closed;
  }
  enqueue(n: number): void {
    this.queued += n;
  }
  unqueue(n: number, dropped: boolean): void {
    this.queued -= n;
    if (dropped) this.dropped += n;
  }
  send(msg: WireMessage): void {
    this.sent.push(msg);
  }
  wait(): undefined {
    return undefined;
  }
  fail(code: ErrorCode): void {
    this.failed.push(code);
  }
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const b = (n: number, v = 1): Uint8Array => new Uint8Array(n).fill(v);

describe('ResponseFrames', () => {
  it('holds the nonce, then sends every write of one turn in one frame; end sends fin', async () => {
    const sink = new Sink();
    const out = new ResponseFrames(7, new AbortController().signal, sink);
    out.write(b(32));
    await tick();
    expect(sink.sent).toEqual([]);
    expect(sink.queued).toBe(32);
    out.write(b(10, 2));
    out.write(b(5, 3));
    await tick();
    expect(sink.sent).toHaveLength(1);
    const first = sink.sent[0];
    expect(first).toMatchObject({ t: 'res', sid: 7 });
    expect(first !== undefined && first.t === 'res' ? first.body.byteLength : 0).toBe(47);
    expect(first !== undefined && first.t === 'res' ? first.fin : 'x').toBeUndefined();
    out.write(b(3));
    out.end();
    expect(sink.sent[1]).toMatchObject({ t: 'res', sid: 7, fin: true });
    expect(sink.queued).toBe(0);
  });

  it('flush sends what is pending at once (time to first token)', () => {
    const sink = new Sink();
    const out = new ResponseFrames(1, new AbortController().signal, sink);
    out.write(b(32));
    out.write(b(8));
    out.flush();
    expect(sink.sent).toHaveLength(1);
    out.flush();
    expect(sink.sent).toHaveLength(1);
  });

  it('a body over RESPONSE_FRAME_BODY_BYTES leaves in several frames, fin on the last only', () => {
    const sink = new Sink();
    const out = new ResponseFrames(2, new AbortController().signal, sink);
    out.write(b(RESPONSE_FRAME_BODY_BYTES * 2 + 1));
    out.end();
    expect(sink.sent.map((m) => (m.t === 'res' ? [m.body.byteLength, m.fin === true] : []))).toEqual([
      [RESPONSE_FRAME_BODY_BYTES, false],
      [RESPONSE_FRAME_BODY_BYTES, false],
      [1, true],
    ]);
  });

  it('a cancelled stream drops its held bytes (uncounted as dropped) and sends nothing more', () => {
    const sink = new Sink();
    const abort = new AbortController();
    const out = new ResponseFrames(3, abort.signal, sink);
    out.write(b(32));
    abort.abort();
    out.release();
    expect(sink.sent).toEqual([]);
    expect(sink.queued).toBe(0);
    expect(sink.dropped).toBe(32);
    expect(out.write(b(4))).toBeUndefined();
    out.end();
    expect(sink.sent).toEqual([]);
    expect(sink.queued).toBe(0);
  });

  it('release sends a held nonce of a finished stream; fail goes to the sink', () => {
    const sink = new Sink();
    const out = new ResponseFrames(4, new AbortController().signal, sink);
    out.write(b(32));
    out.release();
    expect(sink.sent).toHaveLength(1);
    out.fail('DECRYPT_FAILED');
    expect(sink.failed).toEqual(['DECRYPT_FAILED']);
  });
});
