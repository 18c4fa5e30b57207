/**
 * SEV-SNP evidence verification as explicit stages, each reported:
 *
 *   decode -> endorsement-key -> chain -> signature -> tcb -> policy -> binding
 *
 * decode:          the 0x4A0-byte report, every reserved field checked (report.ts)
 * endorsement-key: the VCEK/VLEK from the certificate table, a bare DER, the caller, or KDS
 * chain:           ARK -> ASK|ASVK -> VCEK|VLEK against the pinned AMD roots (certs.ts)
 * signature:       ECDSA P-384/SHA-384 over 0x000..0x29F (signature.ts)
 * tcb:             reported_tcb equals the VCEK's TCB extensions; chip_id equals hwID
 * policy:          the client's policy (policy.ts)
 * binding:         report_data = SHA-512("cloister/attest/v1\0" || keyConfig || nonce)
 *
 * A crypto stage failing stops the pipeline; claims are returned once the crypto stages
 * passed, even when policy or binding then fail (so the CLI can print what it saw).
 */
import { timingSafeEqualBytes } from '../../crypto/ct.js';
import { CloisterError, asCloisterError } from '../../errors.js';
import type { ErrorCode } from '../../errors.js';
import { reportDataFor } from '../binding.js';
import { isAllZero, toHex } from '../hex.js';
import type { EvidenceBundle, VerificationReport, VerificationStep, VerifiedClaims } from '../types.js';
import { parseCertTable, SNP_CERT_GUIDS, type CertTableLimits } from './cert-table.js';
import { parseAmdEndorsementKey, verifyAmdChain, type AmdEndorsementKey } from './certs.js';
import type { KdsClient } from './kds.js';
import { checkSevSnpPolicy, describeSnpGuestPolicy, type SevSnpPolicy } from './policy.js';
import { parseSnpReport, productFromCpuid, type SnpReport } from './report.js';
import type { AmdProductRoots } from './roots.js';
import { verifySnpReportSignature } from './signature.js';
import { decodeTcb, encodeTcb, type SnpProduct, type SnpTcbParts } from './tcb.js';

export interface SevSnpVerifyOptions {
  /**
   * The client policy ("sev-snp" section, parsed). Required. The literal 'none' is for raw
   * evidence inspection (CLI without --policy): the policy step then reads "skipped".
   */
  readonly policy: SevSnpPolicy | 'none';
  /** Verification instant for certificate validity. Default: now. */
  readonly at?: Date;
  /** The client's nonce, bound into report_data together with the bundle's key config. */
  readonly nonce?: Uint8Array;
  /**
   * Expected 64-byte report_data, replacing the key-config binding (for evidence that was not
   * produced by Cloister, e.g. `cloister verify --report-data`).
   */
  readonly expectedReportData?: Uint8Array;
  /**
   * Do not check report_data at all: only for inspecting raw evidence without a key config.
   * The report is then never `ok`-for-use by a client; the binding step says "skipped".
   */
  readonly skipBinding?: boolean;
  /** A VCEK/VLEK (DER) from a file, used when the bundle carries none. */
  readonly vcek?: Uint8Array;
  /** Optional KDS client, consulted only when no VCEK is available otherwise. */
  readonly kds?: KdsClient;
  /** Replace the pinned AMD roots (tests with a private chain only). */
  readonly roots?: readonly AmdProductRoots[];
  readonly certTableLimits?: CertTableLimits;
}

const DER_SEQUENCE = 0x30;

interface Certs {
  ek?: Uint8Array;
  ask?: Uint8Array;
  ark?: Uint8Array;
}

function certsFromBundle(bytes: Uint8Array | undefined, report: SnpReport, limits: CertTableLimits | undefined): Certs {
  if (bytes === undefined || bytes.byteLength === 0) return {};
  // A bare DER certificate starts with a SEQUENCE tag; a certificate table starts with a GUID.
  if (bytes[0] === DER_SEQUENCE && (bytes[1] ?? 0) >= 0x80) return { ek: new Uint8Array(bytes) };
  const out: Certs = {};
  for (const e of parseCertTable(bytes, limits)) {
    if (e.guid === SNP_CERT_GUIDS.VCEK && report.signingKey === 'vcek') out.ek = e.data;
    else if (e.guid === SNP_CERT_GUIDS.VLEK && report.signingKey === 'vlek') out.ek = e.data;
    else if (e.guid === SNP_CERT_GUIDS.ASK) out.ask = e.data;
    else if (e.guid === SNP_CERT_GUIDS.ARK) out.ark = e.data;
  }
  return out;
}

function tcbObject(t: SnpTcbParts): Record<string, number> {
  return { ...(t.fmc === undefined ? {} : { fmc: t.fmc }), bootloader: t.bootloader, tee: t.tee, snp: t.snp, microcode: t.microcode };
}

