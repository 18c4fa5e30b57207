/**
 * The server's only logger. Structured JSON lines whose fields are typed so that request or
 * response content cannot be passed: events come from a closed list, ids are branded values
 * that only this module (or the transport's counter) mints, and every other field is a
 * finite number or an error code. The same checks run at runtime, so a caller that bypasses
 * the types (plain JS, casts) still cannot smuggle a string into a line.
 */
import { toHex } from '../core/hex.js';
import { randomBytesPooled } from '../crypto/random.js';
import { isErrorCode } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { DEFAULT_LIMITS } from './options.js';
import type { ServerLimits } from './options.js';

const LOG_EVENTS = [
  'server.listening',
  'server.closed',
  'server.platform',
  'conn.open',
  'conn.close',
  'conn.rejected',
  'conn.idle-timeout',
  'conn.head-timeout',
  'conn.evicted',
  'conn.backpressure',
  'conn.stalled',
  'frame.rejected',
  'evidence.served',
  'evidence.rejected',
  'request.rejected',
  'request.done',
  'request.failed',
  'request.cancelled',
  'key.rotated',
  'key.retired',
  'session.open',
  'session.rejected',
  'collections.loaded',
  'fleet.refreshed',
  'fleet.refresh-failed',
] as const;
type LogEvent = (typeof LOG_EVENTS)[number];

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

declare const requestIdBrand: unique symbol;
/** A server-side random id for one request: never the client's id, never derived from content. */
export type ServerRequestId = string & { readonly [requestIdBrand]: true };

/** Mints a fresh server-side request id (8 random bytes, hex). */
export function newServerRequestId(): ServerRequestId {
  // Pooled: a randomBytes call per request costs more than the id is worth (src/crypto/random.ts).
  return toHex(randomBytesPooled(8)) as ServerRequestId;
}

export interface LogFields {
  readonly requestId?: ServerRequestId;
  /** Connection counter assigned by the server. */
  readonly conn?: number;
  /** Stream id on the connection (client-chosen integer, not content). */
  readonly sid?: number;
  readonly keyId?: number;
  readonly code?: ErrorCode;
  /** Rounded up to a power of two (at least 256) before it is written: `logSizeBucket`. */
  readonly bytesIn?: number;
  /** Rounded up to a power of two (at least 256) before it is written: `logSizeBucket`. */
  readonly bytesOut?: number;
  readonly chunks?: number;
  readonly durationMs?: number;
  readonly inFlight?: number;
  readonly connections?: number;
  readonly port?: number;
  readonly closeCode?: number;
  /** Which server limit refused something: a name from ServerLimits, never free text. */
  readonly limit?: keyof ServerLimits;
  /** The id of the client API key a request carried (src/server/client-keys.ts), never the key. */
  readonly clientKey?: string;
  /** A protocol v2 session: the server's counter for it (never the session id). */
  readonly session?: number;
  /** Sealed collections at start (src/collections/): counts only. */
  readonly collections?: number;
  readonly documents?: number;
  readonly corrupt?: number;
  readonly truncated?: number;
  readonly compacted?: number;
  /** Collections older than their rollback counter, and counted ones whose file is gone. */
  readonly rolledBack?: number;
  readonly missing?: number;
}

const NUMERIC_FIELDS: ReadonlySet<string> = new Set([
  'conn', 'sid', 'session', 'keyId', 'bytesIn', 'bytesOut', 'chunks', 'durationMs', 'inFlight', 'connections', 'port', 'closeCode',
  'collections', 'documents', 'corrupt', 'truncated', 'compacted', 'rolledBack', 'missing',
]);
/** Size fields: a log line never holds an exact request or response size (`logSizeBucket`). */
const SIZE_FIELDS: ReadonlySet<string> = new Set(['bytesIn', 'bytesOut']);
const REQUEST_ID = /^[0-9a-f]{16}$/;

/**
 * What the log records of a size: 0, or the power of two at or above it, at least 256. Exact
 * sealed sizes would tell answers apart (a classifier's labels differ in length) to anyone
 * who reads the log; a power of two is coarser than the padding buckets on the wire
 * (PROTOCOL.md section 4, "Padding"), so the log tells no more than the wire.
 */
function logSizeBucket(n: number): number {
  if (n <= 0) return 0;
  let b = 256;
  while (b < n && b < Number.MAX_SAFE_INTEGER / 2) b *= 2;
  return b;
}
const CLIENT_KEY_ID = /^[A-Za-z0-9._-]{1,64}$/;
const LEVELS: ReadonlySet<string> = new Set(['debug', 'info', 'warn', 'error']);
const EVENTS: ReadonlySet<string> = new Set(LOG_EVENTS);
const LIMIT_NAMES: ReadonlySet<string> = new Set(Object.keys(DEFAULT_LIMITS));

type LogSink = (line: string) => void;

export interface Logger {
  log(level: LogLevel, event: LogEvent, fields?: LogFields): void;
}

/**
 * A JSON-lines logger writing to `sink` (default: stderr). Fields that fail the runtime type
 * checks are dropped and counted in `dropped`, never printed.
 */
export function createLogger(options: { sink?: LogSink; minLevel?: LogLevel } = {}): Logger {
  const sink = options.sink ?? ((line: string) => void process.stderr.write(line));
  const order: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };
  const min = order[options.minLevel ?? 'info'];
  return {
    log(level, event, fields = {}) {
      if (!LEVELS.has(level) || !EVENTS.has(event) || order[level] < min) return;
      const out: Record<string, string | number> = { ts: new Date().toISOString(), level, event };
      let dropped = 0;
      for (const [k, v] of Object.entries(fields)) {
        if (v === undefined) continue;
        if (NUMERIC_FIELDS.has(k) && typeof v === 'number' && Number.isFinite(v)) out[k] = SIZE_FIELDS.has(k) ? logSizeBucket(v) : v;
        else if (k === 'code' && isErrorCode(v)) out[k] = v;
        else if (k === 'requestId' && typeof v === 'string' && REQUEST_ID.test(v)) out[k] = v;
        else if (k === 'limit' && typeof v === 'string' && LIMIT_NAMES.has(v)) out[k] = v;
        else if (k === 'clientKey' && typeof v === 'string' && CLIENT_KEY_ID.test(v)) out[k] = v;
        else dropped++;
      }
      if (dropped > 0) out['dropped'] = dropped;
      sink(`${JSON.stringify(out)}\n`);
    },
  };
}

/** A logger that writes nothing (tests, embedding). */
export const silentLogger: Logger = { log() {} };
