/** AMD SEV-SNP: report parsing, AMD chain, policy, verification. */
export { verifySevSnpEvidence, checkSnpTcbAndChipId } from './verify.js';
export type { SevSnpVerifyOptions } from './verify.js';
export { parseSevSnpPolicy, sevSnpPolicy, checkSevSnpPolicy } from './policy.js';
export type { SevSnpPolicy } from './policy.js';
export { parseSnpReport } from './report.js';
export type { SnpReport } from './report.js';
export { verifySnpReportSignature } from './signature.js';
export { parseCertTable, encodeCertTable, SNP_CERT_GUIDS } from './cert-table.js';
export { parseAmdEndorsementKey, verifyAmdChain } from './certs.js';
export { AMD_PRODUCT_ROOTS } from './roots.js';
export { decodeTcb, encodeTcb, tcbAtLeast } from './tcb.js';
export { KdsClient, kdsVcekUrl } from './kds.js';
export type { FetchLike } from './kds.js';
