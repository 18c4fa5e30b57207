/**
 * The standard Oblivious HTTP gateway (docs/PROTOCOL.md section 13): RFC 9458 encapsulation
 * (`message/ohttp-req` / `message/ohttp-res`, labels "message/bhttp request" / "message/bhttp
 * response") with RFC 9292 Binary HTTP inside, so that an unmodified OHTTP client, through an
 * unmodified OHTTP relay, talks to Cloister's OpenAI-shaped operations:
 *
 *   POST /v1/chat/completions, POST /v1/completions, POST /v1/embeddings (JSON body with
 *   `model`; `stream` must be absent or false: one encapsulated response), GET /v1/models?model=NAME
 *
 * The answer is a Binary HTTP response: 200 with the engine's JSON, or an error status with
 * `{"error": {"code", "message"}}` (generic or content-free messages only), sealed to the
 * request's HPKE context. Failures before the request opened are plaintext coded errors, as
 * on `/v1/sealed`.
 *
 * Replay (RFC 9458 section 6.9): the request must carry a `date` header within the server's
 * replay window; the encapsulated key `enc` (unique per request) is the replay id. Client API
 * keys travel as `authorization: Bearer KEY`, inside the encapsulation.
 *
 * Receipts: a standard OHTTP client cannot read Cloister receipts; this path carries none.
 * Clients that want receipts, streaming or sessions use the Cloister protocol.
 */
import { createHash } from 'node:crypto';
import { CloisterError, ERROR_CODES, asCloisterError, wireCodeOf } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { decodeBhttpRequest, encodeBhttpResponse } from '../protocol/bhttp.js';
import type { BhttpField, BhttpLimits } from '../protocol/bhttp.js';
import { decapsulateRequest, REQUEST_HEADER_LENGTH } from '../protocol/ohttp.js';
import { JsonResults } from '../protocol/messages.js';
import type { Operation } from '../inference/types.js';
import type { HandlerDeps } from './handler.js';
import { publicMessageOf } from './handler.js';
import { startDeadline } from '../core/deadline.js';
import { CODE_OK, OP_NONE } from './stats.js';

export const OHTTP_PATH = '/v1/ohttp';
export const OHTTP_REQUEST_MEDIA_TYPE = 'message/ohttp-req';
export const OHTTP_RESPONSE_MEDIA_TYPE = 'message/ohttp-res';

/** OpenAI-shaped routes offered through the gateway, and the operation each runs. */
const ROUTES: Readonly<Record<string, { readonly method: 'GET' | 'POST'; readonly op: Operation }>> = {
  '/v1/chat/completions': { method: 'POST', op: 'chat' },
  '/v1/completions': { method: 'POST', op: 'completion' },
  '/v1/embeddings': { method: 'POST', op: 'embeddings' },
  '/v1/models': { method: 'GET', op: 'models' },
};

/** The outcome: plaintext error before the request opened, or the encapsulated response. */
export type OhttpOutcome =
  | { readonly kind: 'error'; readonly code: ErrorCode }
  | { readonly kind: 'response'; readonly body: Uint8Array; readonly status: number };

export interface OhttpGatewayOptions {
  readonly bhttpLimits?: Partial<BhttpLimits>;
  /** Server clock (tests). Default Date.now. */
  readonly now?: () => number;
  /** The peer's network source (src/server/sources.ts), for maxReplayEntriesPerSource; absent: LOCAL_SOURCE. */
  readonly source?: string;
}

function httpStatusOf(code: ErrorCode): number {
  switch (code) {
    case 'UNAUTHORIZED':
      return 401;
    case 'FORBIDDEN':
      return 403;
    case 'UNKNOWN_MODEL':
    case 'NOT_FOUND':
      return 404;
    case 'PROTOCOL_VIOLATION':
      return 405;
    case 'LIMIT_EXCEEDED':
      return 413;
    case 'RATE_LIMITED':
      return 429;
    case 'ENGINE_FAILED':
      return 502;
    case 'OVERLOADED':
    case 'ENGINE_UNAVAILABLE':
      return 503;
    case 'TIMEOUT':
      return 504;
    case 'INTERNAL':
      return 500;
    default:
      return 400;
  }
}

function header(fields: readonly BhttpField[], name: string): string | undefined {
  const all = fields.filter(([n]) => n === name);
  if (all.length > 1) throw new CloisterError('MALFORMED', `binary HTTP: the ${name} header appears twice`, { detail: { public: true } });
  return all[0]?.[1];
}

const JSON_TYPE: BhttpField = ['content-type', 'application/json'];

function jsonResponse(status: number, value: unknown, date: number): Uint8Array {
  return encodeBhttpResponse({
    informational: [],
    status,
    headers: [JSON_TYPE, ['cache-control', 'no-store'], ['date', new Date(date).toUTCString()]],
    content: new TextEncoder().encode(JSON.stringify(value)),
    trailers: [],
  });
}

function clientError(code: ErrorCode, message: string): CloisterError {
  return new CloisterError(code, message, { detail: { public: true } });
}

