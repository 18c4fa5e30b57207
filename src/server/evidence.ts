/**
 * Evidence service: asks the platform attester for evidence binding the current key config
 * (and the client's nonce, when it sent one). Evidence without a nonce is the same for every
 * client of a key generation, so it is produced once per generation and cached; evidence
 * with a nonce costs one attestation each, so those requests are rate-limited per
 * connection and over the whole server (`evidenceRequestsPerMinute*`).
 */
import { CloisterError } from '../errors.js';
import type { Attester, EvidenceBundle } from '../attestation/types.js';
import type { KeyManager } from './keys.js';
import { SlidingWindowLimiter } from './rate-limit.js';
import { MAX_NONCE_BYTES } from '../protocol/wire.js';

export class EvidenceService {
  private cache: { generation: number; bundle: Promise<EvidenceBundle>; settled?: 'ok' | 'failed' } | undefined;
  private lastWarmAt = -Infinity;
  private readonly global: SlidingWindowLimiter;

  constructor(
    private readonly attester: Attester,
    private readonly keys: KeyManager,
    private readonly perConnectionPerMinute: number,
    globalPerMinute: number,
    private readonly now: () => number = Date.now,
  ) {
    this.global = new SlidingWindowLimiter(globalPerMinute, 60_000, now);
  }

  /** A limiter for one connection's nonce requests. */
  connectionLimiter(): SlidingWindowLimiter {
    return new SlidingWindowLimiter(this.perConnectionPerMinute, 60_000, this.now);
  }

  /** Evidence for the current key generation. Throws RATE_LIMITED or ATTESTER_FAILED. */
  async get(nonce: Uint8Array | undefined, limiter: SlidingWindowLimiter): Promise<EvidenceBundle> {
    const gen = this.keys.current();
    if (nonce === undefined || nonce.byteLength === 0) {
      if (this.cache?.generation !== gen.generation) {
        const bundle = this.attest(gen.keyConfig, gen.hpkePublicKey, undefined);
        const entry: { generation: number; bundle: Promise<EvidenceBundle>; settled?: 'ok' | 'failed' } = { generation: gen.generation, bundle };
        this.cache = entry;
        // A failed attestation is not cached: the next request tries again.
        bundle.then(
          () => {
            entry.settled = 'ok';
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
    // Per connection first, so one noisy connection cannot drain the global budget.
    if (!limiter.tryTake() || !this.global.tryTake()) throw new CloisterError('RATE_LIMITED', 'too many evidence requests with a nonce');
    return this.attest(gen.keyConfig, gen.hpkePublicKey, nonce);
  }

  /**
   * Whether evidence for the current key generation has been produced (`GET /readyz`). When it
   * has not, starts producing it (the same cached, nonce-less evidence every client gets), at
   * most once per `retryMs` after a failure, so probes cannot turn into an attestation each.
   */
  available(retryMs = 1000): boolean {
    const gen = this.keys.current();
    if (this.cache?.generation === gen.generation) return this.cache.settled === 'ok';
    const t = this.now();
    if (t - this.lastWarmAt >= retryMs) {
      this.lastWarmAt = t;
      this.get(undefined, this.global).catch(() => undefined);
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
