/**
 * Verification of a Nitro attestation document (COSE_Sign1 / ES384), following the AWS
 * Nitro Enclaves user guide, "Verifying the root of trust":
 *
 *   decode -> cose -> certificate-chain -> signature -> freshness -> policy -> binding
 *
 * Each stage runs only if every earlier one passed, and each records a VerificationStep.
 * The same code verifies simulated documents (same format, a locally generated root that
 * the caller must pass explicitly as trusted, or pin by its DER SHA-256).
 */
import { createHash } from 'node:crypto';
import { CloisterError } from '../../errors.js';
import { timingSafeEqualBytes } from '../../crypto/ct.js';
import { StepRunner } from '../report.js';
import type { VerificationReport, VerifiedClaims } from '../../core/types.js';
import { isAllZero, toHex } from '../../core/hex.js';
import { verifyCertificateChain } from '../x509/chain.js';
import type { CertificateInput } from '../x509/certificate.js';
import { awsNitroRootDer } from './aws-root.js';
import { checkEs384Header, decodeCoseSign1, verifyEs384 } from './cose.js';
import type { CoseSign1 } from './cose.js';
import { NITRO_DOCUMENT_DEFAULTS, parseNitroDocument } from './document.js';
import type { NitroDocument, NitroDocumentLimits } from './document.js';

const DEFAULT_MAX_DOCUMENT_BYTES = 32 * 1024;
/** How old a document may be (its NSM timestamp against the verification time). */
const DEFAULT_MAX_AGE_MS = 5 * 60 * 1000;
/** How far in the future a document timestamp may be, for clock skew. */
const DEFAULT_MAX_CLOCK_SKEW_MS = 30 * 1000;
/** PCR0..2 are all zero when the enclave runs in debug mode (AWS user guide, "Nitro Enclaves concepts: debug mode"). */
const DEBUG_ZERO_PCRS = [0, 1, 2] as const;

/**
 * What the document must carry to bind a key config (see ../binding.ts nitroBindingFor,
 * which always sets all three). A field left undefined is not checked (the CLI checks only
 * the nonce it is given); null or empty means the document's field must be null or empty.
 */
interface NitroBindingExpectation {
  readonly publicKey?: Uint8Array | null;
  readonly userData?: Uint8Array | null;
  readonly nonce?: Uint8Array | null;
}

export interface VerifyNitroOptions extends NitroDocumentLimits {
  /** Label for the report: 'simulated' marks the result as simulated. Default 'nitro'. */
  readonly platform?: 'nitro' | 'simulated';
  /**
   * Roots to accept. Default for platform 'nitro': the bundled AWS Nitro Enclaves Root G1,
   * always (a pin never replaces it). Default for 'simulated': none, unless `rootSha256` is
   * given (see there).
   */
  readonly trustedRoots?: readonly CertificateInput[];
  /**
   * A pin: the chain's root must have this DER SHA-256. With trustedRoots, an additional
   * check. For platform 'simulated' without trustedRoots, the pin IS the explicit trust: the
   * root the document presents (cabundle[0]) is accepted as the anchor only when its DER
   * SHA-256 equals the pin (compared in constant time), else ROOT_UNTRUSTED.
   */
  readonly rootSha256?: Uint8Array;
  /** Verification time for certificate validity and freshness. Default: now. */
  readonly at?: Date;
  /** Maximum document age. Default 5 minutes. */
  readonly maxAgeMs?: number;
  /** Tolerated future skew of the document timestamp. Default 30 seconds. */
  readonly maxClockSkewMs?: number;
  /** Largest accepted encoded document. Default 32 KiB. */
  readonly maxDocumentBytes?: number;
  /**
   * Expected PCR values. When given (and non-empty), every named PCR must be present and
   * equal. When absent, the policy step records that no measurement was checked. A debug-mode
   * document (PCR0..2 all zero) is rejected (DEBUG_MODE) either way.
   */
  readonly pcrs?: ReadonlyMap<number, Uint8Array>;
  /** Expected binding; when absent the binding step records that nothing was checked. */
  readonly binding?: NitroBindingExpectation;
}

