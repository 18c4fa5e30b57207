/** Intel TDX: quote parsing, collateral, Intel chain via @phala/dcap-qvl, policy, verification. */
export { verifyTdxEvidence } from './verify.js';
export type { TdxVerifyOptions } from './verify.js';
export { parseTdxPolicy, tdxPolicy, checkTdxPolicy, tcbStatusAccepted, TDX_TCB_STATUSES } from './policy.js';
export type { TdxPolicy, TdxTcbStatus } from './policy.js';
export { parseTdxQuote, tdAttributeSet, TD_ATTRIBUTE, DEFAULT_MAX_QUOTE_BYTES, DEFAULT_MAX_ZERO_PADDING, TD_REPORT10_SIZE, TD_REPORT15_SIZE } from './quote.js';
export type { TdxQuote, TdReport, TdxQuoteLimits } from './quote.js';
export { parseTdxCollateral, PcsCollateralFetcher, DEFAULT_MAX_COLLATERAL_BYTES } from './collateral.js';
export type { PcsCollateralFetcherOptions } from './collateral.js';
export { INTEL_SGX_ROOT_CA_PEM, INTEL_SGX_ROOT_CA_FINGERPRINT256 } from './roots.js';
