/** Verification (client and auditor side): one entry point for every platform, and policies. */
export { verifyEvidence, verifyNitroDocument, EvidenceVerificationError } from './verify.js';
export type { VerifyEvidenceOptions, VerifiedEvidence } from './verify.js';
export { parsePolicy, policyFromJson } from './policy.js';
export type { Policy } from './policy.js';
export { PLATFORMS } from '../core/types.js';
export { encodeEvidenceFile, decodeEvidenceFile } from './evidence-file.js';
export type { EvidenceFile } from './evidence-file.js';
export type { Attester, EvidenceBundle, Platform, VerificationReport, VerifiedClaims } from '../core/types.js';
export { verifySevSnpEvidence } from './sev-snp/index.js';
export { verifyTdxEvidence } from './tdx/index.js';
