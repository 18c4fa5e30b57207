/**
 * Attesters that run inside an SEV-SNP or TDX confidential VM. Each binds the key config:
 * report_data = SHA-512("cloister/attest/v1\0" || keyConfig || nonce) (binding.ts), asks the
 * hardware for evidence, and checks that the evidence carries exactly that report_data before
 * handing it out (a kernel or host that answered for other data fails here, not at a client).
 */
import { timingSafeEqualBytes } from '../../crypto/ct.js';
import { CloisterError } from '../../errors.js';
import { reportDataFor } from '../../protocol/binding.js';
import { parseSnpReport } from '../../verifier/sev-snp/report.js';
import { parseTdxQuote } from '../../verifier/tdx/quote.js';
import type { AttestationRequest, Attester, EvidenceBundle } from '../../core/types.js';
import type { ConfigfsTsm } from './configfs.js';
import type { SevGuestDevice } from './sev-guest.js';

export const TSM_PROVIDER_SEV = 'sev_guest';
export const TSM_PROVIDER_TDX = 'tdx_guest';

function checkReportData(actual: Uint8Array, expected: Uint8Array): void {
  if (!timingSafeEqualBytes(actual, expected)) {
    throw new CloisterError('ATTESTER_FAILED', 'the hardware evidence does not carry the requested report_data');
  }
}

function snpEvidence(report: Uint8Array, expected: Uint8Array): Uint8Array {
  let parsed;
  try {
    parsed = parseSnpReport(report);
  } catch (cause) {
    throw new CloisterError('ATTESTER_FAILED', 'the SEV-SNP report from the kernel does not parse', { cause });
  }
  checkReportData(parsed.reportData, expected);
  return new Uint8Array(report);
}

/** SEV-SNP through configfs-tsm; certificates = the auxblob certificate table. */
export class SevSnpConfigfsAttester implements Attester {
  readonly platform = 'sev-snp' as const;
  readonly simulated = false;
  constructor(readonly tsm: ConfigfsTsm) {}

  async attest(request: AttestationRequest): Promise<EvidenceBundle> {
    const reportData = reportDataFor(request.keyConfig, request.nonce);
    const r = await this.tsm.report(reportData);
    if (r.provider !== TSM_PROVIDER_SEV) throw new CloisterError('ATTESTER_FAILED', 'configfs-tsm provider is not sev_guest');
    return {
      platform: 'sev-snp',
      evidence: snpEvidence(r.outblob, reportData),
      keyConfig: new Uint8Array(request.keyConfig),
      ...(r.auxblob === undefined ? {} : { certificates: new Uint8Array(r.auxblob) }),
    };
  }
}

/** SEV-SNP through /dev/sev-guest SNP_GET_EXT_REPORT (older kernels). */
export class SevSnpIoctlAttester implements Attester {
  readonly platform = 'sev-snp' as const;
  readonly simulated = false;
  constructor(
    readonly device: SevGuestDevice,
    readonly vmpl = 0,
  ) {}

  async attest(request: AttestationRequest): Promise<EvidenceBundle> {
    const reportData = reportDataFor(request.keyConfig, request.nonce);
    const r = await this.device.getExtReport(reportData, this.vmpl);
    return {
      platform: 'sev-snp',
      evidence: snpEvidence(r.report, reportData),
      keyConfig: new Uint8Array(request.keyConfig),
      ...(r.certs.byteLength === 0 ? {} : { certificates: new Uint8Array(r.certs) }),
    };
  }
}

export interface TdxConfigfsAttesterOptions {
  /**
   * Collateral to attach (QuoteCollateralV3 JSON bytes) for this quote, e.g. from a
   * TdxCollateralSource (a file, Intel PCS or a PCCS; cached and refreshed).
   */
  readonly collateral?: (quote: Uint8Array) => Promise<Uint8Array | undefined>;
}

/** TDX through configfs-tsm; collateral attached when configured (else clients fetch it themselves). */
export class TdxConfigfsAttester implements Attester {
  readonly platform = 'tdx' as const;
  readonly simulated = false;
  constructor(
    readonly tsm: ConfigfsTsm,
    readonly options: TdxConfigfsAttesterOptions = {},
  ) {}

  async attest(request: AttestationRequest): Promise<EvidenceBundle> {
    const reportData = reportDataFor(request.keyConfig, request.nonce);
    const r = await this.tsm.report(reportData);
    if (r.provider !== TSM_PROVIDER_TDX) throw new CloisterError('ATTESTER_FAILED', 'configfs-tsm provider is not tdx_guest');
    let quote;
    try {
      quote = parseTdxQuote(r.outblob);
    } catch (cause) {
      throw new CloisterError('ATTESTER_FAILED', 'the TDX quote from the kernel does not parse', { cause });
    }
    checkReportData(quote.report.reportData, reportData);
    const collateral = this.options.collateral === undefined ? undefined : await this.options.collateral(new Uint8Array(r.outblob));
    return {
      platform: 'tdx',
      evidence: new Uint8Array(r.outblob),
      keyConfig: new Uint8Array(request.keyConfig),
      ...(collateral === undefined ? {} : { collateral: new Uint8Array(collateral) }),
    };
  }
}
