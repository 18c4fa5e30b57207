/**
 * The local gateway: a plain OpenAI-compatible HTTP API on the client's own machine that
 * seals every request it forwards to the attested server (DESIGN.md "Who uses it"), so an
 * unchanged application (OpenAI SDK, curl, LangChain ...) talks to the TEE by pointing its
 * base URL here.
 *
 *   POST /v1/chat/completions   -> sealed op 'chat'        (stream: true -> SSE)
 *   POST /v1/completions        -> sealed op 'completion'  (stream: true -> SSE)
 *   POST /v1/embeddings         -> sealed op 'embeddings'; for an ONNX feature-extraction
 *                                  model (task in the key config) sealed op 'embed', answered
 *                                  in OpenAI's shape (encoding_format float or base64)
 *   GET  /v1/models             -> sealed op 'models' when a model is pinned, else the
 *                                  model list of the verified key config
 *
 * Streams stay streams: every opened chunk is written as one SSE event at once, and
 * `data: [DONE]` is sent only when the sealed stream ended with its authenticated final
 * chunk; on any failure after the head (truncation included) an error event is sent and the
 * stream ends without [DONE], which the OpenAI SDK raises as an error.
 *
 * The gateway's own HTTP leg is plaintext on this machine, so it binds loopback only unless
 * told otherwise, checks the Host header (DNS rebinding), accepts only JSON bodies, bounds
 * request bodies, and never logs content. Browsers are refused by the gateway itself, not
 * only by their CORS preflight: a request with an `Origin` other than the gateway's own
 * loopback origin or an `allowOrigins` entry is 403 FORBIDDEN, as is one marked
 * `Sec-Fetch-Site: cross-site`, and OPTIONS (a preflight) is 403 except from an allowed
 * origin. Requests without those headers (curl, the OpenAI SDKs, servers) pass. An API key
 * (`Authorization: Bearer`, compared in constant time as SHA-256 digests) is optional on
 * loopback and required on any other interface.
 */
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CloisterError, asCloisterError } from '../../errors.js';
import type { ErrorCode } from '../../errors.js';
import { timingSafeEqualBytes } from '../../crypto/ct.js';
import { isLoopbackHost } from '../../core/loopback.js';
import type { SealedRequester } from '../openai/types.js';
import { embedWithOnnx, isOnnxEmbedder } from '../openai/onnx-embeddings.js';
import { positiveInt } from '../../core/validate.js';
import { COLLECTIONS_PREFIX, collectionInput, runCollectionCall } from './collections.js';

export interface GatewayOptions {
  /** The verified sealed client (the core SDK's `connect(...)` result). */
  readonly client: SealedRequester;
  /** Interface to bind. Default "127.0.0.1". */
  readonly host?: string;
  /** Port to bind; 0 picks a free one. Default 0. */
  readonly port?: number;
  /** Allow binding a non-loopback interface (the plaintext leg then crosses a network). Default false. */
  readonly allowNonLoopback?: boolean;
  /**
   * When set, every request goes to this model whatever the application names (applications
   * often hard-code a model name), and GET /v1/models asks for it. Default: the application's
   * `model` passes through.
   */
  readonly model?: string;
  /**
   * When set, requests must carry `Authorization: Bearer <apiKey>` (401 UNAUTHORIZED
   * otherwise). Required when `allowNonLoopback` binds another interface.
   */
  readonly apiKey?: string;
  /**
   * Browser origins allowed besides the gateway's own (`http://127.0.0.1:PORT`,
   * `http://localhost:PORT`, `http://[::1]:PORT`), exactly as browsers send them, e.g.
   * `http://localhost:3000`. They get CORS answers (preflight 204, Access-Control-Allow-Origin).
   */
  readonly allowOrigins?: readonly string[];
  /** Largest request body. Default 8 MiB. */
  readonly maxRequestBytes?: number;
  /** Concurrent connections. Default 256. */
  readonly maxConnections?: number;
  /** Deadline for receiving request headers. Default 30 000. */
  readonly headersTimeoutMs?: number;
  /** Deadline for receiving a whole request (headers and body). Default 60 000. */
  readonly requestBodyTimeoutMs?: number;
}

