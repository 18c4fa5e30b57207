/**
 * The server's protocol v2 sessions (src/protocol/session.ts): bounded in number
 * (maxSessions), age (sessionMaxAgeMs), bytes (sessionMaxBytes) and idleness
 * (sessionIdleTimeoutMs), and per network source (maxSessionsPerSource); each belongs to the
 * key generation that opened it, and ends when that generation is retired (key rotation,
 * after its grace).
 *
 * An ended session stays known until it has been idle for sessionIdleTimeoutMs, so a request
 * that arrives for it is answered, sealed, SESSION_EXPIRED (the client learns for sure that
 * the request did not run, and sends it again in a new session); a forgotten one is a
 * plaintext SESSION_UNKNOWN.
 *
 * Receipts v2 (docs/PROTOCOL.md section 12): when a session ends (its age or byte bound, its
 * generation retired, idle, or the server shutting down) and it wrote any leaf, the table
 * signs its generation's tree head at once, so the session's receipts are covered by a head
 * signed no later than its end (`ReceiptLog.signHead`: no new signature when no leaf came
 * since the last head). Ended sessions are noticed at their next request, by a sweep at most
 * once per second while sessions are opened, and by a timer (`startSweeping`, every second
 * while the server listens), so an idle session's head is signed within about a second of its
 * idle bound even when no one else opens or sends.
 */
import { CloisterError } from '../errors.js';
import type { HpkeSuite } from '../crypto/hpke/suite.js';
import { acceptSessionOpen, sessionKeyOf } from '../protocol/session.js';
import type { SessionState } from '../protocol/session.js';
import type { KeyGeneration, KeyManager } from './keys.js';
import type { ServerLimits } from './options.js';
import { LOCAL_SOURCE } from './sources.js';

export interface ServerSession extends SessionState {
  readonly generation: KeyGeneration;
  /** A counter for logs (never the session id). */
  readonly logId: number;
  readonly openedAt: number;
  lastUsed: number;
  bytes: number;
  /** The network source that opened it (src/server/sources.ts), for maxSessionsPerSource. */
  readonly source: string;
  /** Receipts-v2 leaves this session's requests wrote. */
  receipts: number;
  /** Whether the end of the session was handled (its tree head signed). */
  finished: boolean;
}

type SessionLimits = Pick<ServerLimits, 'maxSessions' | 'maxSessionsPerSource' | 'sessionMaxAgeMs' | 'sessionMaxBytes' | 'sessionIdleTimeoutMs'>;

/** Most often a full table is swept for idle and old sessions. */
const SWEEP_INTERVAL_MS = 1000;

