import { describe, expect, it } from 'vitest';
import { ReplayWindow } from '../../src/server/replay.js';
import { SlidingWindowLimiter } from '../../src/server/rate-limit.js';
import { createLogger, newServerRequestId } from '../../src/server/log.js';
import type { LogFields, ServerRequestId } from '../../src/server/log.js';
import { codeOf as code } from '../helpers/errors.js';

const id = (n: number): Uint8Array => new Uint8Array(16).fill(n);

describe('ReplayWindow', () => {
  it('rejects a repeated id and timestamps outside the window', () => {
    let now = 1_000_000;
    const w = new ReplayWindow({ windowMs: 1000, futureSkewMs: 1000, now: () => now });
    w.check(id(1), now);
    expect(code(() => w.check(id(1), now))).toBe('REPLAY');
    expect(code(() => w.check(id(2), now - 1001))).toBe('REPLAY');
    expect(code(() => w.check(id(2), now + 1001))).toBe('REPLAY');
    w.check(id(2), now + 1000);
    // after the id's timestamp leaves the window it is forgotten (within one bucket, 1/8 of
    // the window), and the ts check rejects it
    now += 2001 + 125;
    expect(code(() => w.check(id(1), now - 2126))).toBe('REPLAY');
    w.check(id(3), now);
    expect(w.size).toBe(1);
  });

  it('the future skew is its own, smaller limit, named in the error', () => {
    const now = 1_000_000;
    const w = new ReplayWindow({ windowMs: 60_000, futureSkewMs: 5_000, now: () => now });
    w.check(id(1), now + 5_000);
    w.check(id(2), now - 60_000);
    let err: unknown;
    try {
      w.check(id(3), now + 5_001);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'REPLAY', detail: { limit: 'replayFutureSkewMs', value: 5_000 } });
    expect(String((err as Error).message)).toContain('5001 ms ahead');
  });

  it('an id lives at most window + future skew (+ one bucket), whatever timestamp the client picks', () => {
    let now = 10_000_000;
    const w = new ReplayWindow({ windowMs: 800, futureSkewMs: 400, now: () => now });
    for (let i = 0; i < 50; i++) w.check(id(i), now + 400); // dated as far ahead as allowed
    expect(w.size).toBe(50);
    now += 800 + 400 + 100; // one bucket is 100 ms
    w.check(id(200), now);
    expect(w.size).toBe(1);
  });

  it('expired ids leave in whole buckets: a full window empties without a sweep of live ids', () => {
    let now = 2_000_000;
    const w = new ReplayWindow({ windowMs: 1000, futureSkewMs: 0, maxEntries: 5000, now: () => now });
    for (let i = 0; i < 5000; i++) {
      const b = new Uint8Array(16);
      new DataView(b.buffer).setUint32(0, i);
      w.check(b, now - (i % 1000));
    }
    expect(code(() => w.check(id(255), now))).toBe('OVERLOADED');
    now += 1125;
    w.check(id(255), now);
    expect(w.size).toBe(1);
  });

  it('hits maxEntries: refuses (OVERLOADED, naming the limit) rather than evicting live ids', () => {
    let now = 5_000;
    const w = new ReplayWindow({ windowMs: 1000, maxEntries: 3, now: () => now });
    for (let i = 0; i < 3; i++) w.check(id(i), now);
    let err: unknown;
    try {
      w.check(id(9), now);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'OVERLOADED', detail: { limit: 'maxReplayEntries', value: 3 } });
    expect(code(() => w.check(id(0), now))).toBe('REPLAY');
    now += 1001 + 125;
    w.check(id(9), now);
    expect(w.size).toBe(1);
  });

  it('maxEntriesPerSource: one source at its share is RATE_LIMITED while others go on; shares free up as ids expire; LOCAL_SOURCE is not limited', () => {
    let now = 5_000;
    const w = new ReplayWindow({ windowMs: 1000, futureSkewMs: 0, maxEntries: 10, maxEntriesPerSource: 3, now: () => now });
    for (let i = 0; i < 3; i++) w.check(id(i), now, '192.0.2.7');
    let err: unknown;
    try {
      w.check(id(3), now, '192.0.2.7');
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'RATE_LIMITED', detail: { limit: 'maxReplayEntriesPerSource', value: 3 } });
    expect(w.heldBy('192.0.2.7')).toBe(3);
    // Another source still has room, and so does the Unix-socket (local) source.
    for (let i = 10; i < 13; i++) w.check(id(i), now, '192.0.2.8');
    for (let i = 20; i < 24; i++) w.check(id(i), now);
    expect(w.heldBy('local')).toBe(0);
    expect(w.size).toBe(10);
    // The window itself is full now: OVERLOADED for a source with room left.
    expect(code(() => w.check(id(30), now, '192.0.2.9'))).toBe('OVERLOADED');
    // A refused id was not recorded: after expiry the source's share is free again.
    now += 1000 + 125 + 1;
    w.check(id(3), now, '192.0.2.7');
    expect(w.heldBy('192.0.2.7')).toBe(1);
    expect(w.heldBy('192.0.2.8')).toBe(0);
    expect(w.size).toBe(1);
  });

  it('rejects a bad id length', () => {
    const w = new ReplayWindow();
    expect(code(() => w.check(new Uint8Array(15), Date.now()))).toBe('MALFORMED');
  });
});

describe('SlidingWindowLimiter', () => {
  it('allows limit events per window', () => {
    let now = 0;
    const l = new SlidingWindowLimiter(2, 100, () => now);
    expect([l.tryTake(), l.tryTake(), l.tryTake()]).toEqual([true, true, false]);
    now = 100;
    expect(l.tryTake()).toBe(true);
  });
});

describe('logger', () => {
  it('writes typed fields as JSON lines and drops anything else', () => {
    const lines: string[] = [];
    const log = createLogger({ sink: (l) => lines.push(l) });
    const rid = newServerRequestId();
    log.log('info', 'request.done', { requestId: rid, conn: 3, bytesIn: 10, code: 'REPLAY' });
    // Sizes are written bucketed (logSizeBucket): 10 -> 256.
    // bypass the types the way plain JS could
    const sneaky = { requestId: 'canary-secret-text' as ServerRequestId, code: 'secret', conn: 'x', content: 'hello' } as unknown as LogFields;
    log.log('info', 'request.done', sneaky);
    log.log('info', 'not-an-event' as 'request.done', {});
    expect(lines).toHaveLength(2);
    const first = JSON.parse(lines[0] ?? '') as Record<string, unknown>;
    expect(first).toMatchObject({ level: 'info', event: 'request.done', requestId: rid, conn: 3, bytesIn: 256, code: 'REPLAY' });
    expect(lines[1]).not.toContain('canary');
    expect(lines[1]).not.toContain('secret');
    expect(lines[1]).not.toContain('hello');
    expect(JSON.parse(lines[1] ?? '')).toMatchObject({ dropped: 4 });
  });
});