export interface Gateway {
  /** e.g. "http://127.0.0.1:8080"; applications use `${url}/v1` as their base URL. */
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

export const DEFAULT_GATEWAY_MAX_REQUEST_BYTES = 8 * 1024 * 1024;

type Route = { readonly method: 'GET' | 'POST'; readonly op: 'chat' | 'completion' | 'embeddings' | 'models' };

const ROUTES: Readonly<Record<string, Route>> = {
  '/v1/chat/completions': { method: 'POST', op: 'chat' },
  '/v1/completions': { method: 'POST', op: 'completion' },
  '/v1/embeddings': { method: 'POST', op: 'embeddings' },
  '/v1/models': { method: 'GET', op: 'models' },
};

/** The options once validated (CONFIG_INVALID otherwise), with defaults applied. */
interface GatewayConfig {
  readonly host: string;
  readonly port: number;
  readonly loopbackOnly: boolean;
  readonly maxRequestBytes: number;
  readonly apiKeyDigest: Uint8Array | undefined;
  readonly allowOrigins: ReadonlySet<string>;
  readonly headersTimeoutMs: number;
  readonly requestBodyTimeoutMs: number;
  readonly maxConnections: number;
}

function resolveGatewayOptions(options: GatewayOptions): GatewayConfig {
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new CloisterError('CONFIG_INVALID', 'gateway port must be 0..65535');
  const loopbackOnly = options.allowNonLoopback !== true;
  if (loopbackOnly && !isLoopbackHost(host)) {
    throw new CloisterError('CONFIG_INVALID', 'the gateway binds loopback only; pass allowNonLoopback (--allow-non-loopback) to bind another interface', {
      detail: { host },
    });
  }
  const maxRequestBytes = positiveInt('maxRequestBytes', options.maxRequestBytes, DEFAULT_GATEWAY_MAX_REQUEST_BYTES);
  const apiKeyDigest = options.apiKey === undefined ? undefined : sha256(options.apiKey);
  if (options.apiKey === '') throw new CloisterError('CONFIG_INVALID', 'apiKey must not be empty');
  if (!loopbackOnly && !isLoopbackHost(host) && options.apiKey === undefined) {
    // Off loopback every host on the network reaches the plaintext leg: never without a key.
    throw new CloisterError('CONFIG_INVALID', `the gateway on ${host} (not loopback) needs an API key (apiKey; --api-key-file or CLOISTER_GATEWAY_API_KEY)`, { detail: { host } });
  }
  const allowOrigins = new Set((options.allowOrigins ?? []).map(checkOrigin));
  return {
    host,
    port,
    loopbackOnly,
    maxRequestBytes,
    apiKeyDigest,
    allowOrigins,
    headersTimeoutMs: positiveInt('headersTimeoutMs', options.headersTimeoutMs, 30_000),
    requestBodyTimeoutMs: positiveInt('requestBodyTimeoutMs', options.requestBodyTimeoutMs, 60_000),
    maxConnections: positiveInt('maxConnections', options.maxConnections, 256),
  };
}

/**
 * The checks before anything is read: Host header (DNS rebinding), browser origin, CORS
 * preflight, API key. False when the request was answered here (refused, or a preflight).
 */
function admit(req: IncomingMessage, res: ServerResponse, config: GatewayConfig, ownOrigins: ReadonlySet<string>): boolean {
  if (config.loopbackOnly && !hostHeaderIsLoopback(req.headers.host)) {
    sendError(res, new CloisterError('INVALID_ARGUMENT', 'Host header must name a loopback address'), 421);
    return false;
  }
  // Browsers: the Origin a browser sets (it cannot be forged by a page), and Sec-Fetch-Site
  // for requests that carry no Origin (a cross-site GET). Refused before the API key check,
  // so a page learns nothing about the key.
  const origin = req.headers.origin;
  const allowedOrigin = origin !== undefined && config.allowOrigins.has(origin);
  if (origin !== undefined && !allowedOrigin && !ownOrigins.has(origin)) {
    sendError(res, new CloisterError('FORBIDDEN', `browser origin ${originForMessage(origin)} is not allowed (allow it with --allow-origin)`), 403);
    return false;
  }
  if (!allowedOrigin && req.headers['sec-fetch-site'] === 'cross-site') {
    sendError(res, new CloisterError('FORBIDDEN', 'a cross-site browser request is not allowed (Sec-Fetch-Site: cross-site)'), 403);
    return false;
  }
  if (allowedOrigin) {
    res.setHeader('access-control-allow-origin', origin);
    res.setHeader('vary', 'Origin');
  }
  if (req.method === 'OPTIONS') {
    if (!allowedOrigin) {
      sendError(res, new CloisterError('FORBIDDEN', 'CORS preflight refused: the origin is not allowed (--allow-origin)'), 403);
      return false;
    }
    res.writeHead(204, {
      'access-control-allow-methods': 'GET, POST',
      'access-control-allow-headers': 'authorization, content-type',
      'access-control-max-age': '600',
      'content-length': 0,
    });
    res.end();
    return false;
  }
  if (config.apiKeyDigest !== undefined && !authorized(req.headers.authorization, config.apiKeyDigest)) {
    res.setHeader('www-authenticate', 'Bearer');
    sendError(res, new CloisterError('UNAUTHORIZED', 'missing or wrong API key (Authorization: Bearer)'), 401);
    return false;
  }
  return true;
}

/** The route of the request (answered 404 / 405 here when there is none: undefined). */
function routeOf(req: IncomingMessage, res: ServerResponse): Route | undefined {
  const path = (req.url ?? '').split('?')[0] ?? '';
  const route = Object.prototype.hasOwnProperty.call(ROUTES, path) ? ROUTES[path] : undefined;
  if (route === undefined) {
    sendError(res, new CloisterError('NOT_FOUND', 'no such endpoint'), 404);
    return undefined;
  }
  if (req.method !== route.method) {
    res.setHeader('allow', route.method);
    sendError(res, new CloisterError('INVALID_ARGUMENT', 'method not allowed'), 405);
    return undefined;
  }
  return route;
}

/** An AbortController aborted when the application hangs up before the answer is written. */
function hangUpController(res: ServerResponse): AbortController {
  const controller = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  return controller;
}

/** Forward one admitted request with its route and body, sealed, and write the answer. */
async function forward(res: ServerResponse, options: GatewayOptions, route: Route, body: Record<string, unknown>): Promise<void> {
  if (route.op === 'models' && options.model === undefined && options.client.models !== undefined) {
    // No model pinned: answer from the verified key config (attested, no round trip).
    const data = options.client.models().map((m) => ({ id: m.name, object: 'model', owned_by: 'cloister', task: m.task }));
    return sendJson(res, 200, { object: 'list', data });
  }
  const model = options.model ?? body['model'];
  if (typeof model !== 'string' || model === '') {
    return sendError(res, new CloisterError('INVALID_ARGUMENT', 'a model name is required'));
  }
  if (route.op === 'embeddings' && isOnnxEmbedder(options.client, model)) {
    // An in-TEE ONNX feature-extraction model: its sealed op is `embed` (texts in, vectors
    // out); the gateway speaks OpenAI's /v1/embeddings shape on its side.
    const controller = hangUpController(res);
    return sendJson(res, 200, await embedWithOnnx(options.client, model, body, controller.signal));
  }
  const input: Record<string, unknown> = { ...body, model };
  const stream = (route.op === 'chat' || route.op === 'completion') && body['stream'] === true;
  // `collection` on a chat request: attested RAG over a sealed collection (sealed op `rag`);
  // `guard`: a stricter output guard policy for this answer (docs/GUARD.md).
  const op = route.op === 'chat' && body['collection'] !== undefined ? 'rag' : route.op;
  const guard = body['guard'];
  delete input['guard'];
  let report: unknown;

  // The application hanging up cancels the sealed request (and the engine's work).
  const controller = hangUpController(res);
  const results = options.client.request({
    op, model, input: route.op === 'models' ? null : input, stream, signal: controller.signal,
    ...(guard === undefined ? {} : { params: { guard } }),
    onReport: (r) => {
      report = r;
    },
  });
  const iterator = results[Symbol.asyncIterator]();

  try {
    // The first result decides the status line: an early failure is a plain HTTP error.
    const first = await iterator.next();
    if (!stream) {
      if (first.done === true) throw new CloisterError('PROTOCOL_VIOLATION', 'the server sent no result');
      const extra = await iterator.next();
      if (extra.done !== true) throw new CloisterError('PROTOCOL_VIOLATION', 'a non-streamed answer must be exactly one result');
      const value: unknown = first.value;
      // The signed report (output guard verdict, retrieval facts) rides along when there is one.
      return sendJson(res, 200, report !== undefined && typeof value === 'object' && value !== null && !Array.isArray(value) ? { ...value, cloister_report: report } : value);
    }
    await writeStream(res, iterator, first, controller.signal, () => report);
  } catch (err) {
    if (controller.signal.aborted && res.destroyed) return;
    sendError(res, asCloisterError(err));
  } finally {
    await iterator.return?.().catch(() => undefined);
  }
}

/** A streamed answer as SSE, from its first result on; [DONE] only after the sealed stream's end. */
async function writeStream(res: ServerResponse, iterator: AsyncIterator<unknown>, first: IteratorResult<unknown>, signal: AbortSignal, reportOf: () => unknown): Promise<void> {
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    'x-accel-buffering': 'no',
  });
  // The head leaves with the first event (one write, not two). Events opened from one
  // sealed chunk arrive in the same turn: the socket is corked while they are written and
  // uncorked on the next tick, so they leave in one write, not one syscall each.
  let corked = false;
  const uncork = (): void => {
    corked = false;
    res.uncork();
  };
  let step = first;
  try {
    while (step.done !== true) {
      if (!corked && step !== first) {
        corked = true;
        res.cork();
        process.nextTick(uncork);
      }
      if (!(await writeEvent(res, `data: ${JSON.stringify(step.value)}\n\n`))) return;
      step = await iterator.next();
    }
  } catch (err) {
    if (signal.aborted) return;
    const e = asCloisterError(err);
    // No [DONE]: the application must not take a cut stream for a complete answer.
    await writeEvent(res, `event: error\ndata: ${JSON.stringify(errorBody(e))}\n\n`);
    res.end();
    return;
  }
  // The sealed stream ended with its authenticated final chunk; the signed report, if any,
  // (output guard verdict, retrieval facts) is the last event before [DONE].
  const report = reportOf();
  if (report !== undefined && !(await writeEvent(res, `data: ${JSON.stringify({ object: 'cloister.report', choices: [], cloister_report: report })}\n\n`))) return;
  if (await writeEvent(res, 'data: [DONE]\n\n')) res.end();
}