/**
 * reported_tcb must equal the endorsement key's TCB, byte for byte in the product layout, and
 * chip_id must equal the VCEK hwID (unless MASK_CHIP_KEY). Returns the decoded reported TCB.
 */
export function checkSnpTcbAndChipId(report: SnpReport, ek: AmdEndorsementKey, product: SnpProduct): SnpTcbParts {
  if (ek.tcb.reserved.some((x) => x !== 0)) {
    throw new CloisterError('TCB_MISMATCH', 'endorsement key sets reserved TCB components');
  }
  if (product === 'Turin' && ek.tcb.fmc === undefined) throw new CloisterError('TCB_MISMATCH', 'Turin endorsement key lacks fmcSPL');
  if (product !== 'Turin' && ek.tcb.fmc !== undefined) throw new CloisterError('TCB_MISMATCH', 'non-Turin endorsement key has fmcSPL');
  const expected = encodeTcb(
    { bootloader: ek.tcb.bootloader, tee: ek.tcb.tee, snp: ek.tcb.snp, microcode: ek.tcb.microcode, ...(ek.tcb.fmc === undefined ? {} : { fmc: ek.tcb.fmc }) },
    product,
  );
  if (!timingSafeEqualBytes(expected, report.reportedTcb)) {
    throw new CloisterError('TCB_MISMATCH', 'reported_tcb does not match the endorsement key TCB', { detail: { field: 'reported_tcb' } });
  }
  if (ek.kind === 'vcek') {
    if (report.maskChipKey) {
      // MASK_CHIP_KEY: the firmware zeroes CHIP_ID; nothing to compare, but it must be zero.
      if (!isAllZero(report.chipId)) throw new CloisterError('EVIDENCE_MALFORMED', 'MASK_CHIP_KEY set but chip_id is not zero');
    } else {
      const hw = ek.hwId;
      if (hw === undefined) throw new CloisterError('TCB_MISMATCH', 'VCEK lacks hwID');
      // Turin VCEKs carry an 8-byte hwID: the first 8 bytes of CHIP_ID (KDS spec, Turin hwid).
      const reported = hw.byteLength === 8 ? report.chipId.subarray(0, 8) : report.chipId;
      if (!timingSafeEqualBytes(reported, hw)) {
        throw new CloisterError('TCB_MISMATCH', 'chip_id does not match the VCEK hwID', { detail: { field: 'chip_id' } });
      }
    }
  }
  return decodeTcb(report.reportedTcb, product);
}

function claimsOf(report: SnpReport, product: SnpProduct, ek: AmdEndorsementKey, tcb: SnpTcbParts): VerifiedClaims {
  return {
    platform: 'sev-snp',
    simulated: false,
    measurements: { MEASUREMENT: toHex(report.measurement) },
    details: {
      product,
      reportVersion: report.version,
      signingKey: ek.kind,
      guestSvn: report.guestSvn,
      vmpl: report.vmpl,
      policy: describeSnpGuestPolicy(report.policy),
      reportData: toHex(report.reportData),
      hostData: toHex(report.hostData),
      idKeyDigest: toHex(report.idKeyDigest),
      authorKeyDigest: toHex(report.authorKeyDigest),
      authorKeyEnabled: report.authorKeyEnabled,
      familyId: toHex(report.familyId),
      imageId: toHex(report.imageId),
      reportedTcb: tcbObject(tcb),
      currentTcb: tcbObject(decodeTcb(report.currentTcb, product)),
      committedTcb: tcbObject(decodeTcb(report.committedTcb, product)),
      launchTcb: tcbObject(decodeTcb(report.launchTcb, product)),
      firmware: `${report.currentVersion.major}.${report.currentVersion.minor}.${report.currentVersion.build}`,
      chipId: toHex(report.chipId),
      maskChipKey: report.maskChipKey,
      platformInfo: `0x${report.platformInfo.toString(16)}`,
      ...(ek.productName === undefined ? {} : { vcekProductName: ek.productName }),
    },
  };
}

