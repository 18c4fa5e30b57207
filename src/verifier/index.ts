/** Verification (client and auditor side): one entry point for every platform, and policies. */
export { verifyEvidence, verifyNitroDocument, EvidenceVerificationError } from './verify.js';
export type { TrustedRoots, VerifyEvidenceOptions, VerifiedEvidence } from './verify.js';
export { parsePolicy, policyFromJson, POLICY_VERSION } from './policy.js';
export type { Policy, NitroPolicy, SimulatedPolicy, PlatformPolicies } from './policy.js';
export { reportDataFor, nitroBindingFor, checkReportDataBinding, REPORT_DATA_LABEL } from '../protocol/binding.js';
export { PLATFORMS } from '../core/types.js';
export { encodeEvidenceFile, decodeEvidenceFile, looksLikeEvidenceFile, EVIDENCE_FILE_FORMAT, EVIDENCE_FILE_VERSION } from './evidence-file.js';
export type { EvidenceFile } from './evidence-file.js';
export type {
  AttestationRequest,
  Attester,
  EvidenceBundle,
  Platform,
  VerificationReport,
  VerificationStep,
  VerifiedClaims,
} from '../core/types.js';
export { verifySevSnpEvidence } from './sev-snp/index.js';
export { verifyTdxEvidence } from './tdx/index.js';
