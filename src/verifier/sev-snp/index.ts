/** AMD SEV-SNP: report parsing, AMD chain, policy, verification. */
export { verifySevSnpEvidence, checkSnpTcbAndChipId } from './verify.js';
export type { SevSnpVerifyOptions } from './verify.js';
export { parseSevSnpPolicy, sevSnpPolicy, checkSevSnpPolicy, describeSnpGuestPolicy } from './policy.js';
export type { SevSnpPolicy } from './policy.js';
export {
  parseSnpReport,
  productFromCpuid,
  snpPolicyHas,
  SNP_POLICY_BIT,
  SNP_REPORT_SIZE,
  SNP_SIGNED_LENGTH,
  SNP_SUPPORTED_VERSIONS,
} from './report.js';
export type { SnpReport, SnpSigningKey } from './report.js';
export { verifySnpReportSignature } from './signature.js';
export { parseCertTable, encodeCertTable, SNP_CERT_GUIDS, DEFAULT_CERT_TABLE_LIMITS } from './cert-table.js';
export type { CertTableEntry, CertTableLimits } from './cert-table.js';
export { parseAmdEndorsementKey, verifyAmdChain } from './certs.js';
export type { AmdEndorsementKey, AmdChainOptions, AmdChainResult } from './certs.js';
export { AMD_PRODUCT_ROOTS } from './roots.js';
export type { AmdProductRoots } from './roots.js';
export { decodeTcb, encodeTcb, tcbAtLeast, SNP_PRODUCTS } from './tcb.js';
export type { SnpProduct, SnpTcbParts } from './tcb.js';
export { KdsClient, kdsVcekUrl, AMD_KDS_BASE_URL } from './kds.js';
export type { KdsClientOptions, VcekRequest, FetchLike } from './kds.js';
