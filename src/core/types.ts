/**
 * The evidence model shared by every platform.
 *
 * A server proves two things at once: *what* runs (hardware-signed measurements) and that
 * the *keys* it publishes live there (the key config is bound into the signed evidence; see
 * `binding.ts` and DESIGN.md "Keys and the attestation binding").
 */
import type { ErrorCode } from '../errors.js';

export type Platform = 'nitro' | 'sev-snp' | 'tdx' | 'simulated';

export const PLATFORMS: readonly Platform[] = ['nitro', 'sev-snp', 'tdx', 'simulated'];

/**
 * What an attester is asked to bind. `keyConfig` is the exact encoded key config bytes
 * (never re-encoded by anyone); `hpkePublicKey` is the raw 32-byte X25519 key.
 */
export interface AttestationRequest {
  readonly keyConfig: Uint8Array;
  readonly hpkePublicKey: Uint8Array;
  /** Client-chosen freshness nonce, 0..64 bytes. */
  readonly nonce?: Uint8Array;
}

/**
 * Evidence as it travels from server to client. Everything in it is attacker-controlled
 * until verified.
 */
export interface EvidenceBundle {
  readonly platform: Platform;
  /** Nitro/simulated: COSE_Sign1 attestation document. SEV-SNP: 0x4A0-byte report. TDX: DCAP quote. */
  readonly evidence: Uint8Array;
  /** The exact encoded key config bytes the evidence binds. */
  readonly keyConfig: Uint8Array;
  /** SEV-SNP: the auxblob certificate table (or a bare VCEK DER); absent elsewhere. */
  readonly certificates?: Uint8Array;
  /** TDX: collateral JSON (QuoteCollateralV3 shape) as UTF-8 bytes; absent elsewhere. */
  readonly collateral?: Uint8Array;
  /**
   * Confidential GPUs behind the engine: their evidence (src/protocol/gpu-evidence.ts), whose
   * digests the key config lists (KeyConfig.gpus). Absent when the server attests no GPU.
   */
  readonly gpuEvidence?: Uint8Array;
}

export interface Attester {
  readonly platform: Platform;
  /** True for the development platform: no hardware stands behind the evidence. */
  readonly simulated: boolean;
  attest(request: AttestationRequest): Promise<EvidenceBundle>;
  /**
   * Nitro and simulated only: a bare attestation document whose `public_key` field is
   * `publicKeyDer` (no user_data, no nonce), e.g. the Recipient of an AWS KMS Decrypt.
   */
  attestPublicKey?(publicKeyDer: Uint8Array): Promise<Uint8Array>;
}

/** One stage of a verification pipeline, in order. */
export interface VerificationStep {
  readonly step: string;
  readonly ok: boolean;
  /** Set when `ok` is false. */
  readonly code?: ErrorCode;
  /** Human-readable, content-free explanation. */
  readonly detail?: string;
}

/** Measurements and bound values, hex-encoded for printing and policy comparison. */
export interface VerifiedClaims {
  readonly platform: Platform;
  readonly simulated: boolean;
  /** Platform-specific measurement registers, e.g. { PCR0: hex } or { MEASUREMENT: hex } or { MRTD: hex, RTMR0: hex }. */
  readonly measurements: Readonly<Record<string, string>>;
  /** Evidence generation time (Nitro), if the platform provides one. */
  readonly timestamp?: Date;
  /** Everything else worth printing (module id, policy bits, TCB, status, user data, ...). */
  readonly details: Readonly<Record<string, unknown>>;
}

export interface VerificationReport {
  readonly ok: boolean;
  readonly platform: Platform;
  readonly simulated: boolean;
  readonly steps: readonly VerificationStep[];
  /** Present when the cryptographic stages passed (even if a later policy stage failed). */
  readonly claims?: VerifiedClaims;
}
