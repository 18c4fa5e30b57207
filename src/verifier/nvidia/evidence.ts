/**
 * The GPU part of verifying a server (called by verifyEvidence after the CPU TEE evidence and
 * the key config it binds have verified): the GPU evidence in the bundle must be exactly what
 * the key config lists (SHA-256 of each report and chain), each report must carry the nonce
 * derived from that key config (protocol/gpu-evidence.ts), verify completely
 * (verifyNvidiaGpuEvidence) and pass the policy's "gpus" section, with the CC state the key
 * config states (CC on, DevTools off). The count must match the policy when it names one.
 *
 * Policy without a "gpus" section: GPU evidence is not checked (the step says so). A section
 * with required: false: a server without GPU evidence passes; one with GPU evidence is
 * checked as if it were required (evidence offered is never accepted unchecked).
 */
import { CloisterError } from '../../errors.js';
import type { KeyConfig } from '../../protocol/key-config.js';
import { decodeGpuEvidence, gpuItemMatches, gpuNonceFor } from '../../protocol/gpu-evidence.js';
import type { GpuPolicy } from './policy.js';
import { verifyNvidiaGpuEvidence } from './verify.js';
import type { NvidiaGpuClaims, NvidiaGpuVerifyOptions } from './verify.js';

/** Test-only root replacements and limits, passed through to verifyNvidiaGpuEvidence. */
export type GpuVerifyExtras = Pick<NvidiaGpuVerifyOptions, 'deviceRootPem' | 'rimRootPem' | 'maxReportBytes' | 'maxRimBytes' | 'maxChainBytes'>;

export interface GpuCheckResult {
  /** The step detail when it passed. */
  readonly detail: string;
  readonly gpus: readonly NvidiaGpuClaims[];
}

/** Throws CloisterError with the failing GPU step's code; the message names GPU and step. */
export function checkServerGpus(gpuEvidence: Uint8Array | undefined, kc: KeyConfig, policy: GpuPolicy | undefined, at: Date, extras: GpuVerifyExtras = {}): GpuCheckResult {
  if (policy === undefined) return { detail: 'not checked: the policy has no gpus section', gpus: [] };
  const listed = kc.gpus ?? [];
  if (gpuEvidence === undefined && listed.length === 0) {
    if (policy.required) throw new CloisterError('POLICY_MISMATCH', 'the policy requires GPU evidence and the server presents none');
    return { detail: 'no GPU evidence (not required by the policy)', gpus: [] };
  }
  if (gpuEvidence === undefined) throw new CloisterError('EVIDENCE_MALFORMED', `the key config lists ${listed.length} GPUs but the bundle carries no GPU evidence`);
  if (listed.length === 0) throw new CloisterError('BINDING_MISMATCH', 'the bundle carries GPU evidence that the key config does not list');
  const items = decodeGpuEvidence(gpuEvidence);
  if (items.length !== listed.length) throw new CloisterError('BINDING_MISMATCH', `the bundle carries ${items.length} GPU reports, the key config lists ${listed.length}`);
  if (policy.count !== undefined && items.length !== policy.count) {
    throw new CloisterError('POLICY_MISMATCH', `the server attests ${items.length} GPUs, the policy requires ${policy.count}`);
  }
  const nonce = gpuNonceFor(kc);
  const gpus: NvidiaGpuClaims[] = [];
  items.forEach((item, i) => {
    const entry = listed[i];
    if (entry === undefined || !gpuItemMatches(item, entry)) {
      throw new CloisterError('BINDING_MISMATCH', `GPU ${i}: the report or chain is not the one the key config lists`);
    }
    const report = verifyNvidiaGpuEvidence(
      { report: item.report, certChain: item.certChain },
      { ...extras, nonce, driverRim: item.driverRim, vbiosRim: item.vbiosRim, policy, ccState: { ccEnabled: entry.ccEnabled, devTools: entry.devTools }, at },
    );
    const failed = report.steps.find((s) => !s.ok);
    if (!report.ok || report.claims === undefined) {
      throw new CloisterError(failed?.code ?? 'INTERNAL', `GPU ${i} ${failed?.step ?? 'verification'}: ${failed?.detail ?? 'failed'}`);
    }
    gpus.push(report.claims);
  });
  const versions = [...new Set(gpus.map((g) => `driver ${g.driverVersion} VBIOS ${g.vbiosVersion}`))].join('; ');
  return { detail: `${gpus.length} GPU${gpus.length === 1 ? '' : 's'} verified (${versions}); OCSP not checked`, gpus };
}