export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const config = resolveGatewayOptions(options);
  // The gateway's own origins, known once the port is (set after listen).
  let ownOrigins: ReadonlySet<string> = new Set();

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    res.socket?.setNoDelay(true);
    if (!admit(req, res, config, ownOrigins)) return;
    const path = (req.url ?? '').split('?')[0] ?? '';
    if (path === COLLECTIONS_PREFIX || path.startsWith(`${COLLECTIONS_PREFIX}/`)) {
      // Sealed collections (./collections.ts): one sealed `collection` request per call.
      const hasBody = req.method === 'POST';
      if (hasBody && (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() !== 'application/json') {
        return sendError(res, new CloisterError('INVALID_ARGUMENT', 'Content-Type must be application/json'), 415);
      }
      const input = collectionInput(req.method ?? 'GET', path, req.headers, hasBody ? await readJsonObject(req, config.maxRequestBytes) : {});
      const controller = hangUpController(res);
      return sendJson(res, 200, await runCollectionCall(options.client, input, controller.signal));
    }
    const route = routeOf(req, res);
    if (route === undefined) return;
    let body: Record<string, unknown> = {};
    if (route.method === 'POST') {
      const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
      if (type !== 'application/json') {
        return sendError(res, new CloisterError('INVALID_ARGUMENT', 'Content-Type must be application/json'), 415);
      }
      body = await readJsonObject(req, config.maxRequestBytes);
    }
    await forward(res, options, route, body);
  };

  const server: Server = createServer(
    { headersTimeout: config.headersTimeoutMs, requestTimeout: config.requestBodyTimeoutMs },
    (req, res) => {
      void handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) sendError(res, asCloisterError(err));
        else res.destroy();
      });
    },
  );
  server.maxConnections = config.maxConnections;

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new CloisterError('CONFIG_INVALID', 'gateway cannot listen', { cause: err })));
    server.listen(config.port, config.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  ownOrigins = new Set(['127.0.0.1', 'localhost', '[::1]'].map((h) => `http://${h}:${address.port}`));
  const urlHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${urlHost}:${address.port}`,
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Write one SSE event; waits for drain (backpressure). False when the application is gone. */
function writeEvent(res: ServerResponse, text: string): Promise<boolean> {
  if (res.destroyed) return Promise.resolve(false);
  if (res.write(text)) return Promise.resolve(true);
  return new Promise<boolean>((resolve) => {
    const done = (ok: boolean): void => {
      res.off('drain', onDrain);
      res.off('close', onClose);
      resolve(ok);
    };
    const onDrain = (): void => done(true);
    const onClose = (): void => done(false);
    res.on('drain', onDrain);
    res.on('close', onClose);
  });
}

async function readJsonObject(req: IncomingMessage, max: number): Promise<Record<string, unknown>> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > max) throw bodyTooLarge(max);
  const parts: Buffer[] = [];
  let total = 0;
  for await (const chunk of req) {
    const c = chunk as Buffer;
    total += c.length;
    if (total > max) throw bodyTooLarge(max);
    parts.push(c);
  }
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(parts, total)));
  } catch {
    // No cause: the parser's message quotes part of the application's request (content).
    throw new CloisterError('INVALID_ARGUMENT', 'request body is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new CloisterError('INVALID_ARGUMENT', 'request body must be a JSON object');
  }
  return value as Record<string, unknown>;
}

function bodyTooLarge(max: number): CloisterError {
  return new CloisterError('LIMIT_EXCEEDED', `request body exceeds the gateway's maxRequestBytes (${max} bytes; --max-request-bytes)`, { detail: { limit: 'maxRequestBytes', max } });
}

