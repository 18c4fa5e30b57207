/**
 * Processing of one sealed request, independent of the transport.
 *
 * Order of checks (DESIGN.md "Requests and responses"):
 * 1. open the chunked OHTTP request with the named key generation; any failure here is a
 *    plaintext coded error (`fail`), crypto failures collapsed to DECRYPT_FAILED;
 * 2. from here on the client can read sealed data, so every error goes INSIDE the sealed
 *    response: decode the inner message, replay timestamp, route, record the id in the
 *    replay window, run the engine;
 * 3. each engine chunk is sealed and written as it arrives (the write waits while the peer
 *    is slow: backpressure), and the final chunk carries the Ed25519 receipt over
 *    SHA-256(request plaintext) || SHA-256(response chunk plaintexts before the final one).
 */
import { CloisterError, ERROR_CODES, asCloisterError, wireCodeOf } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import type { CborInput } from '../core/cbor.js';
import type { ClientKeyTable } from './client-keys.js';
import { JsonResults, RECEIPT_PROOF_CAPABILITY, encodeResponseChunk } from '../protocol/messages.js';
import type { SealedRequest } from '../protocol/messages.js';
import { openChunkedRequest } from '../protocol/chunked.js';
import type { ReceiptV2WriterContext } from '../protocol/response.js';
import { sessionCommitment } from '../protocol/receipt-v2.js';
import type { Engine } from '../inference/types.js';
import { openRequest } from '../protocol/request.js';
import type { OpenedRequest } from '../protocol/request.js';
import { OPEN_MAX_BYTES, openSessionRequest, parseSessionRequestHeader } from '../protocol/session.js';
import type { ServerSession, SessionTable } from './sessions.js';
import type { KeyGeneration, KeyManager } from './keys.js';
import type { ReplayWindow } from './replay.js';
import type { EngineRouter } from './router.js';
import type { Logger } from './log.js';
import { newServerRequestId } from './log.js';
import type { ServerRequestId } from './log.js';
import { CODE_OK, OP_NONE } from './stats.js';
import type { ServerStats } from './stats.js';
import { startDeadline } from '../core/deadline.js';
import { timingSafeEqualBytes } from '../crypto/ct.js';
import type { Deadline } from '../core/deadline.js';
import { DEFAULT_GUARD_POLICY } from '../guard/policy.js';
import type { GuardPolicy } from '../guard/policy.js';
import { GUARDED_OPERATIONS, guardResults, requestPolicy } from '../guard/output.js';
import type { Tagger } from '../guard/tagger.js';
import { REPLICA_CAPABILITY } from '../protocol/replica.js';
import type { ReplicaStatement } from './evidence.js';
import type { GuardedResults } from '../guard/output.js';

/** Where the sealed response stream goes. */
export interface ResponseOut {
  /**
   * Writes bytes of the sealed response stream; resolves when the peer can take more. A
   * transport that took the bytes and has room for more returns nothing: the handler then
   * goes on without a promise and an abort listener per write.
   */
  write(bytes: Uint8Array): Promise<void> | undefined;
  /** Marks the end of the sealed response stream (after the final chunk). */
  end(): void;
  /**
   * Sends what was written so far without waiting for more (a transport that batches writes
   * into frames); optional, a transport that writes at once has nothing to do.
   */
  flush?(): void;
  /** Reports a failure before the request could be opened: a plaintext, coded error. */
  fail(code: ErrorCode): void;
}

/** One kind of sealed request: a one-shot request, a session open, a session request. */
export type RequestHandler = (deps: HandlerDeps, body: Uint8Array, out: ResponseOut, ctx: RequestContext) => Promise<void>;

export interface RequestContext {
  readonly conn: number;
  readonly sid?: number;
  /** The peer's network source (src/server/sources.ts); absent: LOCAL_SOURCE. */
  readonly source?: string;
  /** Aborted when the client cancels or disconnects. */
  readonly signal: AbortSignal;
}

