/**
 * Evidence service: asks the platform attester for evidence binding the current key config
 * (and the client's nonce, when it sent one). Evidence without a nonce is the same for every
 * client of a key generation, so it is attested once and cached, and attested anew once it
 * is `refreshMs` old (so what is served stays well inside a verifier's maximum age). Evidence
 * with a nonce costs one attestation each, so those requests are rate-limited per connection,
 * per source address and over the whole server (`evidenceRequestsPerMinute*`): a client
 * that opens a new connection per request is still one source.
 */
import { CloisterError } from '../errors.js';
import type { Attester, EvidenceBundle } from '../core/types.js';
import type { KeyGeneration, KeyManager } from './keys.js';
import { encodeEvidenceFile } from '../verifier/evidence-file.js';
import { replicaStatementDigest } from '../protocol/replica.js';
import { SlidingWindowLimiter } from './rate-limit.js';
import { MAX_NONCE_BYTES } from '../protocol/wire.js';

/** A replica's statement (src/protocol/replica.ts): the evidence file over its replica key config, and its SHA-256. */
export interface ReplicaStatement {
  readonly evidence: Uint8Array;
  readonly digest: Uint8Array;
}

interface CacheEntry {
  readonly generation: number;
  readonly at: number;
  readonly bundle: Promise<EvidenceBundle>;
  settled?: 'ok' | 'failed';
}

interface ReplicaEntry {
  at: number;
  readonly statement: Promise<ReplicaStatement>;
  /** A refresh in flight (failed refreshes keep the old statement and retry after refreshMs). */
  next?: Promise<ReplicaStatement> | undefined;
}

export class EvidenceService {
  /** The cached no-nonce evidence per protocol version (1: the v1 key config, 2: the v2 one). */
  private readonly caches = new Map<number, CacheEntry>();
  /** The key generation evidence was last produced for (a refresh in progress keeps the server ready). */
  private readyGeneration = -1;
  private lastWarmAt = -Infinity;
  private readonly global: SlidingWindowLimiter;
  /** The replica statement of a fleet generation (one attestation per generation per refresh). */
  private readonly replicaCache = new Map<number, ReplicaEntry>();

  constructor(
    private readonly attester: Attester,
    private readonly keys: KeyManager,
    private readonly perConnectionPerMinute: number,
    globalPerMinute: number,
    private readonly now: () => number = Date.now,
    /** Re-attest the cached no-nonce evidence once it is this old (ServerLimits.evidenceRefreshMs). */
    private readonly refreshMs: number = 60_000,
  ) {
    this.global = new SlidingWindowLimiter(globalPerMinute, 60_000, now);
  }

  /** A limiter for one connection's nonce requests. */
  connectionLimiter(): SlidingWindowLimiter {
    return new SlidingWindowLimiter(this.perConnectionPerMinute, 60_000, this.now, 'per connection');
  }

  /**
   * Evidence for the current key generation. `limiters` (the connection's, the source's)
   * are each charged for a nonce request, before the server-wide budget. Throws
   * RATE_LIMITED or ATTESTER_FAILED.
   */
  async get(nonce: Uint8Array | undefined, limiters: readonly SlidingWindowLimiter[], version = 1): Promise<EvidenceBundle> {
    const gen = this.keys.current();
    const keyConfig = version === 2 ? gen.keyConfigV2 : gen.keyConfig;
    if (nonce === undefined || nonce.byteLength === 0) {
      const now = this.now();
      // One attestation in flight at a time: concurrent requests share the entry.
      let cached = this.caches.get(version);
      if (cached?.generation !== gen.generation || now - cached.at >= this.refreshMs) {
        const bundle = this.attest(keyConfig, gen.hpkePublicKey, undefined);
        const entry: CacheEntry = { generation: gen.generation, at: now, bundle };
        cached = entry;
        this.caches.set(version, entry);
        // A failed attestation is not cached: the next request tries again.
        bundle.then(
          () => {
            entry.settled = 'ok';
            this.readyGeneration = Math.max(this.readyGeneration, entry.generation);
          },
          () => {
            entry.settled = 'failed';
            if (this.caches.get(version) === entry) this.caches.delete(version);
          },
        );
      }
      return cached.bundle;
    }
    if (nonce.byteLength > MAX_NONCE_BYTES) throw new CloisterError('INVALID_ARGUMENT', 'nonce too long');
    // Per connection and per source first, so one noisy client cannot drain the global budget.
    for (const l of limiters) {
      if (!l.tryTake()) {
        throw new CloisterError('RATE_LIMITED', `too many evidence requests with a nonce (${l.limit} per minute ${l.scope})`, {
          detail: { limit: l.scope === 'per source' ? 'evidenceRequestsPerMinutePerSource' : 'evidenceRequestsPerMinutePerConnection', value: l.limit },
        });
      }
    }
    if (!this.global.tryTake()) {
      throw new CloisterError('RATE_LIMITED', `too many evidence requests with a nonce (${this.global.limit} per minute for the whole server)`, {
        detail: { limit: 'evidenceRequestsPerMinute', value: this.global.limit },
      });
    }
    return this.attest(keyConfig, gen.hpkePublicKey, nonce);
  }

