/** Intel TDX: quote parsing, collateral, Intel chain via @phala/dcap-qvl, policy, verification. */
export { verifyTdxEvidence } from './verify.js';
export type { TdxVerifyOptions } from './verify.js';
export { parseTdxPolicy, tdxPolicy } from './policy.js';
export type { TdxPolicy } from './policy.js';
export { parseTdxQuote } from './quote.js';
export { parseTdxCollateral, PcsCollateralFetcher } from './collateral.js';
export { INTEL_SGX_ROOT_CA_PEM, INTEL_SGX_ROOT_CA_FINGERPRINT256 } from './roots.js';
