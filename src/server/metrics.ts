/**
 * `GET /metrics`: the server's counters in the Prometheus text exposition format (version
 * 0.0.4, https://prometheus.io/docs/instrumenting/exposition_formats/). Numbers only: label
 * values come from closed lists (operation names, error codes, `ok`, `none`), never from a
 * request. Written by hand (a few dozen lines) rather than with prom-client: the server has
 * one registry, no dynamic metric names, and every dependency goes into the measured image.
 */
import { LATENCY_BUCKETS_SECONDS } from './stats.js';
import type { ServerStats } from './stats.js';

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

interface MetricsInput {
  readonly stats: ServerStats;
  /** Current key generation counter and its OHTTP key id. */
  readonly keyGeneration: number;
  readonly keyId: number;
  /** Seconds since the server was created. */
  readonly uptimeSeconds: number;
  /** Unix seconds when the server was created. */
  readonly startTimeSeconds: number;
  readonly ready: boolean;
  readonly maxInFlightTotal: number;
}

/** A label value in the exposition format: backslash, double quote and newline escaped. */
function labelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** A sample value: integers as they are, other numbers in full precision, never NaN text surprises. */
function num(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

class Exposition {
  private readonly lines: string[] = [];
  family(name: string, type: 'counter' | 'gauge' | 'histogram', help: string): void {
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  }
  /** A family with one unlabelled sample. */
  single(name: string, type: 'counter' | 'gauge', help: string, value: number): void {
    this.family(name, type, help);
    this.sample(name, value);
  }

  sample(name: string, value: number, labels: Readonly<Record<string, string>> = {}): void {
    const entries = Object.entries(labels);
    const l = entries.length === 0 ? '' : `{${entries.map(([k, v]) => `${k}="${labelValue(v)}"`).join(',')}}`;
    this.lines.push(`${name}${l} ${num(value)}`);
  }
  text(): string {
    return `${this.lines.join('\n')}\n`;
  }
}

/** The exposition text for one scrape. */
export function renderMetrics(m: MetricsInput): string {
  const s = m.stats;
  const out = new Exposition();
  out.single('cloister_up', 'gauge', 'Always 1 while the server process answers.', 1);
  out.single('cloister_ready', 'gauge', '1 when GET /readyz answers 200.', m.ready ? 1 : 0);
  out.single('cloister_uptime_seconds', 'gauge', 'Seconds since the server started.', Math.max(0, m.uptimeSeconds));
  out.single('cloister_start_time_seconds', 'gauge', 'Unix time the server started, in seconds.', m.startTimeSeconds);
  out.single('cloister_key_generation', 'gauge', 'Counter of the current key generation (increments at each rotation).', m.keyGeneration);
  out.single('cloister_key_id', 'gauge', 'OHTTP key id of the current key generation.', m.keyId);

  out.family('cloister_requests_total', 'counter', 'Sealed requests by operation (none: never opened or decoded) and outcome code (ok or an error code).');
  for (const key of [...s.requests.keys()].sort()) {
    const [op = '', code = ''] = key.split('\0');
    out.sample('cloister_requests_total', s.requests.get(key) ?? 0, { op, code });
  }
  out.family('cloister_request_duration_seconds', 'histogram', 'Time from receiving a sealed request to its last response byte handed to the transport.');
  for (const op of [...s.latency.keys()].sort()) {
    const h = s.latency.get(op);
    if (h === undefined) continue;
    LATENCY_BUCKETS_SECONDS.forEach((le, i) => out.sample('cloister_request_duration_seconds_bucket', h.buckets[i] ?? 0, { op, le: num(le) }));
    out.sample('cloister_request_duration_seconds_bucket', h.count, { op, le: '+Inf' });
    out.sample('cloister_request_duration_seconds_sum', h.sum, { op });
    out.sample('cloister_request_duration_seconds_count', h.count, { op });
  }
  out.single('cloister_requests_in_flight', 'gauge', 'Sealed requests admitted and not finished (the queue depth across all engines).', s.inFlight);
  out.single('cloister_requests_in_flight_limit', 'gauge', 'maxInFlightTotal: in-flight requests beyond it are refused OVERLOADED.', m.maxInFlightTotal);
  out.family('cloister_errors_total', 'counter', 'Errors by code, over requests, frames, connections and evidence.');
  for (const code of [...s.errors.keys()].sort()) out.sample('cloister_errors_total', s.errors.get(code) ?? 0, { code });
  out.single('cloister_connections_open', 'gauge', 'Admitted client connections now open (HTTP and WebSocket).', s.connectionsOpen);
  out.single('cloister_connections_total', 'counter', 'Client connections admitted since start.', s.connectionsTotal);
  out.single('cloister_connections_rejected_total', 'counter', 'Connections refused over maxConnections or maxConnectionsPerSource.', s.connectionsRejected);
  out.single('cloister_connections_evicted_total', 'counter', 'Connections without a request head closed to make room at maxConnections or maxConnectionsPerSource.', s.connectionsEvicted);
  out.single('cloister_uploads_in_progress', 'gauge', 'Sealed request bodies being received over HTTP.', s.uploadsInProgress);
  out.single('cloister_frames_rejected_total', 'counter', 'WebSocket frames rejected as malformed or over a limit.', s.framesRejected);
  out.single('cloister_evidence_served_total', 'counter', 'Evidence bundles served.', s.evidenceServed);
  out.family('cloister_guard_answers_total', 'counter', 'Guarded answers by output guard action (pass, flagged, redacted, blocked).');
  for (const a of [...s.guardActions.keys()].sort()) out.sample('cloister_guard_answers_total', s.guardActions.get(a) ?? 0, { action: a });
  out.family('cloister_guard_findings_total', 'counter', 'Identifiers (PHI/PII) the output guard found, by type.');
  for (const t of [...s.guardFindings.keys()].sort()) out.sample('cloister_guard_findings_total', s.guardFindings.get(t) ?? 0, { type: t });
  out.single('cloister_backpressure_waits_total', 'counter', 'Times a response writer waited for a slow peer.', s.backpressureWaits);
  return out.text();
}
