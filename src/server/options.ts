/**
 * Server resource limits. Every limit is a named option with a safe default; each is
 * exercised by a test in test/server or test/e2e.
 */
import { CloisterError } from '../errors.js';

export interface ServerLimits {
  /** Largest WebSocket message accepted (ws `maxPayload`); bigger frames close the connection (1009). */
  readonly maxFrameBytes: number;
  /** Largest sealed request body accepted over HTTP (413 LIMIT_EXCEEDED beyond). */
  readonly maxRequestBytes: number;
  /** Concurrent requests on one WebSocket connection (LIMIT_EXCEEDED beyond). */
  readonly maxInFlightPerConnection: number;
  /** Concurrent requests over all connections and HTTP (OVERLOADED beyond). */
  readonly maxInFlightTotal: number;
  /** Deadline for one request, engine time included (TIMEOUT, sealed). */
  readonly requestTimeoutMs: number;
  /** A WebSocket connection with no frames and no request in flight for this long is closed. */
  readonly idleTimeoutMs: number;
  /** Evidence requests carrying a nonce (each one costs an attestation), over the whole server. */
  readonly evidenceRequestsPerMinute: number;
  /** The same, per connection. */
  readonly evidenceRequestsPerMinutePerConnection: number;
  /**
   * The same, per source address (src/server/sources.ts), over all its connections: a client
   * that opens a new connection per request gets no more than this, and one source cannot
   * drain the server-wide budget.
   */
  readonly evidenceRequestsPerMinutePerSource: number;
  /**
   * Evidence without a nonce is attested once and served from a cache; it is attested anew
   * when older than this, so cached evidence stays well inside a verifier's maximum age
   * (the SDK's default is 5 minutes).
   */
  readonly evidenceRefreshMs: number;
  /**
   * A connection that has not sent a complete request head (or WebSocket upgrade) this long
   * after it was accepted is destroyed; so is one whose request head takes longer (node's
   * headersTimeout). Silent connections cannot hold connection slots.
   */
  readonly connectionHeadTimeoutMs: number;
  /** An idle HTTP keep-alive connection is closed after this long (node's keepAliveTimeout). */
  readonly keepAliveTimeoutMs: number;
  /**
   * Concurrent connections from one source address (src/server/sources.ts). At the limit, the
   * source's oldest connection that has not sent a request head yet is closed to make room;
   * when every one of them has, the new connection is answered 503 OVERLOADED and closed. Not
   * applied to Unix-socket peers (no address). (maxConnections makes room the same way.)
   */
  readonly maxConnectionsPerSource: number;
  /**
   * Sealed request bodies being received at once over HTTP, over the whole server. Bodies
   * in progress are not counted in flight (maxInFlightTotal counts work, from the moment a
   * body is complete); beyond this, a new upload is refused 503 OVERLOADED before it is read.
   */
  readonly maxUploadsInProgress: number;
  /** The same, per source address (not applied to Unix-socket peers). */
  readonly maxUploadsPerSource: number;
  /**
   * At maxUploadsInProgress or maxUploadsPerSource, the oldest upload (of the same source, or
   * of any at the global cap) that has been in progress this long is cut (408 TIMEOUT) to make
   * room for the new one; only when none is that old is the new upload refused.
   */
  readonly uploadEvictAfterMs: number;
  /**
   * A sealed request body must arrive completely within this time after its head; a slower
   * upload is answered 408 TIMEOUT and its connection closed.
   */
  readonly bodyTimeoutMs: number;
  /** Most sources (client addresses) tracked for the per-source limits; beyond, new ones are limited together. */
  readonly maxTrackedSources: number;
  /**
   * Concurrent client connections, HTTP and WebSocket together (a WebSocket is an upgraded
   * HTTP connection, counted once), from accept to close; an idle HTTP keep-alive connection
   * counts until the server's keep-alive timeout closes it. A connection accepted beyond the
   * limit is answered 503 OVERLOADED on its first request or upgrade, then closed. Sockets
   * waiting for that answer are bounded too: beyond 2 x maxConnections sockets in all, new
   * ones are closed at accept without an answer, so idle sockets cannot exhaust descriptors.
   */
  readonly maxConnections: number;
  /**
   * Malformed frames (undecodable, text, or a message only the server may send) one
   * WebSocket connection may send. Each is answered with a coded error; one more closes the
   * connection with 1008 (policy violation, RFC 6455 section 7.4.1), reason LIMIT_EXCEEDED.
   */
  readonly maxBadFramesPerConnection: number;
  /** Backpressure high-water mark: bytes queued to a peer before the server stops pulling engine output and reading its frames. */
  readonly highWaterMarkBytes: number;
  /**
   * Replay window: how old a request's timestamp may be. Its id is remembered until the
   * timestamp leaves this window (ts + replayWindowMs), after which the timestamp check
   * refuses a replay.
   */
  readonly replayWindowMs: number;
  /**
   * Replay window: how far in the future (client clock ahead of the server's) a request's
   * timestamp may be. Ids live at most replayWindowMs + replayFutureSkewMs, so a client
   * cannot make entries live longer by dating requests ahead.
   */
  readonly replayFutureSkewMs: number;
  /** Replay window: most request ids remembered (OVERLOADED beyond). */
  readonly maxReplayEntries: number;
  /**
   * Replay window: most of them one network source holds (RATE_LIMITED beyond), so that one
   * client cannot fill the window and lock the others out. Not applied to LOCAL_SOURCE.
   */
  readonly maxReplayEntriesPerSource: number;
  /**
   * Most engine results sealed together in one response chunk. Results an engine has at the
   * same moment (e.g. the tokens of one upstream read) share one chunk and one frame.
   */
  readonly maxItemsPerChunk: number;
  /**
   * Most relayed JSON text (an upstream engine's events, in UTF-16 code units) gathered into
   * one response chunk; keeps every chunk under the client's chunk-size limit.
   */
  readonly maxChunkTextChars: number;
  /**
   * After a request's deadline (or an engine error), how long writing its sealed error report
   * may wait for the peer. A request ends by requestTimeoutMs + reportGraceMs whatever the
   * peer does, so a client that never reads cannot hold in-flight slots; over HTTP a response
   * not fully sent by then has its socket destroyed.
   */
  readonly reportGraceMs: number;
  /**
   * A WebSocket connection with bytes queued to the peer and none of them written for this
   * long (the peer stopped reading) is closed (1008, reason TIMEOUT) and its socket destroyed,
   * which aborts its requests and frees their slots.
   */
  readonly sendStallTimeoutMs: number;
  /**
   * Protocol v2 sessions open at once (src/server/sessions.ts). At the limit, sessions past
   * their age or idle bound are dropped first; when none is, a new session is refused
   * OVERLOADED (the client then sends that request one-shot, v1).
   */
  readonly maxSessions: number;
  /**
   * Protocol v2 sessions one network source (src/server/sources.ts) may hold at once, so a
   * single unauthenticated client cannot fill maxSessions; past it, its opens are refused
   * OVERLOADED (its requests go one-shot) while other sources still open sessions. Not
   * applied to LOCAL_SOURCE (a Unix-socket peer, e.g. the relay without PROXY protocol).
   */
  readonly maxSessionsPerSource: number;
  /** A session ends this long after it opened (later requests: sealed SESSION_EXPIRED). */
  readonly sessionMaxAgeMs: number;
  /** A session ends once this many bytes (sealed requests and responses) went through it. */
  readonly sessionMaxBytes: number;
  /** A session unused this long is forgotten (later requests: SESSION_UNKNOWN). */
  readonly sessionIdleTimeoutMs: number;
}