  /**
   * The replica statement of fleet generation `gen` (per-replica receipts): evidence without a
   * nonce over its replica key config, attested once and shared by every answer until it is
   * `refreshMs` old, like the cached key-config evidence. Throws ATTESTER_FAILED (not cached).
   */
  replicaStatement(gen: KeyGeneration): Promise<ReplicaStatement> {
    const replica = gen.replica;
    if (replica === undefined) return Promise.reject(new CloisterError('INTERNAL', 'a replica statement exists for fleet keys only'));
    const now = this.now();
    const cached = this.replicaCache.get(gen.generation);
    if (cached !== undefined && (now - cached.at < this.refreshMs || cached.next !== undefined)) return cached.statement;
    const statement = this.attest(replica.keyConfig, gen.hpkePublicKey, undefined).then((bundle) => {
      const evidence = encodeEvidenceFile(bundle);
      return { evidence, digest: replicaStatementDigest(evidence) };
    });
    if (cached !== undefined) {
      // A refresh: answers keep the statement they had until the new one is there.
      cached.next = statement;
      statement.then(
        () => this.setReplica(gen.generation, { at: this.now(), statement }),
        () => {
          cached.next = undefined;
          cached.at = this.now();
        },
      );
      return cached.statement;
    }
    const entry: ReplicaEntry = { at: now, statement };
    this.setReplica(gen.generation, entry);
    statement.catch(() => {
      if (this.replicaCache.get(gen.generation) === entry) this.replicaCache.delete(gen.generation);
    });
    return statement;
  }

  private setReplica(generation: number, entry: ReplicaEntry): void {
    this.replicaCache.delete(generation);
    this.replicaCache.set(generation, entry);
    // The current and the previous fleet generation (in its overlap) are all that is served.
    for (const k of this.replicaCache.keys()) if (this.replicaCache.size > 2) this.replicaCache.delete(k);
  }

  /**
   * Whether evidence for the current key generation has been produced (`GET /readyz`). When it
   * has not, starts producing it (the same cached, nonce-less evidence every client gets), at
   * most once per `retryMs` after a failure, so probes cannot turn into an attestation each.
   */
  available(retryMs = 1000): boolean {
    const gen = this.keys.current();
    // A fleet replica's statement too, so the first answers do not wait for it.
    if (gen.replica !== undefined) this.replicaStatement(gen).catch(() => undefined);
    if (this.readyGeneration === gen.generation) return true;
    const cached = this.caches.get(1);
    if (cached?.generation === gen.generation && cached.settled === undefined) return false;
    const t = this.now();
    if (t - this.lastWarmAt >= retryMs) {
      this.lastWarmAt = t;
      this.get(undefined, []).catch(() => undefined);
    }
    return false;
  }

  private async attest(keyConfig: Uint8Array, hpkePublicKey: Uint8Array, nonce: Uint8Array | undefined): Promise<EvidenceBundle> {
    try {
      return await this.attester.attest({ keyConfig, hpkePublicKey, ...(nonce === undefined ? {} : { nonce: Uint8Array.from(nonce) }) });
    } catch (cause) {
      if (cause instanceof CloisterError && cause.code === 'ATTESTER_FAILED') throw cause;
      throw new CloisterError('ATTESTER_FAILED', undefined, { cause });
    }
  }
}
