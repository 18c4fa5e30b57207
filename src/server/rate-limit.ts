/**
 * A sliding-window counter: at most `limit` events in any `windowMs`. Memory is bounded by
 * `limit` timestamps.
 */
export class SlidingWindowLimiter {
  private readonly stamps: number[] = [];

  constructor(
    readonly limit: number,
    readonly windowMs: number = 60_000,
    private readonly now: () => number = Date.now,
    /** What the limit applies to, for errors ("per connection", "per source"). */
    readonly scope: string = '',
  ) {}

  /** True when no event is inside the window (the limiter holds nothing worth keeping). */
  idle(): boolean {
    const last = this.stamps[this.stamps.length - 1];
    return last === undefined || last <= this.now() - this.windowMs;
  }

  /** Records an event and returns true, or returns false when the limit is reached. */
  tryTake(): boolean {
    const now = this.now();
    while (this.stamps.length > 0 && (this.stamps[0] ?? 0) <= now - this.windowMs) this.stamps.shift();
    if (this.stamps.length >= this.limit) return false;
    this.stamps.push(now);
    return true;
  }
}
