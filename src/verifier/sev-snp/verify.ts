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
import { CloisterError } from '../../errors.js';
import { isAllZero, toHex } from '../../core/hex.js';
import { checkReportData, POLICY_SKIPPED, StepRunner } from '../report.js';
import type { EvidenceBundle, VerificationReport, VerifiedClaims } from '../../core/types.js';
import { parseCertTable, SNP_CERT_GUIDS, type CertTableLimits } from './cert-table.js';
import { parseAmdEndorsementKey, verifyAmdChain, type AmdEndorsementKey } from './certs.js';
import type { KdsClient } from './kds.js';
import { checkSevSnpGuestPolicyDefaults, checkSevSnpPolicy, describeSnpGuestPolicy, type SevSnpPolicy } from './policy.js';
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
  const run = new StepRunner('sev-snp');
  const at = options.at ?? new Date();

  let report: SnpReport | undefined;
  const decoded = run.run('decode', 'EVIDENCE_MALFORMED', () => {
    if (bundle.platform !== 'sev-snp') throw new CloisterError('EVIDENCE_MALFORMED', 'bundle is not SEV-SNP evidence');
    const r = parseSnpReport(bundle.evidence);
    report = r;
    return `report v${r.version}, signed by ${r.signingKey.toUpperCase()}`;
  });
  if (!decoded || report === undefined) return run.finish();
  const rep = report;

  let certs: Certs = {};
  let ek: AmdEndorsementKey | undefined;
  const endorsed = await run.runAsync('endorsement-key', 'CERT_CHAIN_INVALID', async () => {
    certs = certsFromBundle(bundle.certificates, rep, options.certTableLimits);
    let der = certs.ek ?? options.vcek;
    let source = certs.ek !== undefined ? 'evidence' : 'caller';
    if (der === undefined && options.kds !== undefined && rep.signingKey === 'vcek') {
      const product = productFromCpuid(rep);
      if (product === undefined) throw new CloisterError('NOT_FOUND', 'no VCEK, and the report does not name its product for a KDS fetch');
      der = await options.kds.fetchVcek({ product, chipId: rep.chipId, reportedTcb: decodeTcb(rep.reportedTcb, product) });
      source = 'AMD KDS';
    }
    if (der === undefined) throw new CloisterError('CERT_CHAIN_INVALID', 'no VCEK/VLEK: none in the evidence and none given');
    const key = parseAmdEndorsementKey(der);
    if (key.kind !== rep.signingKey) throw new CloisterError('CERT_CHAIN_INVALID', 'certificate kind does not match the report SIGNING_KEY');
    ek = key;
    return `${key.kind.toUpperCase()} from ${source}`;
  });
  if (!endorsed || ek === undefined) return run.finish();
  const key = ek;
  const presented = certs;

  let product: SnpProduct | undefined;
  const chained = run.run('chain', 'CERT_CHAIN_INVALID', () => {
    const chain = verifyAmdChain(key, {
      at,
      ...(options.policy === 'none' ? {} : { products: options.policy.products }),
      ...(options.roots === undefined ? {} : { roots: options.roots }),
      ...(presented.ark === undefined ? {} : { presentedArk: presented.ark }),
      ...(presented.ask === undefined ? {} : { presentedAsk: presented.ask }),
    });
    const named = productFromCpuid(rep);
    if (named !== undefined && named !== chain.product) {
      throw new CloisterError('CERT_CHAIN_INVALID', 'report CPUID names another product than the certificate chain');
    }
    product = chain.product;
    return `ARK-${chain.product} -> ${key.kind === 'vcek' ? 'ASK' : 'ASVK'} -> ${key.kind.toUpperCase()}`;
  });
  if (!chained || product === undefined) return run.finish();
  const prod = product;

  const signed = run.run('signature', 'EVIDENCE_SIGNATURE_INVALID', () => {
    if (!verifySnpReportSignature(rep, key.publicKey)) {
      throw new CloisterError('EVIDENCE_SIGNATURE_INVALID', 'report signature does not verify with the endorsement key');
    }
    return undefined;
  });
  if (!signed) return run.finish();

  let tcb: SnpTcbParts | undefined;
  const tcbOk = run.run('tcb', 'TCB_MISMATCH', () => {
    tcb = checkSnpTcbAndChipId(rep, key, prod);
    return rep.maskChipKey ? 'chip_id masked by the host' : undefined;
  });
  if (!tcbOk || tcb === undefined) return run.finish();
  const reportedTcb = tcb;
  run.setClaims(claimsOf(rep, prod, key, reportedTcb));

  // Policy and binding both run, so that every reason for rejection is reported.
  run.run('policy', 'POLICY_MISMATCH', () => {
    if (options.policy === 'none') {
      // Inspection without a policy still refuses what no policy accepts by default.
      checkSevSnpGuestPolicyDefaults(rep);
      return `${POLICY_SKIPPED}; debug and migration agent refused`;
    }
    checkSevSnpPolicy(rep, reportedTcb, options.policy);
    return undefined;
  });
  run.run('binding', 'BINDING_MISMATCH', () => checkReportData(rep.reportData, bundle.keyConfig, options));
  return run.finish();
}