export interface HandlerDeps {
  readonly keys: KeyManager;
  readonly replay: ReplayWindow;
  readonly router: EngineRouter;
  readonly logger: Logger;
  readonly stats: ServerStats;
  readonly requestTimeoutMs: number;
  readonly maxRequestBytes: number;
  /** Most relayed JSON text gathered into one sealed `json` chunk. Default DEFAULT_MAX_CHUNK_TEXT_CHARS. */
  readonly maxChunkTextChars?: number;
  /** Most engine results that go into one sealed `items` chunk. Default DEFAULT_MAX_ITEMS_PER_CHUNK. */
  readonly maxItemsPerChunk?: number;
  /**
   * How long writing the sealed error report (after a deadline or an engine error) may wait
   * for the peer. Default DEFAULT_REPORT_GRACE_MS. A peer that never reads cannot hold the
   * request (and its in-flight slot) past the deadline plus this grace.
   */
  readonly reportGraceMs?: number;
  /**
   * Pad response chunk plaintexts to size buckets (PROTOCOL.md section 4, "Padding") for
   * clients that declared the `pad` capability. Default true.
   */
  readonly padResponses?: boolean;
  /** Client API keys and per-key quotas (`serve --client-keys`); absent: no key required, any key ignored. */
  readonly clientKeys?: ClientKeyTable;
  /** Protocol v2 sessions; absent: session opens and requests are refused VERSION_UNSUPPORTED. */
  readonly sessions?: SessionTable;
  /**
   * The output guard's policy for every answer (src/guard/, docs/GUARD.md); a request's
   * `params.guard` or a collection may make it stricter. Default DEFAULT_GUARD_POLICY (redact).
   */
  readonly guardPolicy?: GuardPolicy;
  /** The guard's tagger model (src/guard/tagger.ts), next to its rules. */
  readonly guardTagger?: Tagger;
  /** Fleet keys: this replica's statement for the final chunks of clients that declared `replica` (src/protocol/replica.ts). */
  readonly replicaStatements?: { replicaStatement(gen: KeyGeneration): Promise<ReplicaStatement> };
}

/** Most engine results sealed together in one `items` chunk (`HandlerDeps.maxItemsPerChunk`). */
const DEFAULT_MAX_ITEMS_PER_CHUNK = 64;
/**
 * Most relayed JSON text (UTF-16 code units) gathered into one `json` chunk
 * (`HandlerDeps.maxChunkTextChars`): 1 Mi units is at most 3 MiB of UTF-8, so with one more
 * engine batch (64 Ki units) a chunk stays under the client's 4 MiB chunk limit.
 */
const DEFAULT_MAX_CHUNK_TEXT_CHARS = 1 << 20;
/** Time the error report may take to write (`HandlerDeps.reportGraceMs`, ServerLimits.reportGraceMs). */
const DEFAULT_REPORT_GRACE_MS = 5_000;

const TURN_END: unique symbol = Symbol('turn end');
interface TurnEnd {
  /** Resolves at the end of the current event-loop turn (after its microtasks and I/O callbacks). */
  readonly promise: Promise<typeof TURN_END>;
  /**
   * Drops the pending immediate once the engine's output for this turn is gathered: a one-shot
   * answer (one result, then done within the same turn) must not cost the event loop an
   * extra check phase and a non-blocking poll per request.
   */
  cancel(): void;
}
function turnEnd(): TurnEnd {
  let immediate: NodeJS.Immediate | undefined;
  const promise = new Promise<typeof TURN_END>((resolve) => {
    immediate = setImmediate(resolve, TURN_END);
  });
  return { promise, cancel: () => clearImmediate(immediate) };
}

class Aborted extends Error {}

/**
 * The message of an error raised as content-free (`detail.public === true`: it names limits,
 * values, models, operations, never request data), for the sealed error chunk; else undefined.
 */
export function publicMessageOf(err: unknown): string | undefined {
  return err instanceof CloisterError && err.detail?.['public'] === true ? err.message : undefined;
}

/** Awaits `p`, or throws Aborted as soon as `signal` aborts. */
function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new Aborted());
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new Aborted());
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e instanceof Error ? e : new Error('engine rejected'));
      },
    );
  });
}

interface TurnLimits {
  /** Most results in one group. */
  readonly maxItems: number;
  /** Most JsonResults text (UTF-16 code units) in one group. */
  readonly maxTextChars: number;
  /** A stream: its first group carries only the first result (time to first token). */
  readonly stream: boolean;
}

