/**
 * Where a TDX server gets the collateral it attaches to its evidence (`cloister serve
 * --platform tdx`): a file the operator keeps current, or Intel PCS / a PCCS (./pcs.ts).
 *
 * The collateral is cached and refreshed before it expires: after `refreshIntervalMs`, or
 * once less than `refreshMarginMs` remains before its earliest nextUpdate, whichever comes
 * first. Before use, new collateral must verify the server's own quote (the Intel chain, the
 * CRLs, the QE identity and TCB info signatures, at the current time): the server never hands
 * out collateral that cannot verify it. When a refresh fails, the cached collateral stays in
 * use while it is still valid; after that, attestation fails (ATTESTER_FAILED, naming the
 * cause), never with expired collateral.
 */
import { readFile } from 'node:fs/promises';
import { CloisterError } from '../../errors.js';
import { collateralNextUpdate, fetchTdxCollateral } from './pcs.js';
import type { PcsFetchOptions } from './pcs.js';
import { parseTdxCollateral } from './collateral.js';
import { verifyTdxEvidence } from './verify.js';

const DEFAULT_COLLATERAL_REFRESH_INTERVAL_MS = 60 * 60 * 1000;
const DEFAULT_COLLATERAL_REFRESH_MARGIN_MS = 24 * 60 * 60 * 1000;
/** Largest collateral file read. */
const MAX_COLLATERAL_FILE_BYTES = 512 * 1024;

interface TdxCollateralSourceOptions {
  /** Read collateral (QuoteCollateralV3 JSON) from this file; re-read at each refresh. */
  readonly file?: string;
  /** Otherwise fetch from Intel PCS or this PCCS (./pcs.ts options). */
  readonly pcs?: PcsFetchOptions;
  /** Refresh at least this often. Default 1 hour. */
  readonly refreshIntervalMs?: number;
  /** Refresh when less than this remains before the collateral's earliest nextUpdate. Default 24 hours. */
  readonly refreshMarginMs?: number;
  /** Test-only: replace the pinned Intel root (PEM). */
  readonly rootCaPem?: string;
  readonly now?: () => number;
}

interface Cached {
  readonly bytes: Uint8Array;
  readonly fetchedAt: number;
  readonly nextUpdate: number;
}

export class TdxCollateralSource {
  readonly #o: TdxCollateralSourceOptions;
  readonly #now: () => number;
  #cache: Cached | undefined;
  #inflight: Promise<Cached> | undefined;
  /** The last refresh failure (content-free), for operators. */
  lastError: string | undefined;

  constructor(options: TdxCollateralSourceOptions) {
    if (options.file === undefined && options.pcs === undefined) throw new CloisterError('CONFIG_INVALID', 'TDX collateral: give a file or a PCS/PCCS URL');
    for (const [name, v] of [['refreshIntervalMs', options.refreshIntervalMs], ['refreshMarginMs', options.refreshMarginMs]] as const) {
      if (v !== undefined && !(Number.isSafeInteger(v) && v > 0)) throw new CloisterError('CONFIG_INVALID', `TDX collateral: ${name} must be a positive integer`);
    }
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /** Where it comes from, for logs. */
  describe(): string {
    return this.#o.file !== undefined ? `file ${this.#o.file}` : `PCS ${this.#o.pcs?.baseUrl ?? 'https://api.trustedservices.intel.com'}`;
  }

  /** Collateral bytes for this server's quote; refreshed when due. */
  async get(quote: Uint8Array): Promise<Uint8Array> {
    const now = this.#now();
    const c = this.#cache;
    const interval = this.#o.refreshIntervalMs ?? DEFAULT_COLLATERAL_REFRESH_INTERVAL_MS;
    const margin = this.#o.refreshMarginMs ?? DEFAULT_COLLATERAL_REFRESH_MARGIN_MS;
    if (c !== undefined && now - c.fetchedAt < interval && c.nextUpdate - now > margin) return c.bytes;
    this.#inflight ??= this.#load(quote).finally(() => {
      this.#inflight = undefined;
    });
    try {
      const fresh = await this.#inflight;
      this.#cache = fresh;
      this.lastError = undefined;
      return fresh.bytes;
    } catch (err) {
      this.lastError = err instanceof Error ? err.message : String(err);
      // Keep serving what we have while it is still valid.
      if (c !== undefined && c.nextUpdate > this.#now()) return c.bytes;
      throw new CloisterError('ATTESTER_FAILED', `TDX collateral from ${this.describe()} is unavailable: ${this.lastError}`, { cause: err });
    }
  }

  async #load(quote: Uint8Array): Promise<Cached> {
    let bytes: Uint8Array;
    let nextUpdate: number;
    if (this.#o.file !== undefined) {
      let raw: Buffer;
      try {
        raw = await readFile(this.#o.file);
      } catch (cause) {
        throw new CloisterError('NOT_FOUND', `cannot read TDX collateral file ${this.#o.file}`, { cause });
      }
      if (raw.byteLength > MAX_COLLATERAL_FILE_BYTES) {
        throw new CloisterError('LIMIT_EXCEEDED', `TDX collateral file ${this.#o.file} is ${raw.byteLength} bytes; the limit is ${MAX_COLLATERAL_FILE_BYTES}`);
      }
      bytes = new Uint8Array(raw);
      nextUpdate = collateralNextUpdate(parseTdxCollateral(bytes)).getTime();
    } else {
      const fetched = await fetchTdxCollateral(quote, this.#o.pcs);
      bytes = fetched.bytes;
      nextUpdate = fetched.nextUpdate.getTime();
    }
    // It must verify our own quote now (chain, CRLs, signatures, validity); the TCB status is
    // for clients' policies to judge, so only the stages up to "quote" count here.
    const now = this.#now();
    const report = await verifyTdxEvidence(
      { platform: 'tdx', evidence: quote, keyConfig: new Uint8Array(0), collateral: bytes },
      { policy: 'none', at: new Date(now), skipBinding: true, ...(this.#o.rootCaPem === undefined ? {} : { rootCaPem: this.#o.rootCaPem }) },
    );
    const failed = report.steps.find((s) => !s.ok && ['decode', 'collateral', 'quote'].includes(s.step));
    if (failed !== undefined) throw new CloisterError('ATTESTER_FAILED', `TDX collateral from ${this.describe()} does not verify this server's quote: ${failed.code ?? ''} ${failed.detail ?? ''}`.trim());
    return { bytes, fetchedAt: now, nextUpdate };
  }
}