export const DEFAULT_LIMITS: ServerLimits = Object.freeze({
  maxFrameBytes: 1024 * 1024,
  maxRequestBytes: 1024 * 1024,
  maxInFlightPerConnection: 16,
  maxInFlightTotal: 256,
  requestTimeoutMs: 60_000,
  idleTimeoutMs: 120_000,
  evidenceRequestsPerMinute: 600,
  evidenceRequestsPerMinutePerConnection: 60,
  evidenceRequestsPerMinutePerSource: 60,
  evidenceRefreshMs: 60_000,
  connectionHeadTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5_000,
  maxConnectionsPerSource: 64,
  maxUploadsInProgress: 64,
  maxUploadsPerSource: 8,
  uploadEvictAfterMs: 1_000,
  bodyTimeoutMs: 10_000,
  maxTrackedSources: 65_536,
  maxConnections: 1024,
  maxBadFramesPerConnection: 16,
  highWaterMarkBytes: 1024 * 1024,
  replayWindowMs: 60_000,
  replayFutureSkewMs: 30_000,
  maxReplayEntries: 100_000,
  maxReplayEntriesPerSource: 25_000,
  maxItemsPerChunk: 64,
  maxChunkTextChars: 1 << 20,
  reportGraceMs: 5_000,
  sendStallTimeoutMs: 30_000,
  maxSessions: 4096,
  maxSessionsPerSource: 64,
  sessionMaxAgeMs: 30 * 60_000,
  sessionMaxBytes: 1 << 30,
  sessionIdleTimeoutMs: 5 * 60_000,
});

export function resolveLimits(partial: Partial<ServerLimits> = {}): ServerLimits {
  const out: Record<string, number> = { ...DEFAULT_LIMITS };
  for (const [k, v] of Object.entries(partial)) {
    if (v === undefined) continue;
    if (!Object.prototype.hasOwnProperty.call(DEFAULT_LIMITS, k)) {
      throw new CloisterError('CONFIG_INVALID', `unknown server limit '${k}'`);
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) {
      throw new CloisterError('CONFIG_INVALID', `server limit '${k}' must be a positive integer`);
    }
    out[k] = v;
  }
  return Object.freeze(out) as unknown as ServerLimits;
}