const textChars = (v: unknown): number => (v instanceof JsonResults ? v.chars : 0);

/**
 * Pulls the engine's results and hands them to `seal` in groups: the results the engine
 * already has - those that resolve before this event-loop turn ends, e.g. every token parsed
 * from one upstream read - go together (PROTOCOL.md section 4: no added latency, one AEAD,
 * one frame). The first group of a stream carries only the first result (time to first
 * token: not sealed after up to maxItems - 1 more); later groups take what is ready. Stops at
 * `signal` (Aborted) and then stops the engine's generator without waiting on it.
 */
async function forEachTurn(
  results: AsyncIterable<unknown>,
  limits: TurnLimits,
  signal: AbortSignal,
  seal: (items: unknown[], first: boolean) => Promise<void>,
): Promise<void> {
  const iterator = results[Symbol.asyncIterator]();
  try {
    let next = iterator.next();
    let done = false;
    let first = true;
    while (!done) {
      const step = await raceAbort(next, signal);
      if (step.done === true) break;
      const items: unknown[] = [step.value];
      let chars = textChars(step.value);
      const limit = first && limits.stream ? 1 : limits.maxItems;
      const turn = turnEnd();
      try {
        for (;;) {
          next = iterator.next();
          if (items.length >= limit || chars >= limits.maxTextChars) break;
          const more = await raceAbort(Promise.race([next, turn.promise]), signal);
          if (more === TURN_END) break;
          if (more.done === true) {
            done = true;
            break;
          }
          items.push(more.value);
          chars += textChars(more.value);
        }
      } finally {
        turn.cancel();
      }
      await seal(items, first);
      first = false;
    }
  } finally {
    // Stop the engine's generator (it also sees `signal`); never wait on a stuck engine.
    if (signal.aborted) void Promise.resolve(iterator.return?.()).catch(() => undefined);
  }
}

/** The log fields every line about one request carries (content-free). */
function logBase(ctx: RequestContext, body: Uint8Array): { requestId: ServerRequestId; conn: number; sid?: number; bytesIn: number } {
  return { requestId: newServerRequestId(), conn: ctx.conn, ...(ctx.sid === undefined ? {} : { sid: ctx.sid }), bytesIn: body.byteLength };
}
type LogBase = ReturnType<typeof logBase>;

/** What the server enforced for a routed request, and where the leaf goes (receipts v2). */
function receiptV2Context(key: KeyGeneration, router: EngineRouter, engine: Engine, req: SealedRequest, receivedAt: number, session?: { readonly s: ServerSession; readonly seq: number }): ReceiptV2WriterContext {
  if (req.salt === undefined) throw new CloisterError('INTERNAL', 'receipts v2 without a salt');
  // The model the request names (for `rag`, the generative model that answers; the routed
  // engine is the collections engine).
  const info = router.model(req.model);
  const id = engine.identity?.();
  return {
    salt: req.salt,
    log: key.receiptLog,
    model: { name: info.name, digest: Uint8Array.from(info.digest) },
    policy: {
      retention: 'none',
      engine: id === undefined ? engine.kind : `${engine.kind} ${id.kind} ${id.model}${id.imageDigest === undefined ? '' : ` ${id.imageDigest}`}`.slice(0, 256),
      route: engine.kind === 'onnx' ? 'local' : engine.kind,
    },
    receivedAt,
    withProof: req.caps?.includes(RECEIPT_PROOF_CAPABILITY) === true,
    now: Date.now,
    // The session's tree head is signed at its end (SessionTable) when it wrote any leaf.
    ...(session === undefined ? {} : { session: sessionCommitment(session.s.keys.receiptSalt, session.seq), onAppend: () => session.s.receipts++ }),
  };
}

/** A request that could not be opened: a plaintext coded error (crypto failures read DECRYPT_FAILED). */
function reject(deps: HandlerDeps, base: LogBase, started: number, out: ResponseOut, err: unknown): void {
  const code = asCloisterError(err, 'DECRYPT_FAILED').code;
  deps.stats.count(code);
  deps.logger.log('info', 'request.rejected', { ...base, code });
  deps.stats.recordRequest(OP_NONE, code, (performance.now() - started) / 1000);
  out.fail(wireCodeOf(code));
}

