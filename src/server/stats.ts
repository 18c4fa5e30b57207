/** Counters a running server exposes (tests, health endpoints). Numbers only, never content. */
import type { ErrorCode } from '../errors.js';

export class ServerStats {
  /** Admitted client connections now open, HTTP and WebSocket alike (see ServerLimits.maxConnections). */
  connectionsOpen = 0;
  connectionsTotal = 0;
  /** Connections accepted over maxConnections (answered 503 OVERLOADED, then closed). */
  connectionsRejected = 0;
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

  count(code: ErrorCode): void {
    this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
  }

  snapshot(): Readonly<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(this)) if (typeof v === 'number') out[k] = v;
    for (const [code, n] of this.errors) out[`error.${code}`] = n;
    return out;
  }
}
