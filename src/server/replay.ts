/**
 * Replay window (DESIGN.md "Requests and responses"): a sealed request carries the client's
 * timestamp and a random 16-byte id. The server accepts a request only when its timestamp
 * is at most `windowMs` old and at most `futureSkewMs` ahead of the server's clock, and its
 * id was not seen before. An id need only be remembered until its timestamp leaves the
 * window (ts + windowMs): after that the timestamp check refuses a replay. So every id lives
 * at most windowMs + futureSkewMs, whatever timestamp a client picks.
 *
 * Ids are kept in buckets by expiry time (`bucketMs` wide): a check looks into the few live
 * buckets, and expired buckets are dropped whole, so no call sweeps the table. Memory is
 * bounded by `maxEntries`; when full, new requests are refused (OVERLOADED) rather than
 * evicting live ids, which would re-open the window to replays. The server records an id
 * only for a request it is about to serve (after routing), so requests for models or
 * operations that do not exist cannot fill the window. One network source may hold at most
 * `maxEntriesPerSource` of them (RATE_LIMITED beyond), so a single client sending one-shot
 * requests as fast as it can cannot fill the window and lock everyone else out; LOCAL_SOURCE
 * (a Unix socket, no address) is not limited per source (src/server/sources.ts).
 */
import { CloisterError } from '../errors.js';
import { LOCAL_SOURCE } from '../core/source-address.js';

interface ReplayWindowOptions {
  /** How old a timestamp may be, and how long after it ids are remembered. Default 60 s. */
  readonly windowMs?: number;
  /** How far ahead of the server's clock a timestamp may be. Default 30 s. */
  readonly futureSkewMs?: number;
  /** Most ids remembered at once. Default 100 000 (a few MB). */
  readonly maxEntries?: number;
  /** Most of them one network source holds. Default a quarter of maxEntries. */
  readonly maxEntriesPerSource?: number;
  /** Clock, for tests. */
  readonly now?: () => number;
}

const DEFAULT_REPLAY_WINDOW_MS = 60_000;
const DEFAULT_REPLAY_FUTURE_SKEW_MS = 30_000;
const DEFAULT_REPLAY_MAX_ENTRIES = 100_000;
/** Buckets per window: a forgotten id outlives its expiry by at most windowMs / BUCKETS_PER_WINDOW. */
const BUCKETS_PER_WINDOW = 8;

export class ReplayWindow {
  readonly windowMs: number;
  readonly futureSkewMs: number;
  readonly maxEntries: number;
  private readonly now: () => number;
  private readonly bucketMs: number;
  readonly maxEntriesPerSource: number;
  /** Bucket number (floor(expiry / bucketMs)) -> ids (hex) expiring in it, and how many each source put there. */
  private readonly buckets = new Map<number, { readonly ids: Set<string>; readonly sources: Map<string, number> }>();
  private entries = 0;
  /** Live ids per source (no entry: none); LOCAL_SOURCE is not counted. */
  private readonly perSource = new Map<string, number>();

  constructor(options: ReplayWindowOptions = {}) {
    this.windowMs = options.windowMs ?? DEFAULT_REPLAY_WINDOW_MS;
    this.futureSkewMs = options.futureSkewMs ?? DEFAULT_REPLAY_FUTURE_SKEW_MS;
    this.maxEntries = options.maxEntries ?? DEFAULT_REPLAY_MAX_ENTRIES;
    this.maxEntriesPerSource = options.maxEntriesPerSource ?? Math.max(1, Math.floor(this.maxEntries / 4));
    this.now = options.now ?? Date.now;
    if (!(this.windowMs > 0) || !(this.futureSkewMs >= 0) || !Number.isInteger(this.maxEntries) || this.maxEntries < 1
      || !Number.isInteger(this.maxEntriesPerSource) || this.maxEntriesPerSource < 1) {
      throw new CloisterError('CONFIG_INVALID', 'replay window options out of range');
    }
    this.bucketMs = Math.max(1, Math.ceil(this.windowMs / BUCKETS_PER_WINDOW));
  }

  get size(): number {
    return this.entries;
  }

  /** Refuses a timestamp outside the window (REPLAY) without recording anything. */
  checkTimestamp(ts: number): void {
    const now = this.now();
    if (!Number.isSafeInteger(ts)) throw new CloisterError('REPLAY', 'request timestamp is not an integer');
    if (ts < now - this.windowMs) {
      throw new CloisterError('REPLAY', `request timestamp is ${now - ts} ms old; the replay window accepts ${this.windowMs} ms`, {
        detail: { limit: 'replayWindowMs', value: this.windowMs },
      });
    }
    if (ts > now + this.futureSkewMs) {
      throw new CloisterError('REPLAY', `request timestamp is ${ts - now} ms ahead of the server clock; at most ${this.futureSkewMs} ms accepted`, {
        detail: { limit: 'replayFutureSkewMs', value: this.futureSkewMs },
      });
    }
  }

  /** Records `id` at client time `ts` (Unix ms) for network `source`, or throws REPLAY / OVERLOADED / RATE_LIMITED. */
  check(id: Uint8Array, ts: number, source: string = LOCAL_SOURCE): void {
    this.checkTimestamp(ts);
    if (id.byteLength !== 16) throw new CloisterError('MALFORMED', 'request id must be 16 bytes');
    const now = this.now();
    this.prune(now);
    const key = Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('hex');
    for (const b of this.buckets.values()) if (b.ids.has(key)) throw new CloisterError('REPLAY', 'request id already seen');
    const counted = source !== LOCAL_SOURCE;
    const held = counted ? (this.perSource.get(source) ?? 0) : 0;
    // The source's share first: one busy client is told to slow down, the others go on.
    if (counted && held >= this.maxEntriesPerSource) {
      throw new CloisterError('RATE_LIMITED', `this source has ${held} requests in the replay window (maxReplayEntriesPerSource ${this.maxEntriesPerSource})`, {
        detail: { limit: 'maxReplayEntriesPerSource', value: this.maxEntriesPerSource, public: true },
      });
    }
    if (this.entries >= this.maxEntries) {
      throw new CloisterError('OVERLOADED', `replay window is full (maxReplayEntries ${this.maxEntries})`, {
        detail: { limit: 'maxReplayEntries', value: this.maxEntries },
      });
    }
    const slot = Math.floor((ts + this.windowMs) / this.bucketMs);
    let b = this.buckets.get(slot);
    if (b === undefined) {
      b = { ids: new Set(), sources: new Map() };
      this.buckets.set(slot, b);
    }
    b.ids.add(key);
    this.entries++;
    if (counted) {
      b.sources.set(source, (b.sources.get(source) ?? 0) + 1);
      this.perSource.set(source, held + 1);
    }
  }

  /** Live ids `source` holds (0 for LOCAL_SOURCE, which is not counted). */
  heldBy(source: string): number {
    return this.perSource.get(source) ?? 0;
  }

  /** Drops every bucket whose ids all expired. At most (window + skew) / bucket + 1 buckets exist. */
  private prune(now: number): void {
    const live = Math.floor(now / this.bucketMs);
    for (const [slot, b] of this.buckets) {
      if (slot < live) {
        this.entries -= b.ids.size;
        for (const [source, n] of b.sources) {
          const left = (this.perSource.get(source) ?? 0) - n;
          if (left > 0) this.perSource.set(source, left);
          else this.perSource.delete(source);
        }
        this.buckets.delete(slot);
      }
    }
  }
}
