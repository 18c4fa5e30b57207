/**
 * Offline verification of NVIDIA confidential-computing GPU evidence (Hopper H100/H200;
 * Blackwell uses the same SPDM 1.1 report and RIM formats but no Blackwell vector has been
 * checked), as a sequence of named steps, each recorded with its error code:
 *
 *   decode        SPDM GET_MEASUREMENTS request + response, strict (spdm.ts)
 *   device-chain  the GPU's attestation key chain (leaf first, as NVML returns it) verifies
 *                 to the pinned NVIDIA Device Identity CA at the verification instant
 *   fwid          the firmware id in the report equals the one in the leaf certificate's
 *                 TCG DICE TcbInfo extension (2.23.133.5.4.1), as NVIDIA's verifier checks
 *   signature     ECDSA P-384 / SHA-384 over request || response by the leaf key
 *   nonce         the request nonce equals the expected one (constant time)
 *   driver-rim    the driver RIM's signer chain (to the pinned CoRIM root) and XML signature
 *                 verify, and its version is the driver version the report states
 *   vbios-rim     the same for the VBIOS RIM
 *   measurements  every active RIM measurement equals one of its alternatives in the report
 *                 (RIM index i is SPDM block i + 1; driver and VBIOS RIMs may not both set
 *                 one index; index 35 is skipped when NVDEC0 is disabled, as NVIDIA does)
 *   policy        allowed driver / VBIOS versions; CC mode on and DevTools (debug) off, from
 *                 the CVM's NVML reading when the caller has one (see GpuCcState)
 *   revocation    OCSP: not implemented. Without OCSP responses the step passes and says
 *                 so: what is accepted then is a chain and RIM signer chain that verify to
 *                 the pinned roots at the verification instant, so a revoked GPU key or RIM
 *                 signing key is NOT detected. A policy with requireRevocationCheck fails
 *                 here, closed.
 *
 * The cryptographic steps end the pipeline on failure; nonce, RIMs, measurements, policy
 * and revocation all run once the signature holds, so every reason for rejection is listed.
 */
