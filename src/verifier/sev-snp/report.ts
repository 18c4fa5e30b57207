/**
 * SEV-SNP ATTESTATION_REPORT parser (AMD SEV Secure Nested Paging Firmware ABI
 * Specification, pub. 56860, table "ATTESTATION_REPORT Structure").
 *
 * Exactly 0x4A0 bytes. Versions 2, 3 and 5 are accepted (3 adds CPUID family/model/stepping
 * at 0x188..0x18A; 5 adds LAUNCH_MIT_VECTOR and CURRENT_MIT_VECTOR at 0x1F8..0x207). Every
 * reserved / must-be-zero range is checked, so a report that a newer firmware fills with
 * fields we do not understand is rejected rather than half-read.
 *
 * The parser copies every field: nothing it returns aliases the caller's buffer.
 */
import { CloisterError } from '../../errors.js';

const SNP_REPORT_SIZE = 0x4a0;
/** The signature covers bytes 0x000..0x29F (spec: "signature over bytes 0h to 29Fh"). */
const SNP_SIGNED_LENGTH = 0x2a0;
const SNP_SIGNATURE_OFFSET = 0x2a0;
/** ECDSA P-384 R and S: 72-byte little-endian fields (spec table "ECDSA Signature Format"). */
const SNP_SIG_COMPONENT_SIZE = 72;
const SNP_SIG_R_OFFSET = 0x2a0;
const SNP_SIG_S_OFFSET = 0x2e8;
/** SIGNATURE_ALGO value 1: ECDSA P-384 with SHA-384. */
const SNP_SIG_ALGO_ECDSA_P384_SHA384 = 1;
const SNP_SUPPORTED_VERSIONS: readonly number[] = [2, 3, 5];

/** Guest policy bits (spec table "Guest Policy Structure"). */
export const SNP_POLICY_BIT = {
  SMT: 16n,
  RESERVED_MUST_BE_ONE: 17n,
  MIGRATE_MA: 18n,
  DEBUG: 19n,
  SINGLE_SOCKET: 20n,
  CXL_ALLOW: 21n,
  MEM_AES_256_XTS: 22n,
  RAPL_DIS: 23n,
  CIPHERTEXT_HIDING: 24n,
  PAGE_SWAP_DISABLE: 25n,
} as const;
/** Bits 26..63 are reserved (must be zero) in every published version of the spec. */
const POLICY_HIGHEST_DEFINED_BIT = 25n;

type SnpSigningKey = 'vcek' | 'vlek';

interface SnpVersionTriple {
  readonly major: number;
  readonly minor: number;
  readonly build: number;
}

export interface SnpReport {
  readonly version: number;
  readonly guestSvn: number;
  readonly policy: bigint;
  readonly familyId: Uint8Array;
  readonly imageId: Uint8Array;
  readonly vmpl: number;
  readonly signatureAlgo: number;
  /** Raw 8-byte TCB_VERSION values (layout depends on the product; see tcb.ts). */
  readonly currentTcb: Uint8Array;
  readonly platformInfo: bigint;
  readonly authorKeyEnabled: boolean;
  readonly maskChipKey: boolean;
  readonly signingKey: SnpSigningKey;
  readonly reportData: Uint8Array;
  readonly measurement: Uint8Array;
  readonly hostData: Uint8Array;
  readonly idKeyDigest: Uint8Array;
  readonly authorKeyDigest: Uint8Array;
  readonly reportId: Uint8Array;
  readonly reportIdMa: Uint8Array;
  readonly reportedTcb: Uint8Array;
  /** Version 3+: CPUID(1).EAX family (base+extended), model (base+extended), stepping. */
  readonly cpuid?: { readonly family: number; readonly model: number; readonly stepping: number };
  readonly chipId: Uint8Array;
  readonly committedTcb: Uint8Array;
  readonly currentVersion: SnpVersionTriple;
  readonly committedVersion: SnpVersionTriple;
  readonly launchTcb: Uint8Array;
  /** Version 5+. */
  readonly launchMitVector?: bigint;
  readonly currentMitVector?: bigint;
  /** Big-endian R and S (48 bytes each, P-384), converted from the 72-byte LE fields. */
  readonly signatureR: Uint8Array;
  readonly signatureS: Uint8Array;
  /** Copy of bytes 0x000..0x29F: what the signature covers. */
  readonly signedBytes: Uint8Array;
}

