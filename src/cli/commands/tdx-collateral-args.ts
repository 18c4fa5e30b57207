/**
 * `cloister serve` options for the TDX collateral the server attaches to its evidence
 * (src/verifier/tdx/collateral-source.ts). Defaults: Intel PCS, refreshed hourly and 24 hours
 * before the collateral expires, 15 s per request.
 */
import { CloisterError } from '../../errors.js';
import { TdxCollateralSource } from '../../verifier/tdx/collateral-source.js';
import { DEFAULT_PCS_TIMEOUT_MS, INTEL_PCS_URL } from '../../verifier/tdx/pcs.js';

export const TDX_COLLATERAL_FLAGS = ['tdx-collateral', 'tdx-pccs-url', 'tdx-collateral-refresh-minutes', 'tdx-pcs-timeout-s'] as const;

function positiveInt(text: string | undefined, flag: string, max: number): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new CloisterError('INVALID_ARGUMENT', `--${flag} must be an integer from 1 to ${max}`);
  return n;
}

/** The collateral source the flags describe; undefined for `--tdx-collateral none`. */
export function tdxCollateralFromArgs(get: (name: string) => string | undefined): TdxCollateralSource | undefined {
  const file = get('tdx-collateral');
  const url = get('tdx-pccs-url');
  if (file !== undefined && url !== undefined) throw new CloisterError('INVALID_ARGUMENT', '--tdx-collateral and --tdx-pccs-url are alternatives; give one');
  if (file === 'none') return undefined;
  if (url !== undefined && !/^https?:\/\//.test(url)) throw new CloisterError('INVALID_ARGUMENT', '--tdx-pccs-url must be an http:// or https:// URL');
  const minutes = positiveInt(get('tdx-collateral-refresh-minutes'), 'tdx-collateral-refresh-minutes', 7 * 24 * 60);
  const timeoutS = positiveInt(get('tdx-pcs-timeout-s'), 'tdx-pcs-timeout-s', 600);
  return new TdxCollateralSource({
    ...(file === undefined
      ? { pcs: { baseUrl: url ?? INTEL_PCS_URL, timeoutMs: timeoutS === undefined ? DEFAULT_PCS_TIMEOUT_MS : timeoutS * 1000 } }
      : { file }),
    ...(minutes === undefined ? {} : { refreshIntervalMs: minutes * 60_000 }),
  });
}