import { createHash, verify as cryptoVerify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { timingSafeEqualBytes } from '../../crypto/ct.js';
import { CloisterError, asCloisterError } from '../../errors.js';
import type { ErrorCode } from '../../errors.js';
import { pemToDerList } from '../x509/certificate.js';
import { verifyCertificateChain } from '../x509/chain.js';
import type { ChainResult } from '../x509/chain.js';

/** One certificate of a verified path, root first (as the x509 chain code reports it). */
type ChainCertificateReport = Extract<ChainResult, { ok: true }>['certificates'][number];
import type { VerificationStep } from '../../core/types.js';
import { NVIDIA_DEVICE_ROOT_PEM, NVIDIA_DEVICE_ROOT_SHA256, NVIDIA_RIM_ROOT_PEM, NVIDIA_RIM_ROOT_SHA256 } from './roots.js';
import {
  NVDEC0_DISABLED,
  OPAQUE_FIELD,
  SPDM_NONCE_BYTES,
  driverVersionOf,
  parseNvidiaAttestationReport,
  reportBytesFrom,
  vbiosVersionOf,
} from './spdm.js';
import type { NvidiaAttestationReport } from './spdm.js';
import { verifyRim } from './rim.js';
import type { VerifiedRim } from './rim.js';
import type { GpuPolicy } from './policy.js';

/** The TCG DICE TcbInfo extension that carries the firmware id in NVIDIA's leaf certificates. */
export const TCG_DICE_TCB_INFO_OID = '2.23.133.5.4.1';
/** Largest certificate chain file accepted (5 certificates of < 1 KiB in PEM). */
export const DEFAULT_MAX_CHAIN_BYTES = 64 * 1024;

/** GPU evidence as a CVM collects it for one GPU. */
export interface NvidiaGpuEvidence {
  /** SPDM request || response: raw bytes or hex text. */
  readonly report: Uint8Array;
  /** The attestation key chain, PEM, leaf first (nvmlDeviceGetConfComputeGpuCertificate). */
  readonly certChain: Uint8Array;
}

/**
 * Confidential-computing state as NVML reports it inside the CVM
 * (nvmlSystemGetConfComputeState: ccFeature, devToolsMode). It is not part of the signed
 * SPDM report: a client trusts it as far as it trusts the CVM that read it, i.e. when it
 * comes inside a key config that the CPU TEE's evidence binds.
 */
export interface GpuCcState {
  readonly ccEnabled: boolean;
  readonly devTools: boolean;
}

export interface NvidiaGpuVerifyOptions {
  /** The 32-byte nonce the report must carry. Required unless skipNonce. */
  readonly nonce?: Uint8Array;
  /** Inspection only: do not compare the nonce (the step says "skipped"). */
  readonly skipNonce?: boolean;
  /** The driver RIM and the VBIOS RIM (SWID XML). */
  readonly driverRim: Uint8Array | string;
  readonly vbiosRim: Uint8Array | string;
  /** The GPU policy; 'none' for inspection (versions are printed, not compared). */
  readonly policy: GpuPolicy | 'none';
  /** From the key config, when the evidence comes with CPU evidence (see GpuCcState). */
  readonly ccState?: GpuCcState;
  /** Verification instant for every certificate. Default: now. */
  readonly at?: Date;
  /** Replace the pinned roots (tests only): PEM. */
  readonly deviceRootPem?: string;
  readonly rimRootPem?: string;
  readonly maxReportBytes?: number;
  readonly maxRimBytes?: number;
  readonly maxChainBytes?: number;
}

export interface NvidiaGpuClaims {
  readonly driverVersion: string;
  readonly vbiosVersion: string;
  readonly requestNonce: string;
  /** SPDM block index -> hex value. */
  readonly measurements: Readonly<Record<string, string>>;
  readonly nvdec0: 'enabled' | 'disabled' | 'unknown';
  readonly chipSku?: string;
  readonly project?: string;
  readonly deviceChain: readonly ChainCertificateReport[];
  readonly driverRim?: { readonly version: string; readonly sha256: string; readonly tagId: string };
  readonly vbiosRim?: { readonly version: string; readonly sha256: string; readonly tagId: string };
}

export interface NvidiaGpuReport {
  readonly ok: boolean;
  readonly platform: 'nvidia-gpu';
  readonly steps: readonly VerificationStep[];
  /** Present once the report signature verified. */
  readonly claims?: NvidiaGpuClaims;
}

class Steps {
  readonly steps: VerificationStep[] = [];
  run(step: string, fallback: ErrorCode, fn: () => string | undefined): boolean {
    try {
      const detail = fn();
      this.steps.push(detail === undefined ? { step, ok: true } : { step, ok: true, detail });
      return true;
    } catch (err) {
      const e = asCloisterError(err, fallback);
      this.steps.push({ step, ok: false, code: e.code, detail: e.message });
      return false;
    }
  }
  finish(claims?: NvidiaGpuClaims): NvidiaGpuReport {
    const ok = this.steps.length > 0 && this.steps.every((s) => s.ok);
    const base = { ok, platform: 'nvidia-gpu' as const, steps: [...this.steps] };
    return claims === undefined ? base : { ...base, claims };
  }
}

function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

function asciiField(report: NvidiaAttestationReport, type: number): string | undefined {
  const v = report.opaque.get(type);
  if (v === undefined) return undefined;
  let end = v.byteLength;
  while (end > 0 && v[end - 1] === 0) end--;
  const text = Buffer.from(v.subarray(0, end)).toString('latin1');
  return /^[\x20-\x7e]*$/.test(text) ? text : hex(v);
}

function pinnedRoot(pem: string | undefined, fallback: string, sha256: string, what: string): string {
  if (pem !== undefined) return pem;
  const der = pemToDerList(fallback)[0];
  const digest = der === undefined ? '' : createHash('sha256').update(der).digest('hex');
  if (digest !== sha256) throw new CloisterError('ROOT_UNTRUSTED', `the bundled ${what} has SHA-256 ${digest}, not the pinned ${sha256}`);
  return fallback;
}

/** Verify one GPU's evidence. Never throws for bad evidence: failures are steps with codes. */
export function verifyNvidiaGpuEvidence(evidence: NvidiaGpuEvidence, options: NvidiaGpuVerifyOptions): NvidiaGpuReport {
  const run = new Steps();
  const at = options.at ?? new Date();
  let report: NvidiaAttestationReport | undefined;
  if (
    !run.run('decode', 'EVIDENCE_MALFORMED', () => {
      if (!Number.isFinite(at.getTime())) throw new CloisterError('INVALID_ARGUMENT', 'bad verification time');
      report = parseNvidiaAttestationReport(reportBytesFrom(evidence.report), options.maxReportBytes === undefined ? {} : { maxBytes: options.maxReportBytes });
      return `SPDM 1.1 MEASUREMENTS, ${report.blocks.length} blocks, ${report.opaque.size} opaque fields`;
    }) ||
    report === undefined
  ) {
    return run.finish();
  }
  const r = report;

  let chainCerts: readonly ChainCertificateReport[] = [];
  let leafKey: KeyObject | undefined;
  let leafTcbInfo: Uint8Array | undefined;
  if (
    !run.run('device-chain', 'CERT_CHAIN_INVALID', () => {
      const max = options.maxChainBytes ?? DEFAULT_MAX_CHAIN_BYTES;
      if (evidence.certChain.byteLength > max) {
        throw new CloisterError('LIMIT_EXCEEDED', `GPU certificate chain is ${evidence.certChain.byteLength} bytes, over the limit of ${max} (maxChainBytes)`);
      }
      let ders: Uint8Array[];
      try {
        ders = pemToDerList(new TextDecoder('utf-8', { fatal: true }).decode(evidence.certChain));
      } catch (cause) {
        throw new CloisterError('CERT_CHAIN_INVALID', `GPU certificate chain is not PEM: ${cause instanceof Error ? cause.message : 'unknown'}`, { cause });
      }
      const leaf = ders[0];
      if (leaf === undefined || ders.length < 2) throw new CloisterError('CERT_CHAIN_INVALID', `GPU certificate chain holds ${ders.length} certificates; expected leaf .. Device Identity CA`);
      const root = pinnedRoot(options.deviceRootPem, NVIDIA_DEVICE_ROOT_PEM, NVIDIA_DEVICE_ROOT_SHA256, 'NVIDIA Device Identity CA');
      const result = verifyCertificateChain({
        leaf,
        intermediates: ders.slice(1, -1).reverse(),
        presentedRoot: ders[ders.length - 1] ?? leaf,
        trustedRoots: [root],
        at,
      });
      if (!result.ok) throw new CloisterError(result.code, `GPU certificate chain: ${result.message}`);
      chainCerts = result.certificates;
      leafKey = result.leafPublicKey;
      const leafCert = result.path[result.path.length - 1];
      const ext = leafCert?.asn.tbsCertificate.extensions?.find((e) => e.extnID === TCG_DICE_TCB_INFO_OID);
      leafTcbInfo = ext === undefined ? undefined : new Uint8Array(ext.extnValue.buffer);
      return `${result.certificates.length} certificates to ${result.certificates[0]?.subject ?? '?'}`;
    })
  ) {
    return run.finish();
  }

  // NVIDIA's verifier: when the report carries a FWID, the leaf's TcbInfo must end with it.
  if (
    !run.run('fwid', 'CERT_CHAIN_INVALID', () => {
      const fwid = r.opaque.get(OPAQUE_FIELD.FWID);
      if (fwid === undefined || fwid.byteLength === 0) return 'no FWID in the report (older firmware): not compared';
      if (leafTcbInfo === undefined) throw new CloisterError('CERT_CHAIN_INVALID', 'the report has a FWID but the leaf certificate has no TcbInfo extension');
      const tail = leafTcbInfo.subarray(Math.max(0, leafTcbInfo.byteLength - fwid.byteLength));
      if (!timingSafeEqualBytes(tail, fwid)) throw new CloisterError('CERT_CHAIN_INVALID', 'the report FWID differs from the leaf certificate TcbInfo FWID');
      return hex(fwid);
    })
  ) {
    return run.finish();
  }

  if (
    !run.run('signature', 'EVIDENCE_SIGNATURE_INVALID', () => {
      let ok = false;
      try {
        ok = leafKey !== undefined && cryptoVerify('sha384', r.signedBytes, { key: leafKey, dsaEncoding: 'ieee-p1363' }, r.signature);
      } catch {
        ok = false;
      }
      if (!ok) throw new CloisterError('EVIDENCE_SIGNATURE_INVALID', 'the SPDM MEASUREMENTS signature does not verify with the GPU attestation key');
      return 'ECDSA P-384 / SHA-384 over request || response';
    })
  ) {
    return run.finish();
  }

  // Claims once the signature holds (a later step may still fail).
  let driverVersion = '';
  let vbiosVersion = '';
  const versionsOk = run.run('versions', 'EVIDENCE_MALFORMED', () => {
    driverVersion = driverVersionOf(r);
    vbiosVersion = vbiosVersionOf(r);
    return `driver ${driverVersion}, VBIOS ${vbiosVersion}`;
  });
  const nvdecRaw = r.opaque.get(OPAQUE_FIELD.NVDEC0_STATUS);
  const nvdec0 = nvdecRaw === undefined || nvdecRaw.byteLength !== 1 ? 'unknown' : nvdecRaw[0] === NVDEC0_DISABLED ? 'disabled' : 'enabled';
  const measurements: Record<string, string> = {};
  // Integer keys: JavaScript keeps them in ascending order (a padded "01" would not be one).
  for (const b of r.blocks) measurements[String(b.index)] = hex(b.value);
  const chipSku = asciiField(r, OPAQUE_FIELD.CHIP_SKU);
  const project = asciiField(r, OPAQUE_FIELD.PROJECT);
  let driverRim: VerifiedRim | undefined;
  let vbiosRim: VerifiedRim | undefined;
  const claims = (): NvidiaGpuClaims => ({
    driverVersion,
    vbiosVersion,
    requestNonce: hex(r.requestNonce),
    measurements,
    nvdec0,
    ...(chipSku === undefined ? {} : { chipSku }),
    ...(project === undefined ? {} : { project }),
    deviceChain: chainCerts,
    ...(driverRim === undefined ? {} : { driverRim: { version: driverRim.version, sha256: driverRim.sha256, tagId: driverRim.tagId } }),
    ...(vbiosRim === undefined ? {} : { vbiosRim: { version: vbiosRim.version, sha256: vbiosRim.sha256, tagId: vbiosRim.tagId } }),
  });

  run.run('nonce', 'BINDING_MISMATCH', () => {
    if (options.skipNonce === true) return 'skipped: no nonce given (inspection only)';
    const expected = options.nonce;
    if (expected === undefined || expected.byteLength !== SPDM_NONCE_BYTES) {
      throw new CloisterError('INVALID_ARGUMENT', `the expected GPU nonce must be ${SPDM_NONCE_BYTES} bytes`);
    }
    if (!timingSafeEqualBytes(expected, r.requestNonce)) {
      throw new CloisterError('BINDING_MISMATCH', `the GPU report nonce ${hex(r.requestNonce)} is not the expected ${hex(expected)}`);
    }
    return 'the report carries the expected nonce';
  });

  let rimRoot: string;
  try {
    rimRoot = pinnedRoot(options.rimRootPem, NVIDIA_RIM_ROOT_PEM, NVIDIA_RIM_ROOT_SHA256, 'NVIDIA CoRIM signing root');
  } catch (err) {
    run.run('driver-rim', 'ROOT_UNTRUSTED', () => {
      throw err;
    });
    return run.finish(claims());
  }
  const rimOptions = (what: string): Parameters<typeof verifyRim>[1] => ({
    trustedRoots: [rimRoot],
    at,
    what,
    ...(options.maxRimBytes === undefined ? {} : { maxBytes: options.maxRimBytes }),
  });
  run.run('driver-rim', 'EVIDENCE_SIGNATURE_INVALID', () => {
    const rim = verifyRim(options.driverRim, rimOptions('driver RIM'));
    if (!versionsOk || rim.version !== driverVersion.toLowerCase()) {
      throw new CloisterError('POLICY_MISMATCH', `the driver RIM is for driver ${rim.version}, the GPU reports ${driverVersion || '(unreadable)'}`);
    }
    driverRim = rim;
    return `${rim.version} (${rim.product}), signed by ${rim.signer[rim.signer.length - 1]?.subject ?? '?'}`;
  });
  run.run('vbios-rim', 'EVIDENCE_SIGNATURE_INVALID', () => {
    const rim = verifyRim(options.vbiosRim, rimOptions('VBIOS RIM'));
    if (!versionsOk || rim.version !== vbiosVersion) {
      throw new CloisterError('POLICY_MISMATCH', `the VBIOS RIM is for VBIOS ${rim.version}, the GPU reports ${vbiosVersion || '(unreadable)'}`);
    }
    vbiosRim = rim;
    return `${rim.version} (${rim.product}), signed by ${rim.signer[rim.signer.length - 1]?.subject ?? '?'}`;
  });

  run.run('measurements', 'POLICY_MISMATCH', () => {
    if (driverRim === undefined || vbiosRim === undefined) throw new CloisterError('POLICY_MISMATCH', 'not compared: a RIM did not verify');
    const golden = new Map<number, { alternatives: readonly string[]; size: number; source: string }>();
    for (const m of driverRim.measurements) if (m.active) golden.set(m.index, { alternatives: m.alternatives, size: m.size, source: 'driver' });
    for (const m of vbiosRim.measurements) {
      if (!m.active) continue;
      if (golden.has(m.index)) throw new CloisterError('POLICY_MISMATCH', `the driver and VBIOS RIMs both set measurement index ${m.index}`);
      golden.set(m.index, { alternatives: m.alternatives, size: m.size, source: 'VBIOS' });
    }
    const runtime = new Map(r.blocks.map((b) => [b.index - 1, b.value]));
    const mismatched: string[] = [];
    let compared = 0;
    for (const [index, g] of [...golden.entries()].sort((a, b) => a[0] - b[0])) {
      // NVIDIA's verifier skips index 35 when NVDEC0 is disabled (its measurement is then not meaningful).
      if (index === 35 && nvdec0 === 'disabled') continue;
      const value = runtime.get(index);
      let match = false;
      if (value !== undefined && value.byteLength === g.size) {
        for (const alt of g.alternatives) match = timingSafeEqualBytes(Buffer.from(alt, 'hex'), value) || match;
      }
      if (!match) mismatched.push(`${index} (${g.source})`);
      compared++;
    }
    if (mismatched.length > 0) throw new CloisterError('POLICY_MISMATCH', `GPU measurements differ from the RIMs at index ${mismatched.join(', ')}`);
    return `${compared} active measurements match (driver ${driverRim.version}, VBIOS ${vbiosRim.version})`;
  });

  run.run('policy', 'POLICY_MISMATCH', () => {
    const notes: string[] = [];
    if (options.ccState !== undefined) {
      if (options.ccState.devTools) throw new CloisterError('DEBUG_MODE', 'the GPU runs in CC DevTools (debug) mode');
      if (!options.ccState.ccEnabled) throw new CloisterError('POLICY_MISMATCH', 'the GPU is not in confidential-computing mode');
      notes.push('CC on, DevTools off (NVML reading bound by the CPU evidence)');
    } else {
      notes.push('CC mode / DevTools: not part of the signed GPU report; not checked here');
    }
    if (options.policy === 'none') return `skipped: no policy given (inspection only); ${notes.join('; ')}`;
    const p = options.policy;
    if (!p.allowedDriverVersions.includes(driverVersion.toLowerCase())) {
      throw new CloisterError('POLICY_MISMATCH', `GPU driver ${driverVersion} is not allowed (allowed: ${p.allowedDriverVersions.join(', ')})`);
    }
    if (!p.allowedVbiosVersions.includes(vbiosVersion)) {
      throw new CloisterError('POLICY_MISMATCH', `GPU VBIOS ${vbiosVersion} is not allowed (allowed: ${p.allowedVbiosVersions.join(', ')})`);
    }
    return `driver ${driverVersion} and VBIOS ${vbiosVersion} allowed; ${notes.join('; ')}`;
  });

  run.run('revocation', 'CERT_CHAIN_INVALID', () => {
    if (options.policy !== 'none' && options.policy.requireRevocationCheck) {
      throw new CloisterError('CERT_CHAIN_INVALID', 'the policy requires an OCSP revocation check, which this verifier does not implement');
    }
    return 'not checked (no OCSP): a revoked GPU or RIM signing key would be accepted';
  });
  return run.finish(claims());
}
