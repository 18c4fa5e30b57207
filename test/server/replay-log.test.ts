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
    const w = new ReplayWindow({ windowMs: 1000, now: () => now });
    w.check(id(1), now);
    expect(code(() => w.check(id(1), now))).toBe('REPLAY');
    expect(code(() => w.check(id(2), now - 1001))).toBe('REPLAY');
    expect(code(() => w.check(id(2), now + 1001))).toBe('REPLAY');
    w.check(id(2), now + 1000);
    // after the id's timestamp leaves the window it is forgotten, and the ts check rejects it
    now += 2001;
    expect(code(() => w.check(id(1), now - 2001))).toBe('REPLAY');
    w.check(id(3), now);
    expect(w.size).toBe(1);
  });

  it('hits maxEntries: refuses (OVERLOADED) rather than evicting live ids', () => {
    let now = 5_000;
    const w = new ReplayWindow({ windowMs: 1000, maxEntries: 3, now: () => now });
    for (let i = 0; i < 3; i++) w.check(id(i), now);
    expect(code(() => w.check(id(9), now))).toBe('OVERLOADED');
    expect(code(() => w.check(id(0), now))).toBe('REPLAY');
    now += 1001;
    w.check(id(9), now);
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
    // bypass the types the way plain JS could
    const sneaky = { requestId: 'canary-secret-text' as ServerRequestId, code: 'secret', conn: 'x', content: 'hello' } as unknown as LogFields;
    log.log('info', 'request.done', sneaky);
    log.log('info', 'not-an-event' as 'request.done', {});
    expect(lines).toHaveLength(2);
    const first = JSON.parse(lines[0] ?? '') as Record<string, unknown>;
    expect(first).toMatchObject({ level: 'info', event: 'request.done', requestId: rid, conn: 3, bytesIn: 10, code: 'REPLAY' });
    expect(lines[1]).not.toContain('canary');
    expect(lines[1]).not.toContain('secret');
    expect(lines[1]).not.toContain('hello');
    expect(JSON.parse(lines[1] ?? '')).toMatchObject({ dropped: 4 });
  });
});
