/**
 * TDX evidence verification as explicit stages, each reported:
 *
 *   decode -> collateral -> quote (Intel chain, QE report, signature, TCB level)
 *          -> tcb-status -> policy -> binding
 *
 * decode:     our own strict v4/v5 parser (lengths, trailing bytes, TEE type, QE vendor)
 * collateral: from the bundle, the caller, or an optional PCS fetcher
 * quote:      the CRLs' signatures and validity (crl.ts: dcap-qvl checks neither), then
 *             @phala/dcap-qvl against the pinned Intel SGX Root CA: PCK chain, TCB info and
 *             QE identity signatures and validity, QE report, quote signature, TCB matching
 * tcb-status: our acceptance list (UpToDate by default; others only when the policy names
 *             them); advisory ids are always reported
 * policy:     MRTD, RTMRs, TD attributes (policy.ts)
 * binding:    report_data = SHA-512("cloister/attest/v1\0" || keyConfig || nonce)
 */
import { createHash, X509Certificate } from 'node:crypto';
import { QuoteVerifier } from '@phala/dcap-qvl';
import type { Collateral } from '@phala/dcap-qvl';
import { timingSafeEqualBytes } from '../../crypto/ct.js';
import { CloisterError } from '../../errors.js';
import type { ErrorCode } from '../../errors.js';
import { toHex } from '../../core/hex.js';
import { checkReportData, POLICY_SKIPPED, StepRunner } from '../report.js';
import type { EvidenceBundle, VerificationReport, VerifiedClaims } from '../../core/types.js';
import { parseTdxCollateral, type PcsCollateralFetcher } from './collateral.js';
import { checkTdxCollateralCrls } from './crl.js';
import { checkTdxAttributeDefaults, checkTdxPolicy, tcbStatusAccepted, type TdxPolicy } from './policy.js';
import { parseTdxQuote, TD_ATTRIBUTE, tdAttributeSet, type TdxQuote } from './quote.js';
import { INTEL_SGX_ROOT_CA_FINGERPRINT256, INTEL_SGX_ROOT_CA_PEM } from './roots.js';
import { pemToDerList } from '../x509/certificate.js';

export interface TdxVerifyOptions {
  /**
   * The client policy ("tdx" section, parsed). Required. The literal 'none' is for raw
   * evidence inspection (CLI without --policy): the policy step reads "skipped" and only
   * UpToDate is accepted as TCB status.
   */
  readonly policy: TdxPolicy | 'none';
  /** Verification instant (collateral and certificate validity). Default: now. */
  readonly at?: Date;
  readonly nonce?: Uint8Array;
  /** Expected 64-byte report_data, replacing the key-config binding. */
  readonly expectedReportData?: Uint8Array;
  /** Do not check report_data (raw evidence inspection only). */
  readonly skipBinding?: boolean;
  /** Collateral from a file (JSON bytes or object), used when the bundle carries none. */
  readonly collateral?: Uint8Array | Collateral;
  /** Optional PCS fetcher, consulted only when no collateral is available otherwise. */
  readonly pcs?: PcsCollateralFetcher;
  /**
   * Fetch collateral yourself: use `collateral` / `pcs` even when the evidence carries some
   * (the evidence's collateral is then ignored). Default false.
   */
  readonly ignoreEvidenceCollateral?: boolean;
  /** Replace the pinned Intel root (tests only): PEM. */
  readonly rootCaPem?: string;
  readonly maxQuoteBytes?: number;
  readonly maxZeroPadding?: number;
  readonly maxCollateralBytes?: number;
}

/** Map dcap-qvl's error messages (its only error channel) to our codes. */
function codeForQvlError(message: string): ErrorCode {
  const m = message.toLowerCase();
  if (m.includes('no matching tcb level') || m.includes('tcb status is invalid') || m.includes('below minimum required')) {
    return 'TCB_STATUS_REJECTED';
  }
  if (m.includes('debug mode')) return 'DEBUG_MODE';
  if (m.includes('sept_ve_disable') || m.includes('mr service td')) return 'POLICY_MISMATCH';
  if (m.includes('expired') || m.includes('in the future') || m.includes('not yet valid')) return 'CERT_EXPIRED';
  if (m.includes('revoked')) return 'CERT_CHAIN_INVALID';
  if (m.includes('signature') || m.includes('hash mismatch')) return 'EVIDENCE_SIGNATURE_INVALID';
  if (m.includes('certificate') || m.includes('chain') || m.includes('causedasendentity') || m.includes('fmspc')) return 'CERT_CHAIN_INVALID';
  if (m.includes('decode') || m.includes('unsupported') || m.includes('not enough data') || m.includes('reserved bits')) {
    return 'EVIDENCE_MALFORMED';
  }
  return 'CERT_CHAIN_INVALID';
}

