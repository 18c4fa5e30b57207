/**
 * The one entry point a client calls before trusting a key config:
 *
 *   verifyEvidence(bundle, { policy, trustedRoots?, at?, nonce? })
 *
 * 1. the policy must have a section for the bundle's platform (fail closed);
 * 2. the key config bytes are decoded strictly (never re-encoded: digests use the bytes);
 * 3. the platform verifier checks the hardware evidence, the measurements against the
 *    policy, and the binding of exactly these key config bytes and the client's nonce;
 * 4. the key config itself: its platform, its validity window (KEY_STALE once expired),
 *    and the model digests the policy names;
 * 5. the confidential GPUs, when the policy has a "gpus" section: the bundle's GPU evidence
 *    is the one the key config lists, fresh for it, and verifies (verifier/nvidia/evidence.ts).
 *
 * Every failure throws EvidenceVerificationError (a CloisterError) with the failing step's
 * code and the full per-step report attached.
 */
import { CloisterError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { timingSafeEqualBytes } from '../crypto/ct.js';
import { decodeKeyConfig } from '../protocol/key-config.js';
import type { KeyConfig } from '../protocol/key-config.js';
import { nitroBindingFor } from '../protocol/binding.js';
import { verifyNitroDocumentDetailed } from './nitro/verify.js';
import type { VerifyNitroOptions } from './nitro/verify.js';
import { nitroPcrsProblem } from './policy.js';
import type { Policy } from './policy.js';
import { verifySevSnpEvidence } from './sev-snp/index.js';
import type { SevSnpVerifyOptions } from './sev-snp/index.js';
import { verifyTdxEvidence } from './tdx/index.js';
import type { TdxVerifyOptions } from './tdx/index.js';
import { PLATFORMS } from '../core/types.js';
import { toHex } from '../core/hex.js';
import type { EvidenceBundle, Platform, VerificationReport, VerificationStep, VerifiedClaims } from '../core/types.js';
import type { CertificateInput } from './x509/certificate.js';
import { checkServerGpus } from './nvidia/evidence.js';
import type { GpuVerifyExtras } from './nvidia/evidence.js';
import type { NvidiaGpuClaims } from './nvidia/verify.js';

export { verifyNitroDocument } from './nitro/verify.js';

/** Tolerance for a key config's notBefore against the client's clock. */
export const KEY_CONFIG_CLOCK_SKEW_SECONDS = 30;

/**
 * Roots the caller trusts, per platform. Simulated evidence is accepted only with explicit
 * trust: a root given here, or the root SHA-256 pinned in the policy's 'simulated' section.
 */
export interface TrustedRoots {
  /** Default: the bundled AWS Nitro Enclaves Root G1 (never replaced by any policy pin). */
  readonly nitro?: readonly CertificateInput[];
  /**
   * No default. Without a root here, the policy's `platforms.simulated.rootSha256` is the
   * explicit trust: the evidence's presented root (cabundle[0]) is the anchor only when its
   * DER SHA-256 equals that pin (constant-time). With neither, ROOT_UNTRUSTED.
   */
  readonly simulated?: readonly CertificateInput[];
}

export interface VerifyEvidenceOptions {
  readonly policy: Policy;
  readonly trustedRoots?: TrustedRoots;
  /** Verification time. Default: now. */
  readonly at?: Date;
  /** The nonce the client sent with its evidence request (0..64 bytes; empty = none). */
  readonly nonce?: Uint8Array;
  /** Extra SEV-SNP inputs (a VCEK from a file, a KDS client, test roots). */
  readonly sevSnp?: Omit<SevSnpVerifyOptions, 'policy' | 'at' | 'nonce'>;
  /** Extra TDX inputs (collateral from a file, a PCS fetcher, limits). */
  readonly tdx?: Omit<TdxVerifyOptions, 'policy' | 'at' | 'nonce'>;
  /** Nitro/simulated document limits (sizes, clock skew). maxAgeMs defaults to the policy's maxAgeSeconds. */
  readonly nitro?: Omit<VerifyNitroOptions, 'platform' | 'trustedRoots' | 'rootSha256' | 'at' | 'pcrs' | 'binding'>;
  /** GPU evidence limits; the root replacements are for tests only. */
  readonly gpu?: GpuVerifyExtras;
}

export interface VerifiedEvidence {
  readonly platform: Platform;
  readonly simulated: boolean;
  /** The decoded key config, now trusted. */
  readonly keyConfig: KeyConfig;
  /** The exact key config bytes that the evidence binds (a private copy). */
  readonly keyConfigBytes: Uint8Array;
  readonly claims: VerifiedClaims;
  readonly report: VerificationReport;
  /** The verified GPUs (empty when the policy has no gpus section or the server has none). */
  readonly gpus: readonly NvidiaGpuClaims[];
}

/** A verification failure: `code` is the failing step's, `report` holds every step. */
export class EvidenceVerificationError extends CloisterError {
  readonly report: VerificationReport;
  readonly step: string;

  constructor(code: ErrorCode, message: string, step: string, report: VerificationReport, cause?: unknown) {
    super(code, message, { detail: { step, platform: report.platform }, ...(cause === undefined ? {} : { cause }) });
    this.name = 'EvidenceVerificationError';
    this.report = report;
    this.step = step;
  }
}

function failWith(platform: Platform, steps: readonly VerificationStep[], step: string, code: ErrorCode, message: string, claims?: VerifiedClaims): never {
  const all = [...steps, { step, ok: false, code, detail: message }];
  const report: VerificationReport =
    claims === undefined
      ? { ok: false, platform, simulated: platform === 'simulated', steps: all }
      : { ok: false, platform, simulated: platform === 'simulated', steps: all, claims };
  throw new EvidenceVerificationError(code, message, step, report);
}

function throwIfFailed(report: VerificationReport): void {
  if (report.ok) return;
  const failed = report.steps.find((s) => !s.ok);
  const code = failed?.code ?? 'INTERNAL';
  throw new EvidenceVerificationError(code, `${failed?.step ?? 'verification'}: ${failed?.detail ?? 'failed'}`, failed?.step ?? 'verification', report);
}

async function verifyPlatform(
  bundle: EvidenceBundle,
  keyConfigBytes: Uint8Array,
  keyConfig: KeyConfig,
  options: VerifyEvidenceOptions,
  at: Date,
  preSteps: readonly VerificationStep[],
): Promise<VerificationReport> {
  const policy = options.policy.platforms;
  switch (bundle.platform) {
    case 'nitro':
    case 'simulated': {
      const section = bundle.platform === 'nitro' ? policy.nitro : policy.simulated;
      if (section === undefined) return failWith(bundle.platform, preSteps, 'policy', 'POLICY_MISMATCH', 'unreachable: no policy section');
      // parsePolicy refuses an empty PCR map, but a Policy built in code could carry one: a
      // client check must never pass on measurements nobody named (fail closed).
      if (section.pcrs.size === 0) return failWith(bundle.platform, preSteps, 'policy', 'POLICY_INVALID', 'the policy names no PCR');
      const given = bundle.platform === 'nitro' ? options.trustedRoots?.nitro : options.trustedRoots?.simulated;
      // An empty simulated list means "no root given"; nitro's list is passed on as it is.
      const roots = bundle.platform === 'simulated' && given?.length === 0 ? undefined : given;
      const rootSha256 = bundle.platform === 'simulated' ? policy.simulated?.rootSha256 : undefined;
      // Simulated: a given root, or the policy's pinned root digest, is the explicit trust
      // (the pinned-root case is resolved against cabundle[0] by verifyNitroDocumentDetailed).
      if (bundle.platform === 'simulated' && roots === undefined && rootSha256 === undefined) {
        return failWith('simulated', preSteps, 'certificate-chain', 'ROOT_UNTRUSTED', 'simulated evidence needs an explicitly trusted simulated root or a rootSha256 pin in the policy');
      }
      const maxAgeMs = section.maxAgeSeconds === undefined ? options.nitro?.maxAgeMs : section.maxAgeSeconds * 1000;
      const result = verifyNitroDocumentDetailed(bundle.evidence, {
        ...options.nitro,
        platform: bundle.platform,
        ...(roots === undefined ? {} : { trustedRoots: roots }),
        ...(rootSha256 === undefined ? {} : { rootSha256 }),
        ...(maxAgeMs === undefined ? {} : { maxAgeMs }),
        at,
        pcrs: section.pcrs,
        binding: nitroBindingFor(keyConfigBytes, keyConfig.hpkePublicKey, options.nonce),
      });
      return result.report;
    }
    case 'sev-snp': {
      const section = policy['sev-snp'];
      if (section === undefined) return failWith('sev-snp', preSteps, 'policy', 'POLICY_MISMATCH', 'unreachable: no policy section');
      return verifySevSnpEvidence(
        { platform: 'sev-snp', evidence: bundle.evidence, keyConfig: keyConfigBytes, ...(bundle.certificates === undefined ? {} : { certificates: bundle.certificates }) },
        { ...options.sevSnp, policy: section, at, ...(options.nonce === undefined ? {} : { nonce: options.nonce }) },
      );
    }
    case 'tdx': {
      const section = policy.tdx;
      if (section === undefined) return failWith('tdx', preSteps, 'policy', 'POLICY_MISMATCH', 'unreachable: no policy section');
      return verifyTdxEvidence(
        { platform: 'tdx', evidence: bundle.evidence, keyConfig: keyConfigBytes, ...(bundle.collateral === undefined ? {} : { collateral: bundle.collateral }) },
        { ...options.tdx, policy: section, at, ...(options.nonce === undefined ? {} : { nonce: options.nonce }) },
      );
    }
  }
}

/**
 * Verify evidence against a policy and return the trusted key config. Throws
 * EvidenceVerificationError (a CloisterError) with the failing step's code.
 */
export async function verifyEvidence(bundle: EvidenceBundle, options: VerifyEvidenceOptions): Promise<VerifiedEvidence> {
  const at = options.at ?? new Date();
  if (!Number.isFinite(at.getTime())) throw new CloisterError('INVALID_ARGUMENT', 'verification time is not a valid date');
  if (typeof bundle !== 'object' || bundle === null || !PLATFORMS.includes(bundle.platform)) {
    throw new CloisterError('EVIDENCE_MALFORMED', 'evidence bundle names no known platform');
  }
  const platform = bundle.platform;
  if (!(bundle.evidence instanceof Uint8Array) || !(bundle.keyConfig instanceof Uint8Array)) {
    return failWith(platform, [], 'decode', 'EVIDENCE_MALFORMED', 'evidence and keyConfig must be byte arrays');
  }
  // Private copies: the caller's buffers may change while we await.
  const evidence = Uint8Array.from(bundle.evidence);
  const keyConfigBytes = Uint8Array.from(bundle.keyConfig);
  const nonce = options.nonce === undefined ? undefined : Uint8Array.from(options.nonce);
  const steps: VerificationStep[] = [];

  if (options.policy.platforms[platform] === undefined) {
    return failWith(platform, steps, 'policy', 'POLICY_MISMATCH', `the policy does not accept platform ${platform} (it names: ${Object.keys(options.policy.platforms).join(', ')})`);
  }
  // parsePolicy refuses PCR sets that do not identify the workload; a Policy built in code is
  // held to the same rule here (TDX's RTMR rule is enforced by checkTdxPolicy).
  const nitroLike = platform === 'nitro' ? options.policy.platforms.nitro : platform === 'simulated' ? options.policy.platforms.simulated : undefined;
  const pcrProblem = nitroLike === undefined || nitroLike.pcrs.size === 0 ? undefined : nitroPcrsProblem(nitroLike.pcrs);
  if (pcrProblem !== undefined) return failWith(platform, steps, 'policy', 'POLICY_INVALID', `the ${platform} policy ${pcrProblem}`);
  if (options.policy.nonceRequired && (nonce === undefined || nonce.byteLength === 0)) {
    return failWith(platform, steps, 'binding', 'INVALID_ARGUMENT', 'the policy requires a nonce and none was given');
  }

  let keyConfig: KeyConfig;
  try {
    keyConfig = decodeKeyConfig(keyConfigBytes);
  } catch (err) {
    const code = err instanceof CloisterError ? err.code : 'MALFORMED';
    return failWith(platform, steps, 'key-config', code, `key config does not decode: ${err instanceof Error ? err.message : 'unknown'}`);
  }

  const platformBundle: EvidenceBundle = {
    platform,
    evidence,
    keyConfig: keyConfigBytes,
    ...(bundle.certificates === undefined ? {} : { certificates: Uint8Array.from(bundle.certificates) }),
    ...(bundle.collateral === undefined ? {} : { collateral: Uint8Array.from(bundle.collateral) }),
  };
  const sub = nonce === undefined ? options : { ...options, nonce };
  const report = await verifyPlatform(platformBundle, keyConfigBytes, keyConfig, sub, at, steps);
  throwIfFailed(report);
  const claims = report.claims;
  if (claims === undefined) return failWith(platform, report.steps, 'claims', 'INTERNAL', 'verifier returned no claims');
  if (claims.platform !== platform || claims.simulated !== (platform === 'simulated')) {
    return failWith(platform, report.steps, 'claims', 'INTERNAL', 'verifier reported another platform');
  }

  // The key config, now known to come from the TEE: its own claims must hold too.
  const kcProblem = checkKeyConfigClaims(keyConfig, platform, at, options.policy);
  if (kcProblem !== null) return failWith(platform, report.steps, 'key-config', kcProblem.code, kcProblem.message, claims);
  const kcStep: VerificationStep = { step: 'key-config', ok: true, detail: `key ${keyConfig.keyId} valid until ${new Date(keyConfig.expiresAt * 1000).toISOString()}` };
  let gpuResult;
  try {
    gpuResult = checkServerGpus(
      bundle.gpuEvidence === undefined ? undefined : Uint8Array.from(bundle.gpuEvidence),
      keyConfig,
      options.policy.gpus,
      at,
      options.gpu,
    );
  } catch (err) {
    const e = err instanceof CloisterError ? err : new CloisterError('INTERNAL', 'GPU verification failed', { cause: err });
    return failWith(platform, [...report.steps, kcStep], 'gpu', e.code, e.message, claims);
  }
  // The gpu step appears when GPUs are in play (a policy section, or GPUs the server lists).
  const gpuInPlay = options.policy.gpus !== undefined || keyConfig.gpus !== undefined || bundle.gpuEvidence !== undefined;
  const gpuSteps: VerificationStep[] = gpuInPlay ? [{ step: 'gpu', ok: true, detail: gpuResult.detail }] : [];
  const finalReport: VerificationReport = { ...report, steps: [...report.steps, kcStep, ...gpuSteps] };
  return { platform, simulated: platform === 'simulated', keyConfig, keyConfigBytes, claims, report: finalReport, gpus: gpuResult.gpus };
}

/**
 * The key config's own claims, once the evidence binding it verified: its platform, its
 * validity window at `at`, and the model digests the policy pins (when a policy is given).
 * Null when they hold; else the code and message of the first that does not.
 */
export function checkKeyConfigClaims(kc: KeyConfig, platform: Platform, at: Date, policy?: Policy): { code: ErrorCode; message: string } | null {
  if (kc.platform !== platform) {
    return { code: 'BINDING_MISMATCH', message: `key config names platform ${kc.platform}, evidence is ${platform}` };
  }
  const now = at.getTime() / 1000;
  if (now < kc.notBefore - KEY_CONFIG_CLOCK_SKEW_SECONDS) return { code: 'KEY_STALE', message: `key config is not valid until ${new Date(kc.notBefore * 1000).toISOString()}` };
  if (now > kc.expiresAt) return { code: 'KEY_STALE', message: `key config expired at ${new Date(kc.expiresAt * 1000).toISOString()}; refetch it` };
  // The offer is field 14 of the key config the evidence binds: a host can swap in the (also
  // attested) v1 key config, not edit the offer; a policy that requires a version refuses the swap.
  const offered = kc.protocols ?? [1];
  const missing = (policy?.requireProtocols ?? []).filter((v) => !offered.includes(v));
  if (missing.length > 0) {
    return {
      code: 'PROTOCOL_DOWNGRADE',
      message: `the attested key config offers protocol version(s) [${offered.join(', ')}]; the policy requires [${(policy?.requireProtocols ?? []).join(', ')}] (a host may have served the older key config, or the server needs an upgrade)`,
    };
  }
  for (const [name, digest] of policy?.models ?? []) {
    const served = kc.models.find((m) => m.name === name);
    if (served === undefined) {
      return { code: 'POLICY_MISMATCH', message: `key config does not serve model ${name} named by the policy (it serves: ${kc.models.map((m) => m.name).join(', ') || 'none'})` };
    }
    if (!timingSafeEqualBytes(served.digest, digest)) {
      return { code: 'POLICY_MISMATCH', message: `model ${name} digest is ${toHex(served.digest)}; the policy expects ${toHex(digest)}` };
    }
  }
  return null;
}
