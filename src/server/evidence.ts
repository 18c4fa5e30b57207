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
import type { KeyManager } from './keys.js';
import { SlidingWindowLimiter } from './rate-limit.js';
import { MAX_NONCE_BYTES } from '../protocol/wire.js';

export class EvidenceService {
  private cache: { generation: number; at: number; bundle: Promise<EvidenceBundle>; settled?: 'ok' | 'failed' } | undefined;
  /** The key generation evidence was last produced for (a refresh in progress keeps the server ready). */
  private readyGeneration = -1;
  private lastWarmAt = -Infinity;
  private readonly global: SlidingWindowLimiter;

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
  async get(nonce: Uint8Array | undefined, limiters: readonly SlidingWindowLimiter[]): Promise<EvidenceBundle> {
    const gen = this.keys.current();
    if (nonce === undefined || nonce.byteLength === 0) {
      const now = this.now();
      // One attestation in flight at a time: concurrent requests share the entry.
      if (this.cache?.generation !== gen.generation || now - this.cache.at >= this.refreshMs) {
        const bundle = this.attest(gen.keyConfig, gen.hpkePublicKey, undefined);
        const entry: { generation: number; at: number; bundle: Promise<EvidenceBundle>; settled?: 'ok' | 'failed' } = { generation: gen.generation, at: now, bundle };
        this.cache = entry;
        // A failed attestation is not cached: the next request tries again.
        bundle.then(
          () => {
            entry.settled = 'ok';
            this.readyGeneration = Math.max(this.readyGeneration, entry.generation);
          },
          () => {
            entry.settled = 'failed';
            if (this.cache === entry) this.cache = undefined;
          },
        );
      }
      return this.cache.bundle;
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
    return this.attest(gen.keyConfig, gen.hpkePublicKey, nonce);
  }

  /**
   * Whether evidence for the current key generation has been produced (`GET /readyz`). When it
   * has not, starts producing it (the same cached, nonce-less evidence every client gets), at
   * most once per `retryMs` after a failure, so probes cannot turn into an attestation each.
   */
  available(retryMs = 1000): boolean {
    const gen = this.keys.current();
    if (this.readyGeneration === gen.generation) return true;
    if (this.cache?.generation === gen.generation && this.cache.settled === undefined) return false;
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