function hostHeaderIsLoopback(host: string | undefined): boolean {
  if (host === undefined) return false;
  let name = host;
  if (name.startsWith('[')) {
    const end = name.indexOf(']');
    if (end === -1) return false;
    name = name.slice(0, end + 1);
  } else {
    const colon = name.lastIndexOf(':');
    if (colon !== -1) name = name.slice(0, colon);
  }
  return isLoopbackHost(name.toLowerCase());
}

/** An allowOrigins entry: a serialized http(s) origin, as browsers send it (no path, no trailing slash). */
function checkOrigin(value: string): string {
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.origin !== value) {
    throw new CloisterError('CONFIG_INVALID', `allowed origin '${value}' must be an origin such as http://localhost:3000 (scheme, host, optional port; no path)`);
  }
  return value;
}

/** An Origin header for an error message: bounded, printable. */
function originForMessage(origin: string): string {
  const s = origin.slice(0, 100).replace(/[^\x20-\x7e]/g, '?');
  return `'${s}'`;
}

function authorized(header: string | undefined, expected: Uint8Array): boolean {
  // The scheme is case-insensitive (RFC 9110 section 11.1); the key follows one space.
  const prefix = 'bearer ';
  if (header === undefined || header.slice(0, prefix.length).toLowerCase() !== prefix) return false;
  return timingSafeEqualBytes(sha256(header.slice(prefix.length)), expected);
}