/** The report plus the parsed document, for callers (verifyEvidence) that need the fields. */
interface NitroVerification {
  readonly report: VerificationReport;
  readonly document?: NitroDocument;
}

function claimsOf(doc: NitroDocument, platform: 'nitro' | 'simulated', chain: readonly { subject: string; sha256Hex: string }[]): VerifiedClaims {
  const measurements: Record<string, string> = {};
  for (const i of [...doc.pcrs.keys()].sort((a, b) => a - b)) {
    const v = doc.pcrs.get(i);
    if (v !== undefined) measurements[`PCR${i}`] = toHex(v);
  }
  const debugMode = DEBUG_ZERO_PCRS.every((i) => {
    const v = doc.pcrs.get(i);
    return v !== undefined && isAllZero(v);
  });
  return {
    platform,
    simulated: platform === 'simulated',
    measurements,
    timestamp: new Date(doc.timestamp),
    details: {
      moduleId: doc.moduleId,
      digest: doc.digest,
      debugMode,
      publicKey: doc.publicKey === null ? null : toHex(doc.publicKey),
      userData: doc.userData === null ? null : toHex(doc.userData),
      nonce: doc.nonce === null ? null : toHex(doc.nonce),
      rootSha256: chain[0]?.sha256Hex ?? null,
      chain: chain.map((c) => c.subject),
    },
  };
}

function optionalEqual(actual: Uint8Array | null, expected: Uint8Array | null): boolean {
  const a = actual ?? new Uint8Array(0);
  const e = expected ?? new Uint8Array(0);
  return timingSafeEqualBytes(a, e);
}

/**
 * Verify a Nitro (or simulated) attestation document. Never throws for bad evidence: the
 * report's `ok` is false and the failing step carries the error code. Throws only
 * CloisterError(INVALID_ARGUMENT) for invalid options.
 */
