/**
 * Builds a VerificationReport stage by stage, for the Nitro, SEV-SNP and TDX verifiers
 * (internal to attestation).
 *
 * A stage is a function that throws to fail and returns an optional detail to pass. The
 * runner records one VerificationStep per stage; the caller decides whether a failed stage
 * ends the pipeline (the cryptographic ones do) or the next stage still runs (SEV-SNP/TDX
 * policy and binding, so that every reason for rejection is reported). The report is `ok`
 * only when at least one stage ran and none failed: a failure can never be overwritten.
 */
import { timingSafeEqualBytes } from '../crypto/ct.js';
import { CloisterError, asCloisterError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { REPORT_DATA_BYTES, reportDataFor } from '../protocol/binding.js';
import type { Platform, VerificationReport, VerificationStep, VerifiedClaims } from '../core/types.js';

export class StepRunner {
  readonly #platform: Platform;
  readonly #simulated: boolean;
  readonly #steps: VerificationStep[] = [];
  #claims: VerifiedClaims | undefined;

  constructor(platform: Platform, simulated = platform === 'simulated') {
    this.#platform = platform;
    this.#simulated = simulated;
  }

  /**
   * Run one stage and record it. Returns false when it failed; the step then carries the
   * thrown CloisterError's code and message, or `fallback` for anything else thrown.
   */
  run(step: string, fallback: ErrorCode, fn: () => string | undefined): boolean {
    try {
      return this.#pass(step, fn());
    } catch (err) {
      return this.#fail(step, err, fallback);
    }
  }

  /** `run` for a stage that awaits (a collateral or certificate fetch). */
  async runAsync(step: string, fallback: ErrorCode, fn: () => Promise<string | undefined>): Promise<boolean> {
    try {
      return this.#pass(step, await fn());
    } catch (err) {
      return this.#fail(step, err, fallback);
    }
  }

  /** Claims go into the report once the cryptographic stages passed. */
  setClaims(claims: VerifiedClaims): void {
    this.#claims = claims;
  }

  /** The report so far: a copy of the steps, claims when set. */
  finish(): VerificationReport {
    const steps = [...this.#steps];
    const ok = steps.length > 0 && steps.every((s) => s.ok);
    const base = { ok, platform: this.#platform, simulated: this.#simulated, steps };
    return this.#claims === undefined ? base : { ...base, claims: this.#claims };
  }

  #pass(step: string, detail: string | undefined): true {
    this.#steps.push(detail === undefined ? { step, ok: true } : { step, ok: true, detail });
    return true;
  }

  #fail(step: string, err: unknown, fallback: ErrorCode): false {
    const e = asCloisterError(err, fallback);
    this.#steps.push({ step, ok: false, code: e.code, detail: e.message });
    return false;
  }
}

/** The policy stage's pass detail when the caller gave no policy (raw evidence inspection). */
export const POLICY_SKIPPED = 'skipped: no policy given (inspection only)';

/** What the SEV-SNP / TDX binding stage checks report_data against. */
interface ReportDataExpectation {
  /** The client's nonce, bound into report_data together with the key config. */
  readonly nonce?: Uint8Array;
  /** Exact 64-byte report_data, replacing the key-config binding (evidence not made by Cloister). */
  readonly expectedReportData?: Uint8Array;
  /** Check nothing (raw evidence inspection without a key config); the step says "skipped". */
  readonly skipBinding?: boolean;
}

/**
 * The SEV-SNP / TDX binding stage: report_data must equal
 * SHA-512("cloister/attest/v1\0" || keyConfig || nonce) (binding.ts), or the caller's exact
 * 64-byte value, compared in constant time. Throws CloisterError(BINDING_MISMATCH).
 */
export function checkReportData(reportData: Uint8Array, keyConfig: Uint8Array, expect: ReportDataExpectation): string | undefined {
  if (expect.skipBinding === true) return 'skipped: no key config to bind (raw evidence inspection)';
  const expected = expect.expectedReportData ?? reportDataFor(keyConfig, expect.nonce);
  if (expected.byteLength !== REPORT_DATA_BYTES || !timingSafeEqualBytes(expected, reportData)) {
    throw new CloisterError('BINDING_MISMATCH', 'report_data does not bind the key config and nonce');
  }
  return undefined;
}