function claimsOf(q: TdxQuote, status: string, advisoryIds: readonly string[]): VerifiedClaims {
  const r = q.report;
  return {
    platform: 'tdx',
    simulated: false,
    measurements: {
      MRTD: toHex(r.mrTd),
      RTMR0: toHex(r.rtmrs[0]),
      RTMR1: toHex(r.rtmrs[1]),
      RTMR2: toHex(r.rtmrs[2]),
      RTMR3: toHex(r.rtmrs[3]),
    },
    details: {
      quoteVersion: q.version,
      tdReport: q.bodyType === 3 ? '1.5' : '1.0',
      reportData: toHex(r.reportData),
      tdAttributes: toHex(r.tdAttributes),
      debug: tdAttributeSet(r.tdAttributes, TD_ATTRIBUTE.DEBUG),
      septVeDisable: tdAttributeSet(r.tdAttributes, TD_ATTRIBUTE.SEPT_VE_DISABLE),
      xfam: toHex(r.xfam),
      mrConfigId: toHex(r.mrConfigId),
      mrOwner: toHex(r.mrOwner),
      mrOwnerConfig: toHex(r.mrOwnerConfig),
      mrSeam: toHex(r.mrSeam),
      teeTcbSvn: toHex(r.teeTcbSvn),
      tcbStatus: status,
      advisoryIds: [...advisoryIds],
    },
  };
}

const PCK_CERT_CHAIN = 5;

function canonicalPem(der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  return `-----BEGIN CERTIFICATE-----\n${(b64.match(/.{1,64}/g) ?? []).join('\n')}\n-----END CERTIFICATE-----\n`;
}

/**
 * The PCK chain inside the quote (certification data type 5): exactly three certificates in
 * canonical PEM (64-column base64, one newline after each block; trailing NULs allowed, as
 * the QE pads), the last byte-for-byte the pinned Intel SGX Root CA. dcap-qvl verifies the
 * PCK leaf and intermediate against the pinned root and ignores the presented root: without
 * this, its bytes (and the PEM layout) would not be covered by any check.
 */
function checkPresentedPckChain(q: TdxQuote, root: X509Certificate): void {
  if (q.certificationDataType !== PCK_CERT_CHAIN) return; // other types fetch the PCK chain from a PCCS: dcap-qvl refuses them offline
  const data = q.certificationData;
  let end = data.byteLength;
  while (end > 0 && data[end - 1] === 0) end--;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(data.subarray(0, end));
  } catch (cause) {
    throw new CloisterError('EVIDENCE_MALFORMED', 'the quote PCK certificate chain is not text', { cause });
  }
  let ders: Uint8Array[];
  try {
    ders = pemToDerList(text);
  } catch (cause) {
    throw new CloisterError('EVIDENCE_MALFORMED', 'the quote PCK certificate chain is not PEM', { cause });
  }
  if (ders.map(canonicalPem).join('') !== text) throw new CloisterError('EVIDENCE_MALFORMED', 'the quote PCK certificate chain is not canonical PEM');
  const presentedRoot = ders[2];
  if (ders.length !== 3 || presentedRoot === undefined) {
    throw new CloisterError('CERT_CHAIN_INVALID', `the quote PCK certificate chain has ${ders.length} certificates, not 3 (PCK, PCK CA, root)`);
  }
  if (!timingSafeEqualBytes(presentedRoot, new Uint8Array(root.raw))) {
    // The digest of the presented bytes, not a parse: a damaged root need not be valid X.509.
    const presented = createHash('sha256').update(presentedRoot).digest('hex');
    throw new CloisterError('ROOT_UNTRUSTED', `the quote presents a root with DER SHA-256 ${presented}, not the pinned Intel SGX Root CA ${root.fingerprint256}`);
  }
}