export function verifyNitroDocumentDetailed(bytes: Uint8Array, options: VerifyNitroOptions = {}): NitroVerification {
  const platform = options.platform ?? 'nitro';
  const at = options.at ?? new Date();
  const maxAgeMs = options.maxAgeMs ?? DEFAULT_MAX_AGE_MS;
  const skewMs = options.maxClockSkewMs ?? DEFAULT_MAX_CLOCK_SKEW_MS;
  const maxDocumentBytes = options.maxDocumentBytes ?? DEFAULT_MAX_DOCUMENT_BYTES;
  if (!(bytes instanceof Uint8Array)) throw new CloisterError('INVALID_ARGUMENT', 'document must be a Uint8Array');
  if (!Number.isFinite(at.getTime())) throw new CloisterError('INVALID_ARGUMENT', 'verification time is not a valid date');
  for (const [name, v] of [['maxAgeMs', maxAgeMs], ['maxClockSkewMs', skewMs], ['maxDocumentBytes', maxDocumentBytes]] as const) {
    if (!Number.isSafeInteger(v) || v < 0) throw new CloisterError('INVALID_ARGUMENT', `${name} must be a non-negative integer`);
  }
  let trustedRoots = options.trustedRoots;
  // Simulated only: no root given, but a pinned root digest (the development policy's
  // rootSha256). The presented root becomes the anchor once it matches the pin, in the
  // certificate-chain stage below. Never for 'nitro': its anchor is always the AWS root.
  let anchorIsPinnedPresentedRoot = false;
  if (trustedRoots === undefined) {
    if (platform === 'nitro') {
      trustedRoots = [awsNitroRootDer()];
    } else if (options.rootSha256 !== undefined) {
      anchorIsPinnedPresentedRoot = true;
    } else {
      throw new CloisterError('INVALID_ARGUMENT', 'simulated documents require an explicitly trusted root or a pinned root SHA-256');
    }
  }
  if (trustedRoots?.length === 0) throw new CloisterError('INVALID_ARGUMENT', 'no trusted root given');

  const run = new StepRunner(platform);
  // The parsed document goes out with the report once the cryptographic stages passed.
  const verified: { document?: NitroDocument } = {};
  const finish = (): NitroVerification => {
    const report = run.finish();
    return verified.document === undefined ? { report } : { report, document: verified.document };
  };
  /** Run one stage; false when it failed (and the pipeline stops). */
  const stage = (step: string, fn: () => string | undefined): boolean => run.run(step, 'INTERNAL', fn);

  // 1. decode: the COSE_Sign1 envelope and the attestation document inside it.
  let cose: CoseSign1 | undefined;
  let doc: NitroDocument | undefined;
  const decoded = stage('decode', () => {
    if (bytes.byteLength > maxDocumentBytes) {
      throw new CloisterError('LIMIT_EXCEEDED', `document of ${bytes.byteLength} bytes exceeds maxDocumentBytes ${maxDocumentBytes}`);
    }
    cose = decodeCoseSign1(bytes);
    doc = parseNitroDocument(cose.payload, options);
    return cose.tagged ? 'COSE_Sign1 (tag 18)' : 'COSE_Sign1 (untagged)';
  });
  if (!decoded || cose === undefined || doc === undefined) return finish();
  const c = cose;
  const d = doc;

  // 2. cose: protected header names ES384 only, signature has the ES384 length.
  if (!stage('cose', () => { checkEs384Header(c); return 'alg ES384'; })) return finish();

  // 3. certificate-chain: certificate <- cabundle[n-1] <- ... <- cabundle[0] == pinned root.
  let chainResult: ReturnType<typeof verifyCertificateChain> | undefined;
  const chained = stage('certificate-chain', () => {
    const [presentedRoot, ...intermediates] = d.cabundle;
    if (presentedRoot === undefined) throw new CloisterError('CERT_CHAIN_INVALID', 'empty cabundle');
    let anchors = trustedRoots;
    if (anchorIsPinnedPresentedRoot) {
      const pin = options.rootSha256 ?? new Uint8Array(0);
      const presentedSha256 = new Uint8Array(createHash('sha256').update(presentedRoot).digest());
      if (!timingSafeEqualBytes(presentedSha256, pin)) {
        throw new CloisterError('ROOT_UNTRUSTED', `the presented root has SHA-256 ${toHex(presentedSha256)}; the pinned root SHA-256 is ${toHex(pin)}`);
      }
      anchors = [presentedRoot];
    }
    if (anchors === undefined) throw new CloisterError('ROOT_UNTRUSTED', 'no trusted root');
    const result = verifyCertificateChain({
      leaf: d.certificate,
      intermediates,
      presentedRoot,
      trustedRoots: anchors,
      at,
      maxChainLength: (options.maxCabundleLength ?? NITRO_DOCUMENT_DEFAULTS.maxCabundleLength) + 1,
      maxCertificateBytes: options.maxCertificateBytes ?? NITRO_DOCUMENT_DEFAULTS.maxCertificateBytes,
    });
    if (!result.ok) throw new CloisterError(result.code, result.message);
    const root = result.certificates[0];
    if (options.rootSha256 !== undefined && (root === undefined || !timingSafeEqualBytes(result.path[0]?.sha256 ?? new Uint8Array(0), options.rootSha256))) {
      throw new CloisterError('ROOT_UNTRUSTED', `the chain root has SHA-256 ${result.path[0] === undefined ? '(none)' : toHex(result.path[0].sha256)}; the pinned root SHA-256 is ${toHex(options.rootSha256)}`);
    }
    chainResult = result;
    return `${result.path.length} certificates to root ${root?.sha256Hex ?? '?'}`;
  });
  if (!chained || chainResult === undefined || !chainResult.ok) return finish();
  const chain = chainResult;

  // 4. signature: ES384 by the leaf certificate's P-384 key over the exact received bytes.
  if (
    !stage('signature', () => {
      if (!verifyEs384(c, chain.leafPublicKey)) {
        throw new CloisterError('EVIDENCE_SIGNATURE_INVALID', 'COSE_Sign1 ES384 signature does not verify with the leaf key');
      }
      return undefined;
    })
  ) {
    return finish();
  }
  verified.document = d;
  run.setClaims(claimsOf(d, platform, chain.certificates));

  // 5. freshness: the NSM timestamp against the verification time, and inside the leaf's validity.
  if (
    !stage('freshness', () => {
      const age = at.getTime() - d.timestamp;
      if (age > maxAgeMs) throw new CloisterError('EVIDENCE_STALE', `document is ${age} ms old; maxAgeMs is ${maxAgeMs}`);
      if (-age > skewMs) throw new CloisterError('EVIDENCE_STALE', `document timestamp is ${-age} ms in the future; maxClockSkewMs is ${skewMs}`);
      const leaf = chain.certificates[chain.certificates.length - 1];
      if (leaf !== undefined && (d.timestamp < leaf.notBefore.getTime() - skewMs || d.timestamp > leaf.notAfter.getTime())) {
        throw new CloisterError('EVIDENCE_STALE', 'document timestamp is outside its signing certificate validity');
      }
      return `age ${age} ms`;
    })
  ) {
    return finish();
  }

  // 6. policy: a debug-mode enclave is refused with or without a policy (as SEV-SNP and TDX
  // refuse a debuggable guest when only inspecting); then every named PCR present and equal.
  if (
    !stage('policy', () => {
      for (const i of DEBUG_ZERO_PCRS) {
        const v = d.pcrs.get(i);
        if (v !== undefined && isAllZero(v)) throw new CloisterError('DEBUG_MODE', `PCR${i} is all zero: the enclave runs in debug mode`);
      }
      const expected = options.pcrs;
      if (expected === undefined || expected.size === 0) return 'not checked: no PCR policy given; debug refused';
      // Compare every named PCR before deciding, so timing does not reveal which one differs.
      const mismatched: number[] = [];
      for (const [i, want] of expected) {
        const got = d.pcrs.get(i);
        if (got === undefined || !timingSafeEqualBytes(got, want)) mismatched.push(i);
      }
      if (mismatched.length > 0) {
        // Measurements are not secret: name each expected and actual value.
        const what = mismatched.map((i) => {
          const got = d.pcrs.get(i);
          return `PCR${i} is ${got === undefined ? '(absent)' : toHex(got)}, the policy expects ${toHex(expected.get(i) ?? new Uint8Array(0))}`;
        });
        throw new CloisterError('POLICY_MISMATCH', `${what.join('; ')}`);
      }
      return `${expected.size} PCRs match`;
    })
  ) {
    return finish();
  }

  // 7. binding: public_key, user_data and nonce carry the client's key config and nonce.
  stage('binding', () => {
    const b = options.binding;
    if (b === undefined) return 'not checked: no binding expected';
    const checks: [string, Uint8Array | null, Uint8Array | null | undefined][] = [
      ['public_key', d.publicKey, b.publicKey],
      ['user_data', d.userData, b.userData],
      ['nonce', d.nonce, b.nonce],
    ];
    const checked: string[] = [];
    const wrong: string[] = [];
    // Every field is compared before deciding.
    for (const [name, actual, expected] of checks) {
      if (expected === undefined) continue;
      checked.push(name);
      if (!optionalEqual(actual, expected)) wrong.push(name);
    }
    if (wrong.length > 0) throw new CloisterError('BINDING_MISMATCH', `${wrong.join(', ')} do not bind the expected key config / nonce`);
    if (checked.length === 0) return 'not checked: no binding expected';
    return `${checked.join(', ')} match`;
  });
  return finish();
}

/** Verify a Nitro (or simulated) attestation document and return the per-step report. */
export function verifyNitroDocument(bytes: Uint8Array, options: VerifyNitroOptions = {}): VerificationReport {
  return verifyNitroDocumentDetailed(bytes, options).report;
}