export class SessionTable {
  readonly #sessions = new Map<string, ServerSession>();
  /** Sessions held per source (LOCAL_SOURCE is not counted: not limited per source). */
  readonly #perSource = new Map<string, number>();
  #counter = 0;
  #lastSweep = -Infinity;
  #lastIdleSweep = -Infinity;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly limits: SessionLimits,
    private readonly keys: KeyManager,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.#sessions.size;
  }

  /**
   * Opens a session for the opened one-shot request `plaintext` (a session open message) and
   * returns the plaintext of the sealed answer. OVERLOADED at maxSessions, and for a source
   * (`source`, not LOCAL_SOURCE) that holds maxSessionsPerSource: no single unauthenticated
   * client can take every session of the server.
   */
  open(generation: KeyGeneration, suite: HpkeSuite, plaintext: Uint8Array, source: string = LOCAL_SOURCE): { readonly reply: Uint8Array; readonly session: ServerSession } {
    const now = this.now();
    this.#sweepEnded(now);
    const perSource = this.limits.maxSessionsPerSource;
    if (source !== LOCAL_SOURCE && (this.#perSource.get(source) ?? 0) >= perSource) this.#sweep(now, true);
    if (source !== LOCAL_SOURCE && (this.#perSource.get(source) ?? 0) >= perSource) {
      throw new CloisterError('OVERLOADED', `this source holds ${perSource} sessions (maxSessionsPerSource)`, { detail: { limit: 'maxSessionsPerSource', value: perSource } });
    }
    if (this.#sessions.size >= this.limits.maxSessions) this.#sweep(now, true);
    if (this.#sessions.size >= this.limits.maxSessions) {
      throw new CloisterError('OVERLOADED', `${this.limits.maxSessions} sessions are open (maxSessions)`, { detail: { limit: 'maxSessions', value: this.limits.maxSessions } });
    }
    const { reply, state } = acceptSessionOpen(suite, plaintext, {
      maxAgeS: Math.max(1, Math.floor(this.limits.sessionMaxAgeMs / 1000)),
      maxBytes: this.limits.sessionMaxBytes,
      idleS: Math.max(1, Math.floor(this.limits.sessionIdleTimeoutMs / 1000)),
    });
    const session: ServerSession = { ...state, generation, logId: ++this.#counter, source, openedAt: now, lastUsed: now, bytes: 0, receipts: 0, finished: false };
    this.#sessions.set(sessionKeyOf(state.keys.id), session);
    if (source !== LOCAL_SOURCE) this.#perSource.set(source, (this.#perSource.get(source) ?? 0) + 1);
    return { reply, session };
  }

  /** The session with this id, unless unknown or idle past sessionIdleTimeoutMs (then forgotten). */
  get(id: Uint8Array): ServerSession | undefined {
    const key = sessionKeyOf(id);
    const s = this.#sessions.get(key);
    if (s === undefined) return undefined;
    const now = this.now();
    if (now - s.lastUsed >= this.limits.sessionIdleTimeoutMs) {
      this.#drop(key, s);
      return undefined;
    }
    s.lastUsed = now;
    return s;
  }

  /** Why `s` takes no more requests (a limit's name, or "key rotated"), or undefined while it does. */
  endReason(s: ServerSession): string | undefined {
    const reason = this.#reason(s);
    if (reason !== undefined) this.#finish(s);
    return reason;
  }

  #reason(s: ServerSession): string | undefined {
    if (!this.keys.isLive(s.generation)) return 'key rotated';
    if (this.now() - s.openedAt >= this.limits.sessionMaxAgeMs) return `sessionMaxAgeMs = ${this.limits.sessionMaxAgeMs}`;
    if (s.bytes >= this.limits.sessionMaxBytes) return `sessionMaxBytes = ${this.limits.sessionMaxBytes}`;
    return undefined;
  }

  /** The end of a session: once, sign its generation's tree head when it wrote receipts-v2 leaves. */
  #finish(s: ServerSession): void {
    if (s.finished) return;
    s.finished = true;
    if (s.receipts === 0) return;
    try {
      s.generation.receiptLog.signHead();
    } catch {
      // Never fails the request that noticed the end: the next periodic head covers the leaves.
    }
  }

  /** Counts a request's bytes (sealed request and response) against the session. */
  account(s: ServerSession, bytes: number): void {
    s.bytes += bytes;
  }

  /** Sweeps every `intervalMs` (unref'd: never keeps the process alive) until `stopSweeping`. */
  startSweeping(intervalMs: number = SWEEP_INTERVAL_MS): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => this.#sweepEnded(this.now()), intervalMs);
    this.#timer.unref();
  }

  stopSweeping(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Forgets every session (shutdown). */
  clear(): void {
    this.stopSweeping();
    for (const s of this.#sessions.values()) this.#finish(s);
    this.#sessions.clear();
    this.#perSource.clear();
  }

  /** Sessions `source` holds now (tests, metrics). */
  heldBy(source: string): number {
    return this.#perSource.get(source) ?? 0;
  }

  #drop(key: string, s: ServerSession): void {
    this.#sessions.delete(key);
    if (s.source !== LOCAL_SOURCE) {
      const n = (this.#perSource.get(s.source) ?? 1) - 1;
      if (n <= 0) this.#perSource.delete(s.source);
      else this.#perSource.set(s.source, n);
    }
    this.#finish(s);
  }

  /** At most once per SWEEP_INTERVAL_MS: forgets idle sessions and ends those past a bound. */
  #sweepEnded(now: number): void {
    if (now - this.#lastIdleSweep < SWEEP_INTERVAL_MS) return;
    this.#lastIdleSweep = now;
    for (const [k, s] of this.#sessions) {
      if (now - s.lastUsed >= this.limits.sessionIdleTimeoutMs) {
        this.#drop(k, s);
      } else if (!s.finished && this.#reason(s) !== undefined) {
        this.#finish(s);
      }
    }
  }

  /**
   * Drops sessions idle past sessionIdleTimeoutMs, and ended ones idle for a moment (a full
   * table makes room first from those that can take no more requests anyway).
   */
  #sweep(now: number, full: boolean): void {
    if (now - this.#lastSweep < SWEEP_INTERVAL_MS) return;
    this.#lastSweep = now;
    for (const [k, s] of this.#sessions) {
      if (now - s.lastUsed >= this.limits.sessionIdleTimeoutMs || (full && this.endReason(s) !== undefined)) this.#drop(k, s);
    }
  }
}
