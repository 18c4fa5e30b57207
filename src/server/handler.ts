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
import { MAX_RESPONSE_CHUNK_LENGTH, openChunkedRequest } from '../protocol/chunked.js';
import type { ClientKeyTable } from './client-keys.js';
import { JsonResults, ReceiptHasher, decodeSealedRequest, encodeResponseChunk, encodeResultsChunk, padChunkPlaintext } from '../protocol/messages.js';
import type { KeyGeneration, KeyManager } from './keys.js';
import type { ReplayWindow } from './replay.js';
import type { EngineRouter } from './router.js';
import type { Logger } from './log.js';
import { newServerRequestId } from './log.js';
import { CODE_OK, OP_NONE } from './stats.js';
import type { ServerStats } from './stats.js';
import { startDeadline } from '../core/deadline.js';
import type { Deadline } from '../core/deadline.js';
import { DEFAULT_GUARD_POLICY } from '../guard/policy.js';
import type { GuardPolicy } from '../guard/policy.js';
import { GUARDED_OPERATIONS, guardResults, requestPolicy } from '../guard/output.js';
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

interface RequestContext {
  readonly conn: number;
  readonly sid?: number;
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
  /**
   * The output guard's policy for every answer (src/guard/, docs/GUARD.md); a request's
   * `params.guard` or a collection may make it stricter. Default DEFAULT_GUARD_POLICY (redact).
   */
  readonly guardPolicy?: GuardPolicy;
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
function publicMessageOf(err: unknown): string | undefined {
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

export async function handleSealedRequest(deps: HandlerDeps, body: Uint8Array, out: ResponseOut, ctx: RequestContext): Promise<void> {
  const requestId = newServerRequestId();
  const started = performance.now();
  const base = { requestId, conn: ctx.conn, ...(ctx.sid === undefined ? {} : { sid: ctx.sid }), bytesIn: body.byteLength };
  deps.stats.sealedRequestsReceived++;

  let opened: ReturnType<typeof openChunkedRequest>;
  // The generation that opened the request also signs its receipt: looked up once, here. A
  // second lookup could throw KEY_STALE (grace ended in between) after the request was opened,
  // outside any error path, and the client would get no answer.
  let generation: KeyGeneration | undefined;
  try {
    opened = openChunkedRequest(
      (keyId, suite) => {
        generation = deps.keys.lookup(keyId, suite);
        return generation.recipient;
      },
      body,
      { maxMessageBytes: deps.maxRequestBytes },
    );
    if (generation === undefined) throw new CloisterError('INTERNAL', 'request opened without a key lookup');
  } catch (err) {
    const code = asCloisterError(err, 'DECRYPT_FAILED').code;
    deps.stats.count(code);
    deps.logger.log('info', 'request.rejected', { ...base, code });
    deps.stats.recordRequest(OP_NONE, code, (performance.now() - started) / 1000);
    out.fail(wireCodeOf(code));
    return;
  }
  deps.stats.requestsOpened++;
  const signer = generation;
  const sealer = opened.response;
  const receipt = new ReceiptHasher(opened.plaintext);
  let bytesOut = 0;
  let chunks = 0;

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
  // Set once the request decoded and declared `pad`: every later chunk with content (data,
  // items, json, error) is padded to its size bucket. The final `end` chunk carries only the
  // 64-byte receipt, the same length for every answer, so it is not padded.
  let pad = false;
  const sealData = async (unpadded: Uint8Array, until: AbortSignal): Promise<void> => {
    const plaintext = pad ? padChunkPlaintext(unpadded, MAX_RESPONSE_CHUNK_LENGTH - 16) : unpadded;
    if (plaintext.byteLength + 16 > MAX_RESPONSE_CHUNK_LENGTH) {
      // The client opens no bigger chunk (one limit for both sides): refuse, sealed, by name.
      throw new CloisterError('LIMIT_EXCEEDED', `a result of ${plaintext.byteLength} bytes exceeds the response chunk limit (MAX_RESPONSE_CHUNK_LENGTH = ${MAX_RESPONSE_CHUNK_LENGTH} bytes)`, {
        detail: { limit: 'MAX_RESPONSE_CHUNK_LENGTH', max: MAX_RESPONSE_CHUNK_LENGTH, public: true },
      });
    }
    receipt.update(plaintext);
    chunks++;
    await write(sealer.sealChunk(plaintext), until);
  };
  const sealEnd = async (until: AbortSignal): Promise<void> => {
    const signature = signer.signReceipt(receipt.message());
    await write(sealer.sealFinal(encodeResponseChunk({ t: 'end', receipt: signature })), until);
    out.end();
  };
  let responseStarted = false;

  let code: ErrorCode | undefined;
  // The metrics label: an operation from the closed list once the request decoded, else OP_NONE.
  let op: string = OP_NONE;
  let reportDeadline: Deadline | undefined;
  let guarded: GuardedResults | undefined;
  try {
    await write(sealer.start(), signal);
    responseStarted = true;
    const req = decodeSealedRequest(opened.plaintext, { maxRequestBytes: deps.maxRequestBytes });
    op = req.op;
    pad = deps.padResponses !== false && req.caps?.includes('pad') === true;
    // The timestamp first (cheap, records nothing), then routing; the id is recorded only
    // for a request that will be served, so requests for models or operations that do not
    // exist cannot fill the replay window.
    deps.replay.checkTimestamp(req.ts);
    // Client API keys (src/server/client-keys.ts): before routing and the replay record, so
    // requests without a valid key cost no more than a hash. Logs name the key id only.
    if (deps.clientKeys !== undefined) Object.assign(base, { clientKey: deps.clientKeys.authorize(req.key) });
    const engine = deps.router.route(req.op, req.model);
    deps.replay.check(req.id, req.ts);
    const json = req.caps?.includes('json') === true;
    // The output guard (src/guard/output.ts) sits between the engine and the sealing; its
    // `guard` param is the server's, not the engine's.
    const { guard: requestedGuard, ...params } = req.params ?? {};
    const policy = requestPolicy(deps.guardPolicy ?? DEFAULT_GUARD_POLICY, requestedGuard);
    guarded = guardResults(req.op, req.stream, engine.run({ op: req.op, model: req.model, input: req.input, params, stream: req.stream }, { signal }), policy);
    const iterator = guarded.results[Symbol.asyncIterator]();
    const maxItems = deps.maxItemsPerChunk ?? DEFAULT_MAX_ITEMS_PER_CHUNK;
    const maxTextChars = deps.maxChunkTextChars ?? DEFAULT_MAX_CHUNK_TEXT_CHARS;
    const textChars = (v: unknown): number => (v instanceof JsonResults ? v.chars : 0);
    try {
      let next = iterator.next();
      let done = false;
      let firstChunk = true;
      while (!done) {
        const step = await raceAbort(next, signal);
        if (step.done === true) break;
        const items: unknown[] = [step.value];
        let chars = textChars(step.value);
        // Results the engine already has - those that resolve before this event-loop turn
        // ends, e.g. every token parsed from one upstream read - are sealed together in one
        // `items` chunk (PROTOCOL.md section 4): no added latency, one AEAD, one frame.
        // The first chunk of a stream carries only the first result (time to first token:
        // not sealed after up to maxItems - 1 more); later chunks group what is ready.
        const limit = firstChunk && req.stream ? 1 : maxItems;
        const turn = turnEnd();
        try {
          for (;;) {
            next = iterator.next();
            if (items.length >= limit || chars >= maxTextChars) break;
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
        // Engines yield plain JSON-like values (encodeCbor rejects anything else: ENGINE_FAILED)
        // or JsonResults, relayed as JSON text in a `json` chunk (PROTOCOL.md section 4).
        // `json` chunks only for clients that declared them (PROTOCOL.md section 4, capabilities).
        await sealData(encodeResultsChunk(items, { json }), signal);
        // Time to first token: the first chunk of a stream leaves now, not with the rest of
        // what this turn produces (an engine may have many more results ready).
        if (firstChunk && req.stream) out.flush?.();
        firstChunk = false;
      }
    } finally {
      // Stop the engine's generator (it also sees `signal`); never wait on a stuck engine.
      if (signal.aborted) void Promise.resolve(iterator.return?.()).catch(() => undefined);
    }
    // The guard's verdict and the engine's facts, covered by the receipt (PROTOCOL.md section
    // 4, `report` chunks): only when there is something to report and the client reads it.
    const report = guarded.report();
    if (req.caps?.includes('report') === true && (report.guard.action !== 'pass' || Object.keys(report.facts).length > 0)) {
      await sealData(encodeResponseChunk({ t: 'report', report: { guard: { ...report.guard }, ...(report.facts as Record<string, CborInput>) } }), signal);
    }
    await sealEnd(signal);
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
        if (!responseStarted) {
          await write(sealer.start(), report);
          responseStarted = true;
        }
        await sealData(encodeResponseChunk({ t: 'error', code: wire, message }), report);
        await sealEnd(report);
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
}