function malformed(message: string, detail: Record<string, string | number | boolean> = {}): CloisterError {
  return new CloisterError('EVIDENCE_MALFORMED', message, { detail: { format: 'sev-snp-report', ...detail } });
}

function slice(b: Uint8Array, start: number, end: number): Uint8Array {
  return b.slice(start, end);
}

function assertZero(b: Uint8Array, start: number, end: number, field: string): void {
  for (let i = start; i < end; i++) {
    if (b[i] !== 0) throw malformed(`reserved field ${field} is not zero`, { field, offset: i });
  }
}

/** 72-byte little-endian integer -> 48-byte big-endian P-384 scalar; the top 24 bytes must be zero. */
function leScalarToBe48(b: Uint8Array, offset: number, name: string): Uint8Array {
  for (let i = offset + 48; i < offset + SNP_SIG_COMPONENT_SIZE; i++) {
    if (b[i] !== 0) throw malformed(`signature ${name} does not fit in 48 bytes`, { field: name });
  }
  const out = new Uint8Array(48);
  for (let i = 0; i < 48; i++) out[i] = b[offset + 47 - i] ?? 0;
  return out;
}

/** Parse and structurally validate an SEV-SNP attestation report. */
export function parseSnpReport(bytes: Uint8Array): SnpReport {
  if (!(bytes instanceof Uint8Array)) {
    throw new CloisterError('INVALID_ARGUMENT', 'report must be a Uint8Array');
  }
  if (bytes.byteLength !== SNP_REPORT_SIZE) {
    throw malformed('SEV-SNP report must be exactly 0x4A0 bytes', { length: bytes.byteLength });
  }
  // Work on a private copy: the caller may reuse or mutate its buffer while we read.
  const b = new Uint8Array(bytes); // a copy: Buffer#slice would alias the caller's memory
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);

  const version = dv.getUint32(0x00, true);
  if (!SNP_SUPPORTED_VERSIONS.includes(version)) {
    throw malformed('unsupported SEV-SNP report version', { version });
  }
  const guestSvn = dv.getUint32(0x04, true);
  const policy = dv.getBigUint64(0x08, true);
  if (((policy >> SNP_POLICY_BIT.RESERVED_MUST_BE_ONE) & 1n) !== 1n) {
    throw malformed('guest policy bit 17 (reserved, must be one) is zero', { field: 'policy' });
  }
  if (policy >> (POLICY_HIGHEST_DEFINED_BIT + 1n) !== 0n) {
    throw malformed('guest policy has reserved bits set', { field: 'policy' });
  }
  const vmpl = dv.getUint32(0x30, true);
  if (vmpl > 3) throw malformed('VMPL out of range', { vmpl });
  const signatureAlgo = dv.getUint32(0x34, true);
  if (signatureAlgo !== SNP_SIG_ALGO_ECDSA_P384_SHA384) {
    throw malformed('unsupported signature algorithm', { signatureAlgo });
  }

  // 0x48: bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_KEY, bits 4:2 SIGNING_KEY, bits 31:5 reserved.
  const keyInfo = dv.getUint32(0x48, true);
  if (keyInfo >>> 5 !== 0) throw malformed('reserved key-info bits are set', { field: 'key_info' });
  const signingKeyCode = (keyInfo >>> 2) & 7;
  let signingKey: SnpSigningKey;
  if (signingKeyCode === 0) signingKey = 'vcek';
  else if (signingKeyCode === 1) signingKey = 'vlek';
  else throw malformed('report is not signed by a VCEK or VLEK', { signingKey: signingKeyCode });
  assertZero(b, 0x4c, 0x50, 'reserved@0x4C');

  let cpuid: SnpReport['cpuid'];
  if (version >= 3) {
    cpuid = { family: dv.getUint8(0x188), model: dv.getUint8(0x189), stepping: dv.getUint8(0x18a) };
    assertZero(b, 0x18b, 0x1a0, 'reserved@0x18B');
  } else {
    assertZero(b, 0x188, 0x1a0, 'reserved@0x188');
  }
  assertZero(b, 0x1eb, 0x1ec, 'reserved@0x1EB');
  assertZero(b, 0x1ef, 0x1f0, 'reserved@0x1EF');

  let launchMitVector: bigint | undefined;
  let currentMitVector: bigint | undefined;
  if (version >= 5) {
    launchMitVector = dv.getBigUint64(0x1f8, true);
    currentMitVector = dv.getBigUint64(0x200, true);
    assertZero(b, 0x208, SNP_SIGNATURE_OFFSET, 'reserved@0x208');
  } else {
    assertZero(b, 0x1f8, SNP_SIGNATURE_OFFSET, 'reserved@0x1F8');
  }

  const signatureR = leScalarToBe48(b, SNP_SIG_R_OFFSET, 'R');
  const signatureS = leScalarToBe48(b, SNP_SIG_S_OFFSET, 'S');
  // The rest of the 0x200-byte signature field is reserved for this algorithm.
  assertZero(b, SNP_SIG_S_OFFSET + SNP_SIG_COMPONENT_SIZE, SNP_REPORT_SIZE, 'signature reserved');

  const report: SnpReport = {
    version,
    guestSvn,
    policy,
    familyId: slice(b, 0x10, 0x20),
    imageId: slice(b, 0x20, 0x30),
    vmpl,
    signatureAlgo,
    currentTcb: slice(b, 0x38, 0x40),
    platformInfo: dv.getBigUint64(0x40, true),
    authorKeyEnabled: (keyInfo & 1) !== 0,
    maskChipKey: (keyInfo & 2) !== 0,
    signingKey,
    reportData: slice(b, 0x50, 0x90),
    measurement: slice(b, 0x90, 0xc0),
    hostData: slice(b, 0xc0, 0xe0),
    idKeyDigest: slice(b, 0xe0, 0x110),
    authorKeyDigest: slice(b, 0x110, 0x140),
    reportId: slice(b, 0x140, 0x160),
    reportIdMa: slice(b, 0x160, 0x180),
    reportedTcb: slice(b, 0x180, 0x188),
    chipId: slice(b, 0x1a0, 0x1e0),
    committedTcb: slice(b, 0x1e0, 0x1e8),
    currentVersion: { build: dv.getUint8(0x1e8), minor: dv.getUint8(0x1e9), major: dv.getUint8(0x1ea) },
    committedVersion: { build: dv.getUint8(0x1ec), minor: dv.getUint8(0x1ed), major: dv.getUint8(0x1ee) },
    launchTcb: slice(b, 0x1f0, 0x1f8),
    signatureR,
    signatureS,
    signedBytes: slice(b, 0, SNP_SIGNED_LENGTH),
    ...(cpuid === undefined ? {} : { cpuid }),
    ...(launchMitVector === undefined ? {} : { launchMitVector }),
    ...(currentMitVector === undefined ? {} : { currentMitVector }),
  };
  return report;
}

/** True when the policy has `bit` set. */
export function snpPolicyHas(policy: bigint, bit: bigint): boolean {
  return ((policy >> bit) & 1n) === 1n;
}

/**
 * The product a version-3+ report's CPUID names (family 19h model 0xh Milan, 1xh Genoa;
 * family 1Ah Turin), or undefined for version 2 or an unknown part.
 */
export function productFromCpuid(report: SnpReport): 'Milan' | 'Genoa' | 'Turin' | undefined {
  const c = report.cpuid;
  if (c === undefined) return undefined;
  if (c.family === 0x19 && c.model >> 4 === 0) return 'Milan';
  if (c.family === 0x19 && c.model >> 4 === 1) return 'Genoa';
  if (c.family === 0x1a) return 'Turin';
  return undefined;
}
