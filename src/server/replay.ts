/**
 * Replay window (DESIGN.md "Requests and responses"): a sealed request carries the client's
 * timestamp and a random 16-byte id. The server accepts a request only when the timestamp is
 * within +-windowMs of its clock and the id was not seen within the window. An id need only be
 * remembered until its timestamp leaves the window (after that the timestamp check rejects a
 * replay), so memory is bounded by `maxEntries`; when full, new requests are refused
 * (OVERLOADED) rather than evicting live ids, which would re-open the window to replays.
 */
import { CloisterError } from '../errors.js';

export interface ReplayWindowOptions {
  /** Accepted clock skew either side, and how long ids are remembered. Default 60 s. */
  readonly windowMs?: number;
  /** Most ids remembered at once. Default 100 000 (about 5 MB). */
  readonly maxEntries?: number;
  /** Clock, for tests. */
  readonly now?: () => number;
}

export const DEFAULT_REPLAY_WINDOW_MS = 60_000;
export const DEFAULT_REPLAY_MAX_ENTRIES = 100_000;

export class ReplayWindow {
  readonly windowMs: number;
  readonly maxEntries: number;
  private readonly now: () => number;
  /** id (hex) -> time after which it may be forgotten. Insertion order ~ expiry order. */
  private readonly seen = new Map<string, number>();

  constructor(options: ReplayWindowOptions = {}) {
    this.windowMs = options.windowMs ?? DEFAULT_REPLAY_WINDOW_MS;
    this.maxEntries = options.maxEntries ?? DEFAULT_REPLAY_MAX_ENTRIES;
    this.now = options.now ?? Date.now;
    if (!(this.windowMs > 0) || !Number.isInteger(this.maxEntries) || this.maxEntries < 1) {
      throw new CloisterError('CONFIG_INVALID', 'replay window options out of range');
    }
  }

  get size(): number {
    return this.seen.size;
  }

  /** Records `id` at client time `ts` (Unix ms), or throws REPLAY / OVERLOADED. */
  check(id: Uint8Array, ts: number): void {
    const now = this.now();
    if (!Number.isSafeInteger(ts) || Math.abs(now - ts) > this.windowMs) {
      throw new CloisterError('REPLAY', 'request timestamp outside the replay window');
    }
    if (id.byteLength !== 16) throw new CloisterError('MALFORMED', 'request id must be 16 bytes');
    this.prune(now);
    const key = Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('hex');
    if (this.seen.has(key)) throw new CloisterError('REPLAY', 'request id already seen');
    if (this.seen.size >= this.maxEntries) {
      throw new CloisterError('OVERLOADED', 'replay window is full', { detail: { maxEntries: this.maxEntries } });
    }
    this.seen.set(key, ts + this.windowMs);
  }

  private prune(now: number): void {
    // Entries are mostly in expiry order; stop at the first live one (bounded work per call),
    // and do a full sweep only when the map is full.
    for (const [k, exp] of this.seen) {
      if (exp >= now) break;
      this.seen.delete(k);
    }
    if (this.seen.size >= this.maxEntries) {
      for (const [k, exp] of this.seen) if (exp < now) this.seen.delete(k);
    }
  }
}