/** Verify SEV-SNP evidence. Never throws for bad evidence: failures are steps with codes. */
export async function verifySevSnpEvidence(bundle: EvidenceBundle, options: SevSnpVerifyOptions): Promise<VerificationReport> {
  const steps: VerificationStep[] = [];
  const fail = (step: string, err: unknown, fallback: ErrorCode): VerificationReport => {
    const e = asCloisterError(err, fallback);
    steps.push({ step, ok: false, code: e.code, detail: e.message });
    return { ok: false, platform: 'sev-snp', simulated: false, steps };
  };
  if (bundle.platform !== 'sev-snp') {
    return fail('decode', new CloisterError('EVIDENCE_MALFORMED', 'bundle is not SEV-SNP evidence'), 'EVIDENCE_MALFORMED');
  }
  const at = options.at ?? new Date();

  let report: SnpReport;
  try {
    report = parseSnpReport(bundle.evidence);
  } catch (err) {
    return fail('decode', err, 'EVIDENCE_MALFORMED');
  }
  steps.push({ step: 'decode', ok: true, detail: `report v${report.version}, signed by ${report.signingKey.toUpperCase()}` });

  let certs: Certs;
  let ek: AmdEndorsementKey;
  try {
    certs = certsFromBundle(bundle.certificates, report, options.certTableLimits);
    let der = certs.ek ?? options.vcek;
    let source = certs.ek !== undefined ? 'evidence' : 'caller';
    if (der === undefined && options.kds !== undefined && report.signingKey === 'vcek') {
      const product = productFromCpuid(report);
      if (product === undefined) throw new CloisterError('NOT_FOUND', 'no VCEK, and the report does not name its product for a KDS fetch');
      der = await options.kds.fetchVcek({ product, chipId: report.chipId, reportedTcb: decodeTcb(report.reportedTcb, product) });
      source = 'AMD KDS';
    }
    if (der === undefined) throw new CloisterError('CERT_CHAIN_INVALID', 'no VCEK/VLEK: none in the evidence and none given');
    ek = parseAmdEndorsementKey(der);
    if (ek.kind !== report.signingKey) throw new CloisterError('CERT_CHAIN_INVALID', 'certificate kind does not match the report SIGNING_KEY');
    steps.push({ step: 'endorsement-key', ok: true, detail: `${ek.kind.toUpperCase()} from ${source}` });
  } catch (err) {
    return fail('endorsement-key', err, 'CERT_CHAIN_INVALID');
  }

  let product: SnpProduct;
  try {
    const chain = verifyAmdChain(ek, {
      at,
      ...(options.policy === 'none' ? {} : { products: options.policy.products }),
      ...(options.roots === undefined ? {} : { roots: options.roots }),
      ...(certs.ark === undefined ? {} : { presentedArk: certs.ark }),
      ...(certs.ask === undefined ? {} : { presentedAsk: certs.ask }),
    });
    product = chain.product;
    const named = productFromCpuid(report);
    if (named !== undefined && named !== product) {
      throw new CloisterError('CERT_CHAIN_INVALID', 'report CPUID names another product than the certificate chain');
    }
    steps.push({ step: 'chain', ok: true, detail: `ARK-${product} -> ${ek.kind === 'vcek' ? 'ASK' : 'ASVK'} -> ${ek.kind.toUpperCase()}` });
  } catch (err) {
    return fail('chain', err, 'CERT_CHAIN_INVALID');
  }

  if (!verifySnpReportSignature(report, ek.publicKey)) {
    return fail('signature', new CloisterError('EVIDENCE_SIGNATURE_INVALID', 'report signature does not verify with the endorsement key'), 'EVIDENCE_SIGNATURE_INVALID');
  }
  steps.push({ step: 'signature', ok: true });

  let tcb: SnpTcbParts;
  try {
    tcb = checkSnpTcbAndChipId(report, ek, product);
    steps.push(report.maskChipKey ? { step: 'tcb', ok: true, detail: 'chip_id masked by the host' } : { step: 'tcb', ok: true });
  } catch (err) {
    return fail('tcb', err, 'TCB_MISMATCH');
  }
  const claims = claimsOf(report, product, ek, tcb);

  let ok = true;
  try {
    if (options.policy === 'none') {
      steps.push({ step: 'policy', ok: true, detail: 'skipped: no policy given (inspection only)' });
    } else {
      checkSevSnpPolicy(report, tcb, options.policy);
      steps.push({ step: 'policy', ok: true });
    }
  } catch (err) {
    const e = asCloisterError(err, 'POLICY_MISMATCH');
    steps.push({ step: 'policy', ok: false, code: e.code, detail: e.message });
    ok = false;
  }

  if (options.skipBinding === true) {
    steps.push({ step: 'binding', ok: true, detail: 'skipped: no key config to bind (raw evidence inspection)' });
  } else {
    try {
      const expected = options.expectedReportData ?? reportDataFor(bundle.keyConfig, options.nonce);
      if (expected.byteLength !== 64 || !timingSafeEqualBytes(expected, report.reportData)) {
        throw new CloisterError('BINDING_MISMATCH', 'report_data does not bind the key config and nonce');
      }
      steps.push({ step: 'binding', ok: true });
    } catch (err) {
      const e = asCloisterError(err, 'BINDING_MISMATCH');
      steps.push({ step: 'binding', ok: false, code: e.code, detail: e.message });
      ok = false;
    }
  }
  return { ok, platform: 'sev-snp', simulated: false, steps, claims };
}
