/**
 * Inspection: what the CLI's `cloister verify` does without a policy or a key config, and what
 * tests and tools do with evidence that Cloister did not produce. It checks the hardware
 * evidence (chain, signature, TCB) but not what a client needs before trusting a key: without
 * a policy the measurements are not compared (the policy step reads "skipped"), and
 * report_data is compared with the key config, with an exact value, or not at all. A client
 * uses verifyEvidence (verify.ts), whose path has no such options.
 */
import type { EvidenceBundle, VerificationReport } from '../core/types.js';
import type { ReportDataCheck } from './report.js';
import type { SevSnpPolicy } from './sev-snp/policy.js';
import { runSevSnpStages } from './sev-snp/verify.js';
import type { SevSnpVerifyOptions } from './sev-snp/verify.js';
import type { TdxPolicy } from './tdx/policy.js';
import { runTdxStages } from './tdx/verify.js';
import type { TdxVerifyOptions } from './tdx/verify.js';

interface InspectOptions<P> {
  /** Compare the measurements with this policy section; without one the step reads "skipped". */
  readonly policy?: P;
  /** What report_data is compared with; default: nothing (the binding step reads "skipped"). */
  readonly binding?: ReportDataCheck;
}

const UNCHECKED: ReportDataCheck = { kind: 'unchecked' };

export type SevSnpInspectOptions = Omit<SevSnpVerifyOptions, 'policy' | 'nonce'> & InspectOptions<SevSnpPolicy>;
export type TdxInspectOptions = Omit<TdxVerifyOptions, 'policy' | 'nonce'> & InspectOptions<TdxPolicy>;

/** Inspect SEV-SNP evidence (see above). Never throws for bad evidence: failures are steps with codes. */
export function inspectSevSnpEvidence(bundle: EvidenceBundle, options: SevSnpInspectOptions): Promise<VerificationReport> {
  const { policy, binding, ...rest } = options;
  return runSevSnpStages(bundle, { ...rest, policy: policy ?? 'none' }, binding ?? UNCHECKED);
}

/** Inspect TDX evidence (see above); without a policy only the UpToDate TCB status passes. */
export function inspectTdxEvidence(bundle: EvidenceBundle, options: TdxInspectOptions): Promise<VerificationReport> {
  const { policy, binding, ...rest } = options;
  return runTdxStages(bundle, { ...rest, policy: policy ?? 'none' }, binding ?? UNCHECKED);
}
