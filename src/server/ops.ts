/**
 * Operator endpoints on the server's own listener (plain text / JSON, never CBOR, never
 * content):
 * - `GET /healthz`: the process is up and its event loop answers: always 200 `ok`.
 * - `GET /readyz`: 200 when the engines are loaded (an upstream engine's canary passed: the
 *   server exists only after that), evidence for the current key generation is available and
 *   the server is not draining; 503 otherwise. The body says which check failed.
 * - `GET /metrics`: Prometheus text (./metrics.ts).
 * `HEAD` is answered like `GET` without a body; other methods get 405.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { METRICS_CONTENT_TYPE } from './metrics.js';

const HEALTH_PATH = '/healthz';
const READY_PATH = '/readyz';
const METRICS_PATH = '/metrics';
export const OPS_PATHS: ReadonlySet<string> = new Set([HEALTH_PATH, READY_PATH, METRICS_PATH]);

export interface Readiness {
  readonly ready: boolean;
  readonly checks: {
    /** Every engine started (models loaded, the upstream canary passed). */
    readonly engines: boolean;
    /** Evidence for the current key generation was produced. */
    readonly evidence: boolean;
    /** The server is shutting down (SIGTERM): load balancers should stop sending. */
    readonly draining: boolean;
  };
}

export interface OpsProvider {
  readiness(): Readiness;
  metrics(): string;
}

function send(req: IncomingMessage, res: ServerResponse, status: number, type: string, body: string): void {
  const bytes = Buffer.from(body, 'utf8');
  res.writeHead(status, { 'content-type': type, 'content-length': bytes.byteLength, 'cache-control': 'no-store' });
  res.end(req.method === 'HEAD' ? undefined : bytes);
}

/** Answers one operator request (`path` is one of OPS_PATHS). */
export function handleOps(ops: OpsProvider, path: string, req: IncomingMessage, res: ServerResponse): void {
  req.resume();
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('allow', 'GET, HEAD');
    send(req, res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
    return;
  }
  if (path === HEALTH_PATH) {
    send(req, res, 200, 'text/plain; charset=utf-8', 'ok\n');
    return;
  }
  if (path === READY_PATH) {
    const r = ops.readiness();
    send(req, res, r.ready ? 200 : 503, 'application/json', `${JSON.stringify({ status: r.ready ? 'ready' : 'not-ready', checks: r.checks })}\n`);
    return;
  }
  send(req, res, 200, METRICS_CONTENT_TYPE, ops.metrics());
}
