/**
 * Intel TDX DCAP quote parser, versions 4 and 5 (Intel "TDX DCAP Quoting Library API",
 * appendix "Quote Format"; v5 adds the body descriptor { type u16, size u32 } so the body can
 * be a TD report 1.0 (584 bytes, type 2) or 1.5 (648 bytes, type 3)).
 *
 *   header (48) | [v5: type u16, size u32] | TD report | sig_data_len u32 | sig_data
 *   sig_data = ECDSA sig (64) | attestation key (64) | cert data { type u16 = 6, size u32, body }
 *   type 6 body = QE report (384) | QE report sig (64) | auth data { size u16, data }
 *                 | cert data { type u16, size u32, body (type 5: PEM PCK chain) }
 *
 * Every length is checked against what remains, and nothing may follow the last field: a
 * quote with trailing bytes is rejected (dcap-qvl itself ignores them), except bounded zero
 * padding after the signature data (see DEFAULT_MAX_ZERO_PADDING). Fields are copies.
 */
import { CloisterError } from '../../errors.js';

const TDX_TEE_TYPE = 0x81;
const TDX_ATTESTATION_KEY_ECDSA_P256 = 2;
const TD_REPORT10_SIZE = 584;
const TD_REPORT15_SIZE = 648;
const QE_REPORT_SIZE = 384;
/** Intel's QE vendor id (939A7233-F79C-4CA9-940A-0DB3957F0607). */
const INTEL_QE_VENDOR_ID = '939a7233f79c4ca9940a0db3957f0607';
/** Largest quote accepted by default (real ones are about 5 KiB). */
const DEFAULT_MAX_QUOTE_BYTES = 64 * 1024;
/**
 * Zero bytes tolerated after the signature data. Real quotes arrive in fixed-size buffers
 * from the quote generation service and carry zero padding (70 bytes in the Phala and NEAR AI
 * samples); anything non-zero there is rejected.
 */
const DEFAULT_MAX_ZERO_PADDING = 8 * 1024;

interface TdxQuoteLimits {
  readonly maxQuoteBytes?: number;
  readonly maxZeroPadding?: number;
}

export interface TdReport {
  readonly teeTcbSvn: Uint8Array;
  readonly mrSeam: Uint8Array;
  readonly mrSignerSeam: Uint8Array;
  readonly seamAttributes: Uint8Array;
  readonly tdAttributes: Uint8Array;
  readonly xfam: Uint8Array;
  readonly mrTd: Uint8Array;
  readonly mrConfigId: Uint8Array;
  readonly mrOwner: Uint8Array;
  readonly mrOwnerConfig: Uint8Array;
  readonly rtmrs: readonly [Uint8Array, Uint8Array, Uint8Array, Uint8Array];
  readonly reportData: Uint8Array;
  /** TD report 1.5 only. */
  readonly teeTcbSvn2?: Uint8Array;
  readonly mrServiceTd?: Uint8Array;
}

export interface TdxQuote {
  readonly version: 4 | 5;
  readonly attestationKeyType: number;
  readonly teeType: number;
  readonly qeVendorId: Uint8Array;
  readonly bodyType: 2 | 3;
  readonly report: TdReport;
  /** Bytes covered by the attestation-key signature (header + body). */
  readonly signedLength: number;
  readonly qeReport: Uint8Array;
  /** Inner certification data type (5 = PEM PCK chain). */
  readonly certificationDataType: number;
  readonly certificationData: Uint8Array;
}

function malformed(message: string, detail: Record<string, string | number | boolean> = {}): CloisterError {
  return new CloisterError('EVIDENCE_MALFORMED', `TDX quote: ${message}`, { detail: { format: 'tdx-quote', ...detail } });
}