function sha256(s: string): Uint8Array {
  return new Uint8Array(createHash('sha256').update(s, 'utf8').digest());
}

const STATUS: Partial<Record<ErrorCode, number>> = {
  INVALID_ARGUMENT: 400,
  MALFORMED: 400,
  LIMIT_EXCEEDED: 413,
  NOT_FOUND: 404,
  UNKNOWN_MODEL: 404,
  UNKNOWN_OPERATION: 404,
  OVERLOADED: 503,
  RATE_LIMITED: 429,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  TIMEOUT: 504,
  ENGINE_FAILED: 502,
  ENGINE_UNAVAILABLE: 503,
  CONNECTION_FAILED: 502,
  CANCELLED: 499,
  CAPABILITY_INVALID: 403,
  OUTPUT_BLOCKED: 422,
  STORAGE_CORRUPT: 500,
  STORAGE_ROLLBACK: 500,
  ROLLBACK_COUNTER_FAILED: 503,
};

/** OpenAI-shaped error body; `code` is the Cloister error code (no content ever). */
function errorBody(err: CloisterError): { error: { message: string; type: string; code: string; param: null } } {
  return { error: { message: err.message, type: 'cloister_error', code: err.code, param: null } };
}

function sendError(res: ServerResponse, err: CloisterError, status?: number): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  // An unread request body stays on the socket: do not reuse the connection after a refusal.
  if (err.code === 'LIMIT_EXCEEDED') res.setHeader('connection', 'close');
  // Attestation, crypto and protocol failures are the server's fault from the app's view.
  sendJson(res, status ?? STATUS[err.code] ?? 502, errorBody(err));
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  if (res.destroyed) return;
  const body = Buffer.from(JSON.stringify(value), 'utf8');
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': body.length });
  res.end(body);
}

/** Parse "host:port", "[v6]:port" or ":port" (host defaults to 127.0.0.1). */
export function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value);
  const port = m === null ? Number.NaN : Number(m[3]);
  if (m === null || !Number.isInteger(port) || port > 65535) {
    throw new CloisterError('CONFIG_INVALID', '--listen must be HOST:PORT, e.g. 127.0.0.1:8080');
  }
  const host = m[1] ?? (m[2] === undefined || m[2] === '' ? '127.0.0.1' : m[2]);
  return { host, port };
}