/** Verify TDX evidence. Never throws for bad evidence: failures are steps with codes. */
export async function verifyTdxEvidence(bundle: EvidenceBundle, options: TdxVerifyOptions): Promise<VerificationReport> {
  const run = new StepRunner('tdx');
  const at = options.at ?? new Date();
  const nowSecs = Math.floor(at.getTime() / 1000);

  // One snapshot of the attacker-supplied bytes, read by both parsers.
  const evidence = new Uint8Array(bundle.evidence);
  let quote: TdxQuote | undefined;
  const decoded = run.run('decode', 'EVIDENCE_MALFORMED', () => {
    if (bundle.platform !== 'tdx') throw new CloisterError('EVIDENCE_MALFORMED', 'bundle is not TDX evidence');
    if (!Number.isFinite(nowSecs)) throw new CloisterError('INVALID_ARGUMENT', 'bad verification time');
    const q = parseTdxQuote(evidence, {
      ...(options.maxQuoteBytes === undefined ? {} : { maxQuoteBytes: options.maxQuoteBytes }),
      ...(options.maxZeroPadding === undefined ? {} : { maxZeroPadding: options.maxZeroPadding }),
    });
    quote = q;
    return `quote v${q.version}, TD report ${q.bodyType === 3 ? '1.5' : '1.0'}`;
  });
  if (!decoded || quote === undefined) return run.finish();
  const q = quote;

  let collateral: Collateral | undefined;
  const collected = await run.runAsync('collateral', 'EVIDENCE_MALFORMED', async () => {
    if (bundle.collateral !== undefined && bundle.collateral.byteLength > 0 && options.ignoreEvidenceCollateral !== true) {
      collateral = parseTdxCollateral(bundle.collateral, options.maxCollateralBytes);
      return 'from evidence';
    }
    if (options.collateral !== undefined) {
      collateral = parseTdxCollateral(options.collateral, options.maxCollateralBytes);
      return 'from caller';
    }
    if (options.pcs !== undefined) {
      collateral = await options.pcs.fetch(evidence, q.certificationData);
      return 'fetched from PCS / PCCS';
    }
    throw new CloisterError('NOT_FOUND', 'no TDX collateral: none in the evidence and none given');
  });
  if (!collected || collateral === undefined) return run.finish();
  const coll = collateral;

  let verdict: { status: string; advisoryIds: string[] } | undefined;
  // A TCB verdict from dcap-qvl comes after every signature passed: still no claims, as the
  // platform state is unknown; the code says why.
  const quoted = run.run('quote', 'CERT_CHAIN_INVALID', () => {
    const root = new X509Certificate(options.rootCaPem ?? INTEL_SGX_ROOT_CA_PEM);
    if (options.rootCaPem === undefined && root.fingerprint256 !== INTEL_SGX_ROOT_CA_FINGERPRINT256) {
      throw new CloisterError('ROOT_UNTRUSTED', `pinned Intel root has SHA-256 ${root.fingerprint256}, not ${INTEL_SGX_ROOT_CA_FINGERPRINT256}`);
    }
    // dcap-qvl neither verifies the CRLs' signatures nor their validity (./crl.ts), nor looks
    // at the root certificate the quote presents: every byte of the evidence must count.
    checkTdxCollateralCrls(coll, root, at);
    checkPresentedPckChain(q, root);
    const verifier = QuoteVerifier.newWithRootCa(Buffer.from(root.raw));
    let verified;
    try {
      verified = verifier.verify(Buffer.from(evidence), coll, nowSecs);
    } catch (err) {
      const message = err instanceof Error ? err.message : 'quote verification failed';
      throw new CloisterError(codeForQvlError(message), `TDX quote verification: ${message}`, { cause: err });
    }
    // dcap-qvl verified the bytes it parsed itself; make sure both parsers read the same TD.
    const td = verified.report.asTd10();
    if (td === null || !timingSafeEqualBytes(td.mrTd, q.report.mrTd) || !timingSafeEqualBytes(td.reportData, q.report.reportData)) {
      throw new CloisterError('EVIDENCE_MALFORMED', 'quote parsers disagree about the TD report');
    }
    verdict = { status: verified.status, advisoryIds: [...verified.advisory_ids] };
    return 'Intel chain, QE report and quote signature verified';
  });
  if (!quoted || verdict === undefined) return run.finish();
  const { status, advisoryIds } = verdict;
  run.setClaims(claimsOf(q, status, advisoryIds));

  // TCB status, policy and binding all run, so that every reason for rejection is reported.
  run.run('tcb-status', 'TCB_STATUS_REJECTED', () => {
    const advisories = advisoryIds.length > 0 ? `; advisories ${advisoryIds.join(', ')}` : '';
    if (!(options.policy === 'none' ? status === 'UpToDate' : tcbStatusAccepted(status, options.policy))) {
      throw new CloisterError('TCB_STATUS_REJECTED', `TCB status ${status} is not accepted by the policy${advisories}`);
    }
    return `${status}${advisories}`;
  });
  run.run('policy', 'POLICY_MISMATCH', () => {
    if (options.policy === 'none') {
      // Inspection without a policy still refuses a debuggable TD.
      checkTdxAttributeDefaults(q.report);
      return `${POLICY_SKIPPED}; debug refused`;
    }
    // Undefined, or the loud note that the unsafe switch left RTMR0..2 unchecked.
    return checkTdxPolicy(q.report, options.policy);
  });
  run.run('binding', 'BINDING_MISMATCH', () => checkReportData(q.report.reportData, bundle.keyConfig, options));
  return run.finish();
}
