/**
 * Optional VCEK fetcher for AMD's Key Distribution Service (AMD pub. 57230, section
 * "KDS Interface": GET https://kdsintf.amd.com/vcek/v1/{product}/{hwid}?blSPL=..&teeSPL=..
 * &snpSPL=..&ucodeSPL=.. [&fmcSPL=.. on Turin]). The hwid is the report's CHIP_ID in hex: all
 * 64 bytes on Milan/Genoa, the first 8 on Turin.
 *
 * Never needed offline (the VCEK normally travels in the evidence's certificate table) and
 * never used by tests against the network: the fetch function is injectable. Responses are
 * cached by URL; after a failure the same URL is not retried during `cooldownMs` (KDS
 * rate-limits aggressively). Whatever it returns is verified like any other VCEK.
 */
import { CloisterError } from '../../errors.js';
import { toHex } from '../../core/hex.js';
import type { SnpProduct, SnpTcbParts } from './tcb.js';

const AMD_KDS_BASE_URL = 'https://kdsintf.amd.com';

export type FetchLike = (url: string, init: { signal: AbortSignal }) => Promise<{
  readonly ok: boolean;
  readonly status: number;
  arrayBuffer(): Promise<ArrayBuffer>;
}>;

interface KdsClientOptions {
  readonly baseUrl?: string;
  /** Per-request timeout. Default 10 s. */
  readonly timeoutMs?: number;
  /** How long a failed URL is not retried. Default 60 s. */
  readonly cooldownMs?: number;
  /** Cached VCEKs kept (least recently inserted evicted). Default 64. */
  readonly maxCacheEntries?: number;
  /** Largest accepted response. Default 16 KiB. */
  readonly maxResponseBytes?: number;
  /** Injected fetch (default: global fetch). */
  readonly fetch?: FetchLike;
  /** Injected clock, ms (default Date.now). */
  readonly now?: () => number;
}

interface VcekRequest {
  readonly product: SnpProduct;
  readonly chipId: Uint8Array;
  readonly reportedTcb: SnpTcbParts;
}

/** The KDS URL for a VCEK. */
export function kdsVcekUrl(req: VcekRequest, baseUrl = AMD_KDS_BASE_URL): string {
  if (req.chipId.byteLength !== 64) throw new CloisterError('INVALID_ARGUMENT', 'chip_id must be 64 bytes');
  const t = req.reportedTcb;
  const hwid = toHex(req.product === 'Turin' ? req.chipId.subarray(0, 8) : req.chipId);
  const q = new URLSearchParams();
  if (req.product === 'Turin') {
    if (t.fmc === undefined) throw new CloisterError('INVALID_ARGUMENT', 'Turin TCB needs an fmc SPL');
    q.set('fmcSPL', String(t.fmc));
  }
  q.set('blSPL', String(t.bootloader));
  q.set('teeSPL', String(t.tee));
  q.set('snpSPL', String(t.snp));
  q.set('ucodeSPL', String(t.microcode));
  return `${baseUrl}/vcek/v1/${req.product}/${hwid}?${q.toString()}`;
}

export class KdsClient {
  readonly #opts: Required<Omit<KdsClientOptions, 'fetch'>> & { fetch: FetchLike | undefined };
  readonly #cache = new Map<string, Uint8Array>();
  readonly #failedAt = new Map<string, number>();

  constructor(options: KdsClientOptions = {}) {
    this.#opts = {
      baseUrl: options.baseUrl ?? AMD_KDS_BASE_URL,
      timeoutMs: options.timeoutMs ?? 10_000,
      cooldownMs: options.cooldownMs ?? 60_000,
      maxCacheEntries: options.maxCacheEntries ?? 64,
      maxResponseBytes: options.maxResponseBytes ?? 16 * 1024,
      now: options.now ?? Date.now,
      fetch: options.fetch,
    };
  }

  /** Fetch (or return the cached) VCEK DER for a report. */
  async fetchVcek(req: VcekRequest): Promise<Uint8Array> {
    const url = kdsVcekUrl(req, this.#opts.baseUrl);
    const cached = this.#cache.get(url);
    if (cached !== undefined) return new Uint8Array(cached);
    const failed = this.#failedAt.get(url);
    if (failed !== undefined && this.#opts.now() - failed < this.#opts.cooldownMs) {
      throw new CloisterError('RATE_LIMITED', 'AMD KDS fetch for this VCEK failed recently; cooling down');
    }
    const doFetch: FetchLike = this.#opts.fetch ?? ((u, init) => fetch(u, init));
    try {
      const res = await doFetch(url, { signal: AbortSignal.timeout(this.#opts.timeoutMs) });
      if (!res.ok) throw new CloisterError('NOT_FOUND', 'AMD KDS did not return a VCEK', { detail: { status: res.status } });
      const body = new Uint8Array(await res.arrayBuffer());
      if (body.byteLength === 0 || body.byteLength > this.#opts.maxResponseBytes) {
        throw new CloisterError('LIMIT_EXCEEDED', 'AMD KDS response has a bad size', {
          detail: { limit: 'maxResponseBytes', max: this.#opts.maxResponseBytes, actual: body.byteLength },
        });
      }
      if (this.#cache.size >= this.#opts.maxCacheEntries) {
        const oldest = this.#cache.keys().next().value;
        if (oldest !== undefined) this.#cache.delete(oldest);
      }
      this.#cache.set(url, new Uint8Array(body));
      this.#failedAt.delete(url);
      return body;
    } catch (err) {
      this.#failedAt.set(url, this.#opts.now());
      if (err instanceof CloisterError) throw err;
      throw new CloisterError('CONNECTION_FAILED', 'AMD KDS fetch failed', { cause: err });
    }
  }
}
