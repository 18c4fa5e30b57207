/** Counters a running server exposes (tests, health endpoints). Numbers only, never content. */
import type { ErrorCode } from '../errors.js';

/**
 * Upper bounds (seconds) of the request latency histogram buckets (`GET /metrics`,
 * cloister_request_duration_seconds): 1 ms to 2 min, covering a one-shot classification and
 * a long generation alike.
 */
export const LATENCY_BUCKETS_SECONDS: readonly number[] = Object.freeze([
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
]);

/** The `op` label of a request that was never opened or decoded (its operation is unknown). */
export const OP_NONE = 'none';
/** The `code` label of a request that completed. */
export const CODE_OK = 'ok';

interface LatencyHistogram {
  /** Cumulative counts per LATENCY_BUCKETS_SECONDS bound (the +Inf bucket is `count`). */
  readonly buckets: number[];
  sum: number;
  count: number;
}

export class ServerStats {
  /** Admitted client connections now open, HTTP and WebSocket alike (see ServerLimits.maxConnections). */
  connectionsOpen = 0;
  connectionsTotal = 0;
  /** Connections accepted over maxConnections (answered 503 OVERLOADED, then closed). */
  connectionsRejected = 0;
  /** Admitted connections without a request head closed to make room for a new one (at maxConnections or maxConnectionsPerSource). */
  connectionsEvicted = 0;
  /** Frames rejected as malformed or wrong-direction, or by ws itself (e.g. over maxFrameBytes). */
  framesRejected = 0;
  evidenceServed = 0;
  /** Sealed request bodies that reached the server (before any check). */
  sealedRequestsReceived = 0;
  /** Of those, the ones that decrypted. */
  requestsOpened = 0;
  requestsCompleted = 0;
  requestsFailed = 0;
  requestsCancelled = 0;
  inFlight = 0;
  /** Sealed request bodies being received over HTTP (ServerLimits.maxUploadsInProgress). */
  uploadsInProgress = 0;
  backpressureWaits = 0;
  readonly errors = new Map<ErrorCode, number>();
  /** Finished or refused sealed requests by `op\0code` (op from the closed operation list or OP_NONE). */
  readonly requests = new Map<string, number>();
  /** Latency of sealed requests the handler ran, by op. */
  readonly latency = new Map<string, LatencyHistogram>();
  /** Output guard (src/guard/): answers by `action` (pass, flagged, redacted, blocked). */
  readonly guardActions = new Map<string, number>();
  /** Output guard: identifiers found, by type (SSN, PHONE, ...). Counts only, never text. */
  readonly guardFindings = new Map<string, number>();

  count(code: ErrorCode): void {
    this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
  }

  /**
   * One sealed request's outcome: `op` is an operation name from the closed list or OP_NONE,
   * `code` CODE_OK or an error code; `seconds` when the handler ran it (refusals at the
   * transport have no latency).
   */
  recordRequest(op: string, code: ErrorCode | typeof CODE_OK, seconds?: number): void {
    const key = `${op}\0${code}`;
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
    if (seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return;
    let h = this.latency.get(op);
    if (h === undefined) {
      h = { buckets: LATENCY_BUCKETS_SECONDS.map(() => 0), sum: 0, count: 0 };
      this.latency.set(op, h);
    }
    for (let i = 0; i < LATENCY_BUCKETS_SECONDS.length; i++) {
      if (seconds <= (LATENCY_BUCKETS_SECONDS[i] ?? 0)) h.buckets[i] = (h.buckets[i] ?? 0) + 1;
    }
    h.sum += seconds;
    h.count++;
  }

  snapshot(): Readonly<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(this)) if (typeof v === 'number') out[k] = v;
    for (const [code, n] of this.errors) out[`error.${code}`] = n;
    return out;
  }
}
