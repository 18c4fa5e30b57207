/**
 * TDX quote collateral (the `QuoteCollateralV3` JSON that @phala/dcap-qvl verifies against):
 * PCK CRL and root CA CRL, TCB info and QE identity with their signatures and issuer chains.
 * Everything in it is signed by (chains to) the Intel SGX Root CA, so it may travel with the
 * evidence through the untrusted host; it is still parsed strictly and size-bounded.
 *
 * Optional fetcher for clients that fetch collateral themselves: Intel PCS (or a PCCS) through
 * ./pcs.ts (timeouts, response size bounds), with a cache.
 */
import type { Collateral } from '@phala/dcap-qvl';
import { INTEL_PCS_URL } from '@phala/dcap-qvl';
import { createHash } from 'node:crypto';
import { CloisterError } from '../../errors.js';

/** Default bound on collateral JSON (real ones are 10-40 KiB, mostly the PCK CRL). */
const DEFAULT_MAX_COLLATERAL_BYTES = 512 * 1024;

const STRING_KEYS = ['pck_crl_issuer_chain', 'tcb_info_issuer_chain', 'tcb_info', 'qe_identity_issuer_chain', 'qe_identity'] as const;
const HEX_KEYS = ['root_ca_crl', 'pck_crl', 'tcb_info_signature', 'qe_identity_signature'] as const;
const OPTIONAL_KEYS = ['pck_certificate_chain'] as const;

function invalid(message: string, field?: string): CloisterError {
  return new CloisterError('EVIDENCE_MALFORMED', `TDX collateral: ${message}`, field === undefined ? {} : { detail: { field } });
}

/** Parse collateral JSON bytes (or an already-decoded object) into the dcap-qvl shape. */
export function parseTdxCollateral(input: Uint8Array | unknown, maxBytes = DEFAULT_MAX_COLLATERAL_BYTES): Collateral {
  let value: unknown = input;
  if (input instanceof Uint8Array) {
    if (input.byteLength > maxBytes) {
      throw new CloisterError('LIMIT_EXCEEDED', 'TDX collateral is larger than allowed', { detail: { limit: 'maxCollateralBytes', max: maxBytes } });
    }
    try {
      value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(input));
    } catch (cause) {
      throw new CloisterError('EVIDENCE_MALFORMED', 'TDX collateral is not UTF-8 JSON', { cause });
    }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('must be a JSON object');
  const obj = value as Record<string, unknown>;
  const allowed = new Set<string>([...STRING_KEYS, ...HEX_KEYS, ...OPTIONAL_KEYS]);
  for (const k of Object.keys(obj)) if (!allowed.has(k)) throw invalid(`unknown key ${JSON.stringify(k)}`, k);
  const out: Record<string, string> = {};
  for (const k of STRING_KEYS) {
    const v = obj[k];
    if (typeof v !== 'string' || v.length === 0) throw invalid(`${k} must be a non-empty string`, k);
    out[k] = v;
  }
  for (const k of HEX_KEYS) {
    let v = obj[k];
    // dcap-qvl accepts byte arrays too; normalise to hex.
    if (Array.isArray(v) && v.every((x) => Number.isInteger(x) && x >= 0 && x <= 255)) v = Buffer.from(v as number[]).toString('hex');
    if (typeof v !== 'string' || v.length === 0 || !/^(?:[0-9a-fA-F]{2})+$/.test(v)) throw invalid(`${k} must be non-empty hex`, k);
    out[k] = v;
  }
  const pck = obj['pck_certificate_chain'];
  if (pck !== undefined) {
    if (typeof pck !== 'string' || pck.length === 0) throw invalid('pck_certificate_chain must be a string', 'pck_certificate_chain');
    out['pck_certificate_chain'] = pck;
  }
  return out as unknown as Collateral;
}

interface PcsCollateralFetcherOptions {
  /** PCS / PCCS base URL. Default Intel PCS. */
  readonly baseUrl?: string;
  /** Give up after this long. Default 15 s. */
  readonly timeoutMs?: number;
  /** Cached collateral lifetime. Default 1 hour (collateral itself lives about 30 days). */
  readonly cacheTtlMs?: number;
  /** Most cached entries. Default 16. */
  readonly maxCacheEntries?: number;
  /** Injected clock, ms. */
  readonly now?: () => number;
  /** Largest PCS response body. Default 1 MiB. */
  readonly maxResponseBytes?: number;
  /** Injected fetch of collateral for a quote (default: ./pcs.ts fetchTdxCollateral). */
  readonly fetchCollateral?: (baseUrl: string, quote: Uint8Array) => Promise<Collateral>;
}

/** Fetches collateral from Intel PCS with a timeout and a per-quote-platform cache. */
export class PcsCollateralFetcher {
  readonly #o: Required<Omit<PcsCollateralFetcherOptions, 'fetchCollateral' | 'maxResponseBytes'>> & {
    fetchCollateral: (baseUrl: string, quote: Uint8Array) => Promise<Collateral>;
  };
  readonly #cache = new Map<string, { at: number; collateral: Collateral }>();

  constructor(options: PcsCollateralFetcherOptions = {}) {
    this.#o = {
      baseUrl: options.baseUrl ?? INTEL_PCS_URL,
      timeoutMs: options.timeoutMs ?? 15_000,
      cacheTtlMs: options.cacheTtlMs ?? 3_600_000,
      maxCacheEntries: options.maxCacheEntries ?? 16,
      now: options.now ?? Date.now,
      fetchCollateral:
        options.fetchCollateral ??
        (async (u, q) => {
          const { fetchTdxCollateral } = await import('./pcs.js');
          const timeoutMs = options.timeoutMs ?? 15_000;
          return (await fetchTdxCollateral(q, { baseUrl: u, timeoutMs, ...(options.maxResponseBytes === undefined ? {} : { maxResponseBytes: options.maxResponseBytes }) })).collateral;
        }),
    };
  }

  /**
   * Collateral for a quote. The cache key is the quote's certification data (the PCK chain
   * names the platform's FMSPC and CA), so quotes of one platform share collateral.
   */
  async fetch(quote: Uint8Array, certificationData: Uint8Array): Promise<Collateral> {
    const key = createHash('sha256').update(certificationData).digest('hex');
    const hit = this.#cache.get(key);
    if (hit !== undefined && this.#o.now() - hit.at < this.#o.cacheTtlMs) return hit.collateral;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new CloisterError('TIMEOUT', 'Intel PCS collateral fetch timed out')), this.#o.timeoutMs);
    });
    try {
      const raw = await Promise.race([this.#o.fetchCollateral(this.#o.baseUrl, new Uint8Array(quote)), timeout]);
      const collateral = parseTdxCollateral(raw);
      if (this.#cache.size >= this.#o.maxCacheEntries) {
        const oldest = this.#cache.keys().next().value;
        if (oldest !== undefined) this.#cache.delete(oldest);
      }
      this.#cache.set(key, { at: this.#o.now(), collateral });
      return collateral;
    } catch (err) {
      if (err instanceof CloisterError) throw err;
      throw new CloisterError('CONNECTION_FAILED', 'Intel PCS collateral fetch failed', { cause: err });
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }
}
