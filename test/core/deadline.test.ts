import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { startDeadline } from '../../src/core/deadline.js';

describe('startDeadline', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('aborts at the deadline with a TimeoutError reason and reports timedOut', () => {
    const d = startDeadline(1000);
    vi.advanceTimersByTime(999);
    expect(d.signal.aborted).toBe(false);
    expect(d.timedOut).toBe(false);
    vi.advanceTimersByTime(1);
    expect(d.signal.aborted).toBe(true);
    expect(d.timedOut).toBe(true);
    expect((d.signal.reason as DOMException).name).toBe('TimeoutError');
  });

  it('follows the parent with the parent reason, and is not a timeout', () => {
    const parent = new AbortController();
    const d = startDeadline(1000, parent.signal);
    const reason = new Error('cancelled by caller');
    parent.abort(reason);
    expect(d.signal.aborted).toBe(true);
    expect(d.signal.reason).toBe(reason);
    vi.advanceTimersByTime(5000);
    expect(d.timedOut).toBe(false);
  });

  it('is aborted at once when the parent already is', () => {
    const parent = new AbortController();
    parent.abort('gone');
    const d = startDeadline(1000, parent.signal);
    expect(d.signal.aborted).toBe(true);
    expect(d.signal.reason).toBe('gone');
    vi.advanceTimersByTime(5000);
    expect(d.timedOut).toBe(false);
  });

  it('dispose stops the timer and detaches from the parent', () => {
    const parent = new AbortController();
    const d = startDeadline(1000, parent.signal);
    d.dispose();
    vi.advanceTimersByTime(5000);
    parent.abort();
    expect(d.signal.aborted).toBe(false);
    expect(d.timedOut).toBe(false);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('detaches from the parent when the deadline fires', () => {
    const parent = new AbortController();
    const remove = vi.spyOn(parent.signal, 'removeEventListener');
    const d = startDeadline(10, parent.signal);
    vi.advanceTimersByTime(10);
    expect(d.timedOut).toBe(true);
    expect(remove).toHaveBeenCalledWith('abort', expect.any(Function));
  });

  it('rejects a deadline that is not a positive finite number', () => {
    for (const bad of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) expect(() => startDeadline(bad)).toThrow(RangeError);
  });
});