class Reader {
  #pos = 0;
  readonly #dv: DataView;
  constructor(
    readonly bytes: Uint8Array,
    readonly what: string,
  ) {
    this.#dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  get pos(): number {
    return this.#pos;
  }
  need(n: number): void {
    if (n < 0 || this.#pos + n > this.bytes.byteLength) throw malformed(`${this.what} is truncated`, { at: this.#pos, need: n });
  }
  u16(): number {
    this.need(2);
    const v = this.#dv.getUint16(this.#pos, true);
    this.#pos += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.#dv.getUint32(this.#pos, true);
    this.#pos += 4;
    return v;
  }
  take(n: number): Uint8Array {
    this.need(n);
    const v = this.bytes.slice(this.#pos, this.#pos + n);
    this.#pos += n;
    return v;
  }
  end(): void {
    if (this.#pos !== this.bytes.byteLength) {
      throw malformed(`${this.what} has trailing bytes`, { trailing: this.bytes.byteLength - this.#pos });
    }
  }
}

function readTdReport(r: Reader, size: number): TdReport {
  const start = r.pos;
  const teeTcbSvn = r.take(16);
  const mrSeam = r.take(48);
  const mrSignerSeam = r.take(48);
  const seamAttributes = r.take(8);
  const tdAttributes = r.take(8);
  const xfam = r.take(8);
  const mrTd = r.take(48);
  const mrConfigId = r.take(48);
  const mrOwner = r.take(48);
  const mrOwnerConfig = r.take(48);
  const rtmrs = [r.take(48), r.take(48), r.take(48), r.take(48)] as const;
  const reportData = r.take(64);
  let extra: Pick<TdReport, 'teeTcbSvn2' | 'mrServiceTd'> = {};
  if (size === TD_REPORT15_SIZE) extra = { teeTcbSvn2: r.take(16), mrServiceTd: r.take(48) };
  if (r.pos - start !== size) throw malformed('TD report size mismatch');
  return { teeTcbSvn, mrSeam, mrSignerSeam, seamAttributes, tdAttributes, xfam, mrTd, mrConfigId, mrOwner, mrOwnerConfig, rtmrs, reportData, ...extra };
}

/** Parse and structurally validate a TDX quote (v4 or v5). */
export function parseTdxQuote(bytes: Uint8Array, limits: TdxQuoteLimits = {}): TdxQuote {
  const maxBytes = limits.maxQuoteBytes ?? DEFAULT_MAX_QUOTE_BYTES;
  const maxPadding = limits.maxZeroPadding ?? DEFAULT_MAX_ZERO_PADDING;
  if (!(bytes instanceof Uint8Array)) throw new CloisterError('INVALID_ARGUMENT', 'quote must be a Uint8Array');
  if (bytes.byteLength > maxBytes) {
    throw new CloisterError('LIMIT_EXCEEDED', 'TDX quote is larger than allowed', { detail: { limit: 'maxQuoteBytes', max: maxBytes } });
  }
  const r = new Reader(new Uint8Array(bytes), 'quote'); // a copy: Buffer#slice would alias
  const version = r.u16();
  if (version !== 4 && version !== 5) throw malformed('unsupported quote version', { version });
  const attestationKeyType = r.u16();
  if (attestationKeyType !== TDX_ATTESTATION_KEY_ECDSA_P256) throw malformed('unsupported attestation key type', { attestationKeyType });
  const teeType = r.u32();
  if (teeType !== TDX_TEE_TYPE) throw malformed('not a TDX quote', { teeType });
  r.take(4); // reserved (qe_svn / pce_svn in SGX quotes)
  const qeVendorId = r.take(16);
  if (Buffer.from(qeVendorId).toString('hex') !== INTEL_QE_VENDOR_ID) throw malformed('QE vendor is not Intel');
  r.take(20); // user_data: QE-defined, covered by the signature
  let bodyType: 2 | 3 = 2;
  let bodySize = TD_REPORT10_SIZE;
  if (version === 5) {
    const t = r.u16();
    const size = r.u32();
    if (t === 2 && size === TD_REPORT10_SIZE) bodyType = 2;
    else if (t === 3 && size === TD_REPORT15_SIZE) bodyType = 3;
    else throw malformed('unsupported v5 body type or size', { bodyType: t, bodySize: size });
    bodySize = size;
  }
  const report = readTdReport(r, bodySize);
  const signedLength = r.pos;
  const sigLen = r.u32();
  const sig = new Reader(r.take(sigLen), 'signature data');
  const padding = r.bytes.subarray(r.pos);
  if (padding.byteLength > maxPadding || padding.some((x) => x !== 0)) {
    throw malformed('quote has trailing bytes after the signature data', { trailing: padding.byteLength });
  }
  sig.take(64); // quote signature
  sig.take(64); // attestation public key
  const outerType = sig.u16();
  if (outerType !== 6) throw malformed('certification data is not QE report certification data (type 6)', { type: outerType });
  const outer = new Reader(sig.take(sig.u32()), 'QE report certification data');
  sig.end();
  const qeReport = outer.take(QE_REPORT_SIZE);
  outer.take(64); // QE report signature
  outer.take(outer.u16()); // QE authentication data
  const certificationDataType = outer.u16();
  const certificationData = outer.take(outer.u32());
  outer.end();
  if (certificationData.byteLength === 0) throw malformed('empty certification data');
  return {
    version,
    attestationKeyType,
    teeType,
    qeVendorId,
    bodyType,
    report,
    signedLength,
    qeReport,
    certificationDataType,
    certificationData,
  };
}

/** TD attribute bits (Intel TDX module spec, "TD Attributes"). */
export const TD_ATTRIBUTE = {
  /** Bit 0, TUD.DEBUG: the host VMM can read and change TD state. */
  DEBUG: 0,
  /** Bit 28, SEC.SEPT_VE_DISABLE. */
  SEPT_VE_DISABLE: 28,
  /** Bit 30, SEC.PKS. */
  PKS: 30,
  /** Bit 31, SEC.KL. */
  KL: 31,
  /** Bit 63, OTHER.PERFMON. */
  PERFMON: 63,
} as const;

export function tdAttributeSet(attrs: Uint8Array, bit: number): boolean {
  const byte = attrs[bit >> 3] ?? 0;
  return ((byte >> (bit & 7)) & 1) === 1;
}
