/**
 * Client API keys and per-key request quotas (`cloister serve --client-keys FILE`; issue 17
 * item 10, docs/PROTOCOL.md section 4 "Client API keys").
 *
 * The key travels inside the sealed request (field `key`), so only the TEE sees it. The
 * server stores SHA-256 digests only, one per line of the keys file:
 *
 *   id:sha256hex[:requests-per-minute]
 *
 * `id` (1..64 of A-Z a-z 0-9 . _ -) is what logs and metrics name; the key itself is never
 * logged. Blank lines and lines starting with '#' are ignored. A presented key is hashed
 * and compared with every entry in constant time (no early exit, so the time does not tell
 * which entry, or how much of a digest, matched). A request without a valid key is refused
 * with UNAUTHORIZED; a key over its quota (a sliding minute) with RATE_LIMITED.
 */
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { CloisterError } from '../errors.js';
import { timingSafeEqualBytes } from '../crypto/ct.js';
import { SlidingWindowLimiter } from './rate-limit.js';

/** Requests per minute of a key whose line names no quota (`--client-key-requests-per-minute`). */
export const DEFAULT_CLIENT_KEY_REQUESTS_PER_MINUTE = 600;
/** Largest keys file read. */
const MAX_CLIENT_KEYS_FILE_BYTES = 1024 * 1024;
/** Most keys in one file (each lookup compares against all of them). */
const MAX_CLIENT_KEYS = 4096;
/** Largest per-key quota (the limiter keeps one timestamp per request in the window). */
export const MAX_CLIENT_KEY_REQUESTS_PER_MINUTE = 100_000;

interface Entry {
  readonly id: string;
  readonly digest: Uint8Array;
  readonly quota: SlidingWindowLimiter;
}

const LINE_RE = /^([A-Za-z0-9._-]{1,64}):([0-9a-f]{64})(?::(\d{1,9}))?$/;

export class ClientKeyTable {
  private constructor(private readonly entries: readonly Entry[]) {}

  get size(): number {
    return this.entries.length;
  }

  /**
   * Parses a keys file. `source` names it in errors (path and line number; never a digest).
   * Every malformed line, a duplicate id or digest, or a file without keys is CONFIG_INVALID.
   */
  static parse(text: string, source: string, options: { defaultPerMinute?: number; now?: () => number } = {}): ClientKeyTable {
    const defaultPerMinute = options.defaultPerMinute ?? DEFAULT_CLIENT_KEY_REQUESTS_PER_MINUTE;
    checkQuota(defaultPerMinute, 'the default client key quota');
    const entries: Entry[] = [];
    const ids = new Set<string>();
    const digests = new Set<string>();
    const lines = text.split(/\r?\n/);
    for (const [i, raw] of lines.entries()) {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) continue;
      const where = `${source} line ${i + 1}`;
      const m = LINE_RE.exec(line);
      if (m === null || m[1] === undefined || m[2] === undefined) {
        throw new CloisterError('CONFIG_INVALID', `${where}: expected id:sha256hex[:requests-per-minute] (id of A-Z a-z 0-9 . _ -, 64 lower-case hex digits)`);
      }
      const perMinute = m[3] === undefined ? defaultPerMinute : Number(m[3]);
      checkQuota(perMinute, `${where}: requests-per-minute`);
      if (ids.has(m[1])) throw new CloisterError('CONFIG_INVALID', `${where}: id '${m[1]}' appears twice`);
      if (digests.has(m[2])) throw new CloisterError('CONFIG_INVALID', `${where}: the same key digest appears twice`);
      if (entries.length >= MAX_CLIENT_KEYS) throw new CloisterError('CONFIG_INVALID', `${source}: more than ${MAX_CLIENT_KEYS} keys`);
      ids.add(m[1]);
      digests.add(m[2]);
      entries.push({ id: m[1], digest: new Uint8Array(Buffer.from(m[2], 'hex')), quota: new SlidingWindowLimiter(perMinute, 60_000, options.now, `per client key ${m[1]}`) });
    }
    if (entries.length === 0) throw new CloisterError('CONFIG_INVALID', `${source}: no keys (an empty keys file would refuse every request)`);
    return new ClientKeyTable(entries);
  }

  /** Reads and parses a keys file (bounded: MAX_CLIENT_KEYS_FILE_BYTES). */
  static async load(path: string, options: { defaultPerMinute?: number; now?: () => number } = {}): Promise<ClientKeyTable> {
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch (cause) {
      throw new CloisterError('NOT_FOUND', `client keys file ${path} cannot be read`, { cause });
    }
    if (size > MAX_CLIENT_KEYS_FILE_BYTES) throw new CloisterError('LIMIT_EXCEEDED', `client keys file ${path} is ${size} bytes; the limit is ${MAX_CLIENT_KEYS_FILE_BYTES}`);
    return ClientKeyTable.parse(await readFile(path, 'utf8'), path, options);
  }

  /**
   * The id of the entry `key` matches, after taking one request from its quota. Throws
   * UNAUTHORIZED (no key, or no match) or RATE_LIMITED (over the key's quota). Errors name
   * the key id at most, never the key.
   */
  authorize(key: string | undefined): string {
    if (key === undefined) throw new CloisterError('UNAUTHORIZED', 'this server requires a client API key (ConnectOptions.apiKey)', { detail: { public: true } });
    const digest = sha256(key);
    let found: Entry | undefined;
    for (const e of this.entries) {
      // Every entry is compared: no early exit.
      if (timingSafeEqualBytes(e.digest, digest) && found === undefined) found = e;
    }
    if (found === undefined) throw new CloisterError('UNAUTHORIZED', 'the client API key is not valid for this server', { detail: { public: true } });
    if (!found.quota.tryTake()) {
      throw new CloisterError('RATE_LIMITED', `client key '${found.id}' is over its quota of ${found.quota.limit} requests per minute`, {
        detail: { limit: 'clientKeyRequestsPerMinute', max: found.quota.limit, public: true },
      });
    }
    return found.id;
  }
}

/** The line for a keys file: `id:` and the SHA-256 of the key (what `printf %s KEY | sha256sum` prints). */
export function clientKeyLine(id: string, key: string, perMinute?: number): string {
  return `${id}:${Buffer.from(sha256(key)).toString('hex')}${perMinute === undefined ? '' : `:${perMinute}`}`;
}

function sha256(s: string): Uint8Array {
  return new Uint8Array(createHash('sha256').update(s, 'utf8').digest());
}

function checkQuota(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_CLIENT_KEY_REQUESTS_PER_MINUTE) {
    throw new CloisterError('CONFIG_INVALID', `${what} must be an integer from 1 to ${MAX_CLIENT_KEY_REQUESTS_PER_MINUTE}`);
  }
}
