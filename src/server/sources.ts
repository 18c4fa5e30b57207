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
import { LOCAL_SOURCE, sourceOf } from '../util/source-address.js';

export { LOCAL_SOURCE, sourceOf };
const OVERFLOW_SOURCE = 'overflow';

export interface SourceEntry {
  connections: number;
  uploads: number;
  readonly evidence: SlidingWindowLimiter;
}

export class SourceTable {
  private readonly entries = new Map<string, SourceEntry>();

  constructor(
    private readonly evidencePerMinute: number,
    private readonly maxTrackedSources: number,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** The entry for `source`, created on first use. */
  entry(source: string): SourceEntry {
    let e = this.entries.get(source);
    if (e !== undefined) return e;
    if (this.entries.size >= this.maxTrackedSources) {
      this.sweep();
      if (this.entries.size >= this.maxTrackedSources) return this.entry(OVERFLOW_SOURCE === source ? source : OVERFLOW_SOURCE);
    }
    e = { connections: 0, uploads: 0, evidence: new SlidingWindowLimiter(this.evidencePerMinute, 60_000, this.now, 'per source') };
    this.entries.set(source, e);
    return e;
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