/** The request's model and input, from a Binary HTTP request (throws coded, content-free errors). */
function mapRequest(method: string, target: string, content: Uint8Array): { op: Operation; model: string; input: unknown } {
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  const route = ROUTES[path];
  if (route === undefined) throw clientError('NOT_FOUND', `no such path; paths: ${Object.keys(ROUTES).join(', ')}`);
  if (method !== route.method) throw clientError('PROTOCOL_VIOLATION', `${path} takes ${route.method}`);
  if (route.op === 'models') {
    const model = q === -1 ? undefined : new URLSearchParams(target.slice(q + 1)).get('model');
    if (model === undefined || model === null) throw clientError('INVALID_ARGUMENT', 'GET /v1/models needs ?model=NAME (the upstream model name from the key config)');
    return { op: 'models', model, input: null };
  }
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(content));
  } catch {
    throw clientError('MALFORMED', 'the request content is not UTF-8 JSON');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw clientError('INVALID_ARGUMENT', 'the request content must be a JSON object');
  const model = (body as Record<string, unknown>)['model'];
  if (typeof model !== 'string') throw clientError('INVALID_ARGUMENT', 'the request names no model');
  const stream = (body as Record<string, unknown>)['stream'];
  if (stream !== undefined && stream !== false) throw clientError('INVALID_ARGUMENT', 'stream: true needs the Cloister protocol (one encapsulated response here)');
  return { op: route.op, model, input: body };
}

/**
 * Handles one encapsulated request. Never throws: every failure is a plaintext error code
 * (before the request opened) or a sealed Binary HTTP error response.
 */
export async function handleOhttpRequest(deps: HandlerDeps, body: Uint8Array, signal: AbortSignal, options: OhttpGatewayOptions = {}): Promise<OhttpOutcome> {
  const now = options.now ?? Date.now;
  let opened: ReturnType<typeof decapsulateRequest>;
  try {
    opened = decapsulateRequest((keyId, suite) => deps.keys.lookup(keyId, suite).recipient, body);
  } catch (err) {
    const code = asCloisterError(err, 'DECRYPT_FAILED').code;
    deps.stats.count(code);
    return { kind: 'error', code: wireCodeOf(code) };
  }
  // enc is unique per request (a fresh HPKE ephemeral key): its digest is the replay id.
  const replayId = new Uint8Array(createHash('sha256').update(body.subarray(0, REQUEST_HEADER_LENGTH + 32)).digest()).subarray(0, 16);
  deps.stats.requestsOpened++;
  const started = performance.now();
  const deadline = startDeadline(deps.requestTimeoutMs, signal);
  let status = 200;
  let op: string = OP_NONE;
  let outcome: ErrorCode | typeof CODE_OK = CODE_OK;
  let answer: Uint8Array;
  try {
    const req = decodeBhttpRequest(opened.plaintext, { maxContentBytes: deps.maxRequestBytes, ...options.bhttpLimits });
    const date = header(req.headers, 'date');
    const ts = date === undefined ? Number.NaN : Date.parse(date);
    if (!Number.isFinite(ts)) throw clientError('REPLAY', 'the request needs a date header (RFC 9458 section 6.9.1)');
    deps.replay.checkTimestamp(ts);
    if (deps.clientKeys !== undefined) {
      const auth = header(req.headers, 'authorization');
      const key = auth?.startsWith('Bearer ') === true ? auth.slice(7) : undefined;
      deps.clientKeys.authorize(key);
    }
    const mapped = mapRequest(req.method, req.path, req.content);
    op = mapped.op;
    const engine = deps.router.route(mapped.op, mapped.model);
    deps.replay.check(replayId, ts, options.source);
    const results: unknown[] = [];
    for await (const r of engine.run({ op: mapped.op, model: mapped.model, input: mapped.input, params: {}, stream: false }, { signal: deadline.signal })) {
      if (r instanceof JsonResults) for (const t of r.texts) results.push(JSON.parse(t) as unknown);
      else results.push(r);
      if (results.length > 1) throw new CloisterError('ENGINE_FAILED', 'the engine gave more than one result to a non-streaming request');
    }
    if (results.length !== 1) throw new CloisterError('ENGINE_FAILED', 'the engine gave no result');
    answer = jsonResponse(200, results[0], now());
  } catch (err) {
    const code = wireCodeOf(deadline.timedOut ? 'TIMEOUT' : asCloisterError(err, 'ENGINE_FAILED').code);
    deps.stats.count(code);
    outcome = code;
    status = httpStatusOf(code);
    const message = (err instanceof CloisterError && err.code === code ? publicMessageOf(err) : undefined) ?? ERROR_CODES[code];
    answer = jsonResponse(status, { error: { code, message } }, now());
  } finally {
    deadline.dispose();
  }
  deps.stats.recordRequest(op, outcome, (performance.now() - started) / 1000);
  return { kind: 'response', body: opened.response.seal(answer), status };
}