export async function handleSealedRequest(deps: HandlerDeps, body: Uint8Array, out: ResponseOut, ctx: RequestContext): Promise<void> {
  const started = performance.now();
  const base = logBase(ctx, body);
  deps.stats.sealedRequestsReceived++;
  let opened: OpenedRequest<KeyGeneration>;
  try {
    opened = openRequest((keyId, suite) => deps.keys.lookup(keyId, suite), body, { maxMessageBytes: deps.maxRequestBytes });
  } catch (err) {
    reject(deps, base, started, out, err);
    return;
  }
  await serve(deps, opened, out, ctx, base, started, { replay: true });
}

/**
 * A request of a protocol v2 session (src/protocol/session.ts): the session's keys open it
 * (no public-key work), its sequence number is its replay defence (no global window). A
 * session that ended (key rotation, age, bytes) answers, sealed, SESSION_EXPIRED without
 * running anything: the client knows for sure the request did not run, and sends it again in
 * a new session. An unknown session is a plaintext SESSION_UNKNOWN.
 */
export async function handleSessionRequest(deps: HandlerDeps, body: Uint8Array, out: ResponseOut, ctx: RequestContext): Promise<void> {
  const started = performance.now();
  const base = logBase(ctx, body);
  deps.stats.sealedRequestsReceived++;
  const sessions = deps.sessions;
  let opened: OpenedRequest<KeyGeneration> & { readonly seq: number };
  let session: ServerSession | undefined;
  try {
    if (sessions === undefined) throw new CloisterError('VERSION_UNSUPPORTED', 'this server has no sessions');
    session = sessions.get(parseSessionRequestHeader(body).id);
    if (session === undefined) throw new CloisterError('SESSION_UNKNOWN');
    opened = openSessionRequest(session, session.generation, body, { maxMessageBytes: deps.maxRequestBytes });
  } catch (err) {
    reject(deps, base, started, out, err);
    return;
  }
  const ended = sessions.endReason(session);
  const bytesOut = await serve(deps, opened, out, ctx, { ...base, session: session.logId }, started, { replay: false, session: { s: session, seq: opened.seq }, ...(ended === undefined ? {} : { ended }) });
  sessions.account(session, body.byteLength + bytesOut);
}

/**
 * Opens a protocol v2 session: a one-shot sealed request to the attested key whose answer,
 * sealed, carries the session id and the server's ephemeral share. Every failure is a
 * plaintext coded error (OVERLOADED when maxSessions are open); nothing runs.
 */
export async function handleSessionOpen(deps: HandlerDeps, body: Uint8Array, out: ResponseOut, ctx: RequestContext): Promise<void> {
  const started = performance.now();
  const base = logBase(ctx, body);
  let bytes: readonly Uint8Array[];
  let logId: number;
  try {
    const sessions = deps.sessions;
    if (sessions === undefined) throw new CloisterError('VERSION_UNSUPPORTED', 'this server has no sessions');
    let generation: KeyGeneration | undefined;
    const opened = openChunkedRequest(
      (keyId, suite) => {
        generation = deps.keys.lookup(keyId, suite);
        return generation.recipient;
      },
      body,
      { maxMessageBytes: OPEN_MAX_BYTES },
    );
    if (generation === undefined) throw new CloisterError('INTERNAL', 'request opened without a key lookup');
    const { reply, session } = sessions.open(generation, opened.suite, opened.plaintext, ctx.source);
    logId = session.logId;
    bytes = [opened.response.start(), opened.response.sealFinal(reply)];
  } catch (err) {
    const code = asCloisterError(err, 'DECRYPT_FAILED').code;
    deps.stats.count(code);
    deps.logger.log('info', 'session.rejected', { ...base, code, durationMs: Math.round(performance.now() - started) });
    out.fail(wireCodeOf(code));
    return;
  }
  deps.logger.log('info', 'session.open', { ...base, session: logId, durationMs: Math.round(performance.now() - started) });
  try {
    for (const b of bytes) {
      const wait = out.write(b);
      if (wait !== undefined) await raceAbort(wait, ctx.signal);
    }
    out.end();
  } catch {
    // the client went away; its session expires unused
  }
}

