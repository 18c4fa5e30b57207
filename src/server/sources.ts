/**
 * Per-source accounting (ServerLimits.maxConnectionsPerSource, maxUploadsPerSource,
 * evidenceRequestsPerMinutePerSource): what one network source (one client address) holds
 * at once, so that a single unauthenticated client cannot take every connection, upload
 * slot or attestation the server has.
 *
 * A source is the peer's IP address as the socket reports it (IPv4-mapped IPv6 addresses
 * folded to IPv4). Behind a relay every connection has the relay's address, so on a Unix
 * socket, or on TCP from the relay, per-source limits only mean something when the relay
 * names the client (PROXY protocol; see docs/DEPLOY.md). Without an address (a Unix socket)
 * every connection is the one source LOCAL_SOURCE, which is not limited per source: the
 * whole-server limits still apply, and the relay enforces its own per-source cap.
 *
 * Memory: one small entry per source with something open or a recent evidence request;
 * entries are dropped when nothing is held and their evidence window is empty, and at most
 * `maxTrackedSources` exist (beyond that, new sources share one overflow entry, which fails
 * closed: they are limited together).
 */
import { SlidingWindowLimiter } from './rate-limit.js';
import { LOCAL_SOURCE, sourceOf } from '../core/source-address.js';

export { LOCAL_SOURCE, sourceOf };
/** How often a full table may be swept for sources that hold nothing. */
const SWEEP_INTERVAL_MS = 1000;

interface SourceEntry {
  connections: number;
  uploads: number;
  readonly evidence: SlidingWindowLimiter;
}

export class SourceTable {
  private readonly entries = new Map<string, SourceEntry>();
  /** What sources beyond maxTrackedSources share (limited together: fail closed). */
  private overflow: SourceEntry | undefined;
  private lastSweep = -Infinity;

  constructor(
    private readonly evidencePerMinute: number,
    private readonly maxTrackedSources: number,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** The entry for `source`, created on first use; the shared overflow entry when the table is full. */
  entry(source: string): SourceEntry {
    const e = this.entries.get(source);
    if (e !== undefined) return e;
    if (this.entries.size >= this.maxTrackedSources) {
      // A full table is swept at most once a second: a stream of new addresses must not cost
      // a walk over every tracked source each.
      const t = this.now();
      if (t - this.lastSweep >= SWEEP_INTERVAL_MS) {
        this.lastSweep = t;
        this.sweep();
      }
      if (this.entries.size >= this.maxTrackedSources) return (this.overflow ??= this.newEntry());
    }
    const created = this.newEntry();
    this.entries.set(source, created);
    return created;
  }

  private newEntry(): SourceEntry {
    return { connections: 0, uploads: 0, evidence: new SlidingWindowLimiter(this.evidencePerMinute, 60_000, this.now, 'per source') };
  }

  /** Forget `source` when it holds nothing (called as its connections and uploads end). */
  release(source: string): void {
    const e = this.entries.get(source);
    if (e !== undefined && e.connections <= 0 && e.uploads <= 0 && e.evidence.idle()) this.entries.delete(source);
  }

  private sweep(): void {
    for (const [k, e] of this.entries) if (e.connections <= 0 && e.uploads <= 0 && e.evidence.idle()) this.entries.delete(k);
  }
}