/** Serves an opened request (decode, checks, engine, sealed answer); returns the bytes written. */
async function serve(
  deps: HandlerDeps,
  opened: OpenedRequest<KeyGeneration>,
  out: ResponseOut,
  ctx: RequestContext,
  base: LogBase & { session?: number },
  started: number,
  options: { readonly replay: boolean; readonly ended?: string; readonly session?: { readonly s: ServerSession; readonly seq: number } },
): Promise<number> {
  deps.stats.requestsOpened++;
  const receivedAt = Date.now();
  const writer = opened.writer;
  let bytesOut = 0;

  const deadline = startDeadline(deps.requestTimeoutMs, ctx.signal);
  const signal = deadline.signal;

  // Engine output stops at the deadline or on cancel; the error report after a deadline is
  // still written, until a client cancel or disconnect, or reportGraceMs: a peer that does
  // not read must not keep the request open.
  const write = async (bytes: Uint8Array, until: AbortSignal): Promise<void> => {
    bytesOut += bytes.byteLength;
    // As raceAbort would: nothing more is written once `until` aborted.
    if (until.aborted) throw new Aborted();
    const wait = out.write(bytes);
    if (wait !== undefined) await raceAbort(wait, until);
  };
  const end = async (until: AbortSignal): Promise<void> => {
    await write(writer.end(), until);
    out.end();
  };

  let code: ErrorCode | undefined;
  // The metrics label: an operation from the closed list once the request decoded, else OP_NONE.
  let op: string = OP_NONE;
  let reportDeadline: Deadline | undefined;
  let guarded: GuardedResults | undefined;
  try {
    await write(writer.start(), signal);
    if (options.ended !== undefined) {
      throw new CloisterError('SESSION_EXPIRED', `the session ended (${options.ended}); open a new one`, { detail: { public: true } });
    }
    const req = opened.decode({ maxRequestBytes: deps.maxRequestBytes });
    op = req.op;
    writer.padChunks(deps.padResponses !== false && req.caps?.includes('pad') === true);
    // A fleet replica names itself in the final chunk (its own receipt key, bound by its
    // statement): by digest when the client listed the statement as one it verified before.
    // First, so that refusals below (replay, key, routing) carry a receipt the client can check.
    if (opened.key.replica !== undefined && req.caps?.includes(REPLICA_CAPABILITY) === true && deps.replicaStatements !== undefined) {
      const statement = await deps.replicaStatements.replicaStatement(opened.key);
      const known = req.replicas?.some((d) => timingSafeEqualBytes(d, statement.digest)) === true;
      writer.replica(known ? { digest: statement.digest } : { evidence: statement.evidence });
    }
    // The timestamp first (cheap, records nothing), then routing; the id is recorded only
    // for a request that will be served, so requests for models or operations that do not
    // exist cannot fill the replay window.
    // Session requests too (no record, O(1)): a host cannot hold one back and deliver it later
    // than replayWindowMs (PROTOCOL.md section 11, "Replay").
    deps.replay.checkTimestamp(req.ts);
    // Client API keys (src/server/client-keys.ts): before routing and the replay record, so
    // requests without a valid key cost no more than a hash. Logs name the key id only.
    if (deps.clientKeys !== undefined) Object.assign(base, { clientKey: deps.clientKeys.authorize(req.key) });
    const engine = deps.router.route(req.op, req.model);
    // In a session the sequence number already refused any replay (no global window).
    if (options.replay) deps.replay.check(req.id, req.ts, ctx.source);
    // Receipts v2 (PROTOCOL.md section 12): the client sent a salt and the receipt2 capability.
    // A session request's leaf names its session by a salted commitment (sessionCommitment).
    if (req.salt !== undefined) writer.receiptV2(receiptV2Context(opened.key, deps.router, engine, req, receivedAt, options.session));
    const json = req.caps?.includes('json') === true;
    // The output guard (src/guard/output.ts) sits between the engine and the sealing; its
    // `guard` param is the server's, not the engine's.
    const { guard: requestedGuard, ...params } = req.params ?? {};
    const policy = requestPolicy(deps.guardPolicy ?? DEFAULT_GUARD_POLICY, requestedGuard);
    guarded = guardResults(req.op, req.stream, engine.run({ op: req.op, model: req.model, input: req.input, params, stream: req.stream }, { signal }), policy, {
      ...(deps.guardTagger === undefined ? {} : { tagger: deps.guardTagger }),
      signal,
    });
    const limits = { maxItems: deps.maxItemsPerChunk ?? DEFAULT_MAX_ITEMS_PER_CHUNK, maxTextChars: deps.maxChunkTextChars ?? DEFAULT_MAX_CHUNK_TEXT_CHARS, stream: req.stream };
    await forEachTurn(guarded.results, limits, signal, async (items, first) => {
      // Engines yield plain JSON-like values (encodeCbor rejects anything else: ENGINE_FAILED)
      // or JsonResults, relayed as JSON text in a `json` chunk (PROTOCOL.md section 4), only
      // for clients that declared them (PROTOCOL.md section 4, capabilities).
      await write(writer.results(items, { json }), signal);
      // Time to first token: the first chunk of a stream leaves now, not with the rest of
      // what this turn produces (an engine may have many more results ready).
      if (first && req.stream) out.flush?.();
    });
    // The guard's verdict and the engine's facts, covered by the receipt (PROTOCOL.md section
    // 4, `report` chunks): only when there is something to report and the client reads it.
    const report = guarded.report();
    if (req.caps?.includes('report') === true && (report.guard.action !== 'pass' || Object.keys(report.facts).length > 0)) {
      await write(writer.data(encodeResponseChunk({ t: 'report', report: { guard: { ...report.guard }, ...(report.facts as Record<string, CborInput>) } })), signal);
    }
    await end(signal);
  } catch (err) {
    if (ctx.signal.aborted) {
      code = 'CANCELLED';
    } else {
      code = deadline.timedOut ? 'TIMEOUT' : err instanceof Aborted ? 'CANCELLED' : asCloisterError(err, 'ENGINE_FAILED').code;
      reportDeadline = startDeadline(deps.reportGraceMs ?? DEFAULT_REPORT_GRACE_MS, ctx.signal);
      const report = reportDeadline.signal;
      try {
        // The message is the generic text of the code (an engine error message could echo
        // input), unless the error was raised as content-free (`detail.public`): limits and
        // their values, the models and operations on offer.
        const wire = wireCodeOf(code);
        const message = (err instanceof CloisterError && err.code === wire ? publicMessageOf(err) : undefined) ?? ERROR_CODES[wire];
        if (!writer.started) await write(writer.start(), report);
        await write(writer.error(wire, message), report);
        await end(report);
      } catch {
        // Not written within the grace (or the client went away): the transport closes the
        // response; the outcome stays `code` unless the client cancelled.
        code = ctx.signal.aborted ? 'CANCELLED' : code;
      }
    }
  } finally {
    deadline.dispose();
    reportDeadline?.dispose();
  }
  if (guarded !== undefined && (GUARDED_OPERATIONS as ReadonlySet<string>).has(op)) {
    const g = guarded.report().guard;
    deps.stats.guardActions.set(g.action, (deps.stats.guardActions.get(g.action) ?? 0) + 1);
    for (const [t, n] of Object.entries(g.found)) deps.stats.guardFindings.set(t, (deps.stats.guardFindings.get(t) ?? 0) + n);
  }
  const chunks = writer.chunks;

  const elapsedMs = performance.now() - started;
  const durationMs = Math.round(elapsedMs);
  deps.stats.recordRequest(op, code ?? CODE_OK, elapsedMs / 1000);
  if (code === undefined) {
    deps.stats.requestsCompleted++;
    deps.logger.log('info', 'request.done', { ...base, bytesOut, chunks, durationMs });
  } else {
    deps.stats.count(code);
    if (code === 'CANCELLED') deps.stats.requestsCancelled++;
    else deps.stats.requestsFailed++;
    deps.logger.log(code === 'CANCELLED' ? 'info' : 'warn', code === 'CANCELLED' ? 'request.cancelled' : 'request.failed', {
      ...base, code, bytesOut, chunks, durationMs,
    });
  }
  return bytesOut;
}
