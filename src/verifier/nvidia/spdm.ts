/**
 * NVIDIA GPU attestation report parser: the SPDM GET_MEASUREMENTS request followed by the
 * MEASUREMENTS response, exactly as `nvmlDeviceGetConfComputeGpuAttestationReport` returns
 * it (DMTF DSP0274 SPDM 1.1, sections 10.11 "GET_MEASUREMENTS request and MEASUREMENTS
 * response messages" and 10.11.1 "Measurement block").
 *
 *   request  (37 bytes): SPDMVersion 0x11 | 0xE0 | Param1 (bit 0: signature requested) |
 *                        Param2 0xFF (all measurements) | Nonce (32) | SlotIDParam (1)
 *   response:            SPDMVersion | 0x60 | Param1 | Param2 (slot id) | NumberOfBlocks (1) |
 *                        MeasurementRecordLength (3, LE) | MeasurementRecord |
 *                        Nonce (32) | OpaqueDataLength (2, LE) | OpaqueData | Signature
 *   measurement block:   Index (1) | MeasurementSpecification (1, bit 0 = DMTF) |
 *                        MeasurementSize (2, LE) | DMTFSpecMeasurementValueType (1) |
 *                        DMTFSpecMeasurementValueSize (2, LE) | value
 *
 * The signature (ECDSA P-384, raw r||s, 96 bytes) covers SHA-384 of every byte before it:
 * the request and the response up to the signature (SPDM 1.1 transcript L1/L2).
 * NVIDIA's OpaqueData is a list of type (2, LE) | size (2, LE) | value fields.
 *
 * Strict: every length is checked against the bytes present, a block's MeasurementSize
 * must equal its DMTF header plus value, block indexes are unique, the opaque data must be
 * consumed exactly by its fields (no duplicates) and the signature must be exactly the
 * rest of the bytes. Nothing returned aliases the caller's buffer.
 */
import { CloisterError } from '../../errors.js';

export const SPDM_VERSION_1_1 = 0x11;
export const SPDM_GET_MEASUREMENTS = 0xe0;
export const SPDM_MEASUREMENTS = 0x60;
export const SPDM_NONCE_BYTES = 32;
export const SPDM_REQUEST_BYTES = 4 + SPDM_NONCE_BYTES + 1;
/** ECDSA P-384 r || s. */
export const SPDM_SIGNATURE_BYTES = 96;
/** DSP0274 10.11: OpaqueDataLength shall not exceed 1024. */
export const SPDM_MAX_OPAQUE_BYTES = 1024;
/** A report is ~4 KiB (64 blocks of 48-byte digests); the default cap leaves room for larger firmware. */
export const DEFAULT_MAX_REPORT_BYTES = 16 * 1024;

/** NVIDIA opaque data field ids (as NVIDIA's local verifier names them). */
export const OPAQUE_FIELD = {
  CERT_ISSUER_NAME: 1,
  CERT_AUTHORITY_KEY_IDENTIFIER: 2,
  DRIVER_VERSION: 3,
  GPU_INFO: 4,
  SKU: 5,
  VBIOS_VERSION: 6,
  MANUFACTURER_ID: 7,
  TAMPER_DETECTION: 8,
  SMC: 9,
  VPR: 10,
  NVDEC0_STATUS: 11,
  MSRSCNT: 12,
  CPRINFO: 13,
  BOARD_ID: 14,
  CHIP_SKU: 15,
  CHIP_SKU_MOD: 16,
  PROJECT: 17,
  PROJECT_SKU: 18,
  PROJECT_SKU_MOD: 19,
  FWID: 20,
  PROTECTED_PCIE_STATUS: 21,
  SWITCH_PDI: 22,
  FLOORSWEPT_PORTS: 23,
  POSITION_ID: 24,
  LOCK_SWITCH_STATUS: 25,
  GPU_LINK_CONN: 32,
  SYS_ENABLE_STATUS: 33,
  OPAQUE_DATA_VERSION: 34,
  CHIP_INFO: 35,
  FEATURE_FLAG: 36,
} as const;

/** NVDEC0 status values in the opaque data. */
export const NVDEC0_ENABLED = 0xaa;
export const NVDEC0_DISABLED = 0x55;

export interface SpdmMeasurementBlock {
  /** SPDM block index, 1-based (a RIM's index i is block i + 1). */
  readonly index: number;
  readonly valueType: number;
  readonly value: Uint8Array;
}

export interface NvidiaAttestationReport {
  readonly spdmVersion: number;
  /** The requester's nonce (the freshness value the verifier must compare). */
  readonly requestNonce: Uint8Array;
  readonly responderNonce: Uint8Array;
  readonly slotId: number;
  /** Blocks in report order. */
  readonly blocks: readonly SpdmMeasurementBlock[];
  /** Opaque data fields by type id. */
  readonly opaque: ReadonlyMap<number, Uint8Array>;
  /** The bytes the signature covers: request || response without the signature. */
  readonly signedBytes: Uint8Array;
  readonly signature: Uint8Array;
}

function fail(message: string): CloisterError {
  return new CloisterError('EVIDENCE_MALFORMED', `GPU attestation report: ${message}`);
}

/** Bounds-checked little-endian reader over a private copy. */
class Reader {
  readonly #b: Uint8Array;
  #off: number;
  constructor(b: Uint8Array, off = 0) {
    this.#b = b;
    this.#off = off;
  }
  get offset(): number {
    return this.#off;
  }
  get remaining(): number {
    return this.#b.byteLength - this.#off;
  }
  bytes(n: number, what: string): Uint8Array {
    if (n > this.remaining) throw fail(`${what} needs ${n} bytes at offset ${this.#off}, ${this.remaining} left`);
    const out = this.#b.slice(this.#off, this.#off + n);
    this.#off += n;
    return out;
  }
  u8(what: string): number {
    return this.bytes(1, what)[0] ?? 0;
  }
  uintLE(n: number, what: string): number {
    const b = this.bytes(n, what);
    let v = 0;
    for (let i = n - 1; i >= 0; i--) v = v * 256 + (b[i] ?? 0);
    return v;
  }
}

/**
 * Parse the opaque data of the MEASUREMENTS response: type | size | value fields, each type
 * at most once, consuming every byte.
 */
export function parseOpaqueData(data: Uint8Array): Map<number, Uint8Array> {
  const out = new Map<number, Uint8Array>();
  const r = new Reader(data);
  while (r.remaining > 0) {
    const type = r.uintLE(2, 'opaque field type');
    const size = r.uintLE(2, `opaque field ${type} size`);
    const value = r.bytes(size, `opaque field ${type}`);
    if (out.has(type)) throw fail(`opaque field ${type} appears twice`);
    out.set(type, value);
  }
  return out;
}

/** Parse a GPU attestation report (binary). Throws CloisterError(EVIDENCE_MALFORMED). */
export function parseNvidiaAttestationReport(input: Uint8Array, options: { readonly maxBytes?: number } = {}): NvidiaAttestationReport {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_REPORT_BYTES;
  if (!(input instanceof Uint8Array)) throw new CloisterError('INVALID_ARGUMENT', 'GPU attestation report must be bytes');
  if (input.byteLength > maxBytes) {
    throw new CloisterError('LIMIT_EXCEEDED', `GPU attestation report is ${input.byteLength} bytes, over the limit of ${maxBytes} (maxReportBytes)`, {
      detail: { size: input.byteLength, maxBytes },
    });
  }
  const b = Uint8Array.from(input);
  const r = new Reader(b);

  // GET_MEASUREMENTS request.
  const version = r.u8('request SPDMVersion');
  if (version !== SPDM_VERSION_1_1) throw fail(`request SPDMVersion 0x${version.toString(16)} is not 0x11 (SPDM 1.1)`);
  const reqCode = r.u8('request code');
  if (reqCode !== SPDM_GET_MEASUREMENTS) throw fail(`request code 0x${reqCode.toString(16)} is not GET_MEASUREMENTS (0xe0)`);
  const reqParam1 = r.u8('request Param1');
  if (reqParam1 !== 0x01) throw fail(`request Param1 0x${reqParam1.toString(16)} does not ask for a signature (expected 0x01)`);
  const reqParam2 = r.u8('request Param2');
  if (reqParam2 !== 0xff) throw fail(`request Param2 0x${reqParam2.toString(16)} does not ask for all measurements (expected 0xff)`);
  const requestNonce = r.bytes(SPDM_NONCE_BYTES, 'request nonce');
  const slotId = r.u8('request SlotIDParam');
  if (slotId > 7) throw fail(`request SlotIDParam ${slotId} is not a slot (0..7)`);

  // MEASUREMENTS response.
  const respVersion = r.u8('response SPDMVersion');
  if (respVersion !== version) throw fail(`response SPDMVersion 0x${respVersion.toString(16)} differs from the request's 0x${version.toString(16)}`);
  const respCode = r.u8('response code');
  if (respCode !== SPDM_MEASUREMENTS) throw fail(`response code 0x${respCode.toString(16)} is not MEASUREMENTS (0x60)`);
  const respParam1 = r.u8('response Param1');
  // SPDM 1.1: Param1 is reserved for a request of all measurements (0xff).
  if (respParam1 !== 0) throw fail(`response Param1 0x${respParam1.toString(16)} is reserved and must be 0`);
  const respParam2 = r.u8('response Param2');
  if ((respParam2 & 0x0f) !== slotId || (respParam2 & 0xf0) !== 0) {
    throw fail(`response Param2 0x${respParam2.toString(16)} does not name the requested slot ${slotId}`);
  }
  const numberOfBlocks = r.u8('NumberOfBlocks');
  if (numberOfBlocks === 0) throw fail('NumberOfBlocks is 0');
  const recordLength = r.uintLE(3, 'MeasurementRecordLength');
  const record = new Reader(r.bytes(recordLength, 'MeasurementRecord'));
  const blocks: SpdmMeasurementBlock[] = [];
  const seen = new Set<number>();
  for (let i = 0; i < numberOfBlocks; i++) {
    const index = record.u8(`block ${i + 1} Index`);
    const spec = record.u8(`block ${i + 1} MeasurementSpecification`);
    if (spec !== 0x01) throw fail(`block index ${index}: MeasurementSpecification 0x${spec.toString(16)} is not DMTF (0x01)`);
    const size = record.uintLE(2, `block ${index} MeasurementSize`);
    const m = new Reader(record.bytes(size, `block ${index} Measurement`));
    const valueType = m.u8(`block ${index} DMTFSpecMeasurementValueType`);
    const valueSize = m.uintLE(2, `block ${index} DMTFSpecMeasurementValueSize`);
    const value = m.bytes(valueSize, `block ${index} value`);
    if (m.remaining !== 0) throw fail(`block index ${index}: MeasurementSize ${size} is not 3 + DMTFSpecMeasurementValueSize ${valueSize}`);
    if (index === 0 || index === 0xff) throw fail(`block index ${index} is reserved`);
    if (seen.has(index)) throw fail(`block index ${index} appears twice`);
    seen.add(index);
    blocks.push({ index, valueType, value });
  }
  if (record.remaining !== 0) throw fail(`MeasurementRecordLength ${recordLength} leaves ${record.remaining} bytes after ${numberOfBlocks} blocks`);
  const responderNonce = r.bytes(SPDM_NONCE_BYTES, 'response nonce');
  const opaqueLength = r.uintLE(2, 'OpaqueDataLength');
  if (opaqueLength > SPDM_MAX_OPAQUE_BYTES) throw fail(`OpaqueDataLength ${opaqueLength} exceeds ${SPDM_MAX_OPAQUE_BYTES}`);
  const opaque = parseOpaqueData(r.bytes(opaqueLength, 'OpaqueData'));
  const signedLength = r.offset;
  if (r.remaining !== SPDM_SIGNATURE_BYTES) {
    throw fail(`${r.remaining} bytes follow the opaque data; the signature is exactly ${SPDM_SIGNATURE_BYTES} (ECDSA P-384 r||s)`);
  }
  const signature = r.bytes(SPDM_SIGNATURE_BYTES, 'signature');
  return {
    spdmVersion: version,
    requestNonce,
    responderNonce,
    slotId,
    blocks,
    opaque,
    signedBytes: b.slice(0, signedLength),
    signature,
  };
}

/**
 * A report as the tools store it: hex text (NVIDIA's samples, nvtrust, NRAS payloads) or
 * raw bytes. Hex is recognised only when the whole input (surrounding whitespace aside) is
 * even-length hex.
 */
export function reportBytesFrom(input: Uint8Array): Uint8Array {
  const text = Buffer.from(input.buffer, input.byteOffset, input.byteLength).toString('latin1').trim();
  if (text.length > 0 && /^[0-9a-fA-F]+$/.test(text)) {
    if (text.length % 2 !== 0) throw new CloisterError('EVIDENCE_MALFORMED', 'GPU attestation report hex text has an odd number of digits');
    return new Uint8Array(Buffer.from(text, 'hex'));
  }
  // A binary report starts with SPDMVersion 0x11, which is not a hex digit.
  return Uint8Array.from(input);
}

/** The NUL-terminated ASCII driver version in the opaque data, e.g. "550.90.07". */
export function driverVersionOf(report: NvidiaAttestationReport): string {
  const v = report.opaque.get(OPAQUE_FIELD.DRIVER_VERSION);
  if (v === undefined) throw fail('the opaque data has no driver version (field 3)');
  let end = v.byteLength;
  while (end > 0 && v[end - 1] === 0) end--;
  const text = Buffer.from(v.subarray(0, end)).toString('latin1');
  if (!/^[0-9A-Za-z.\-_]{1,64}$/.test(text)) throw fail('the driver version (field 3) is not printable ASCII');
  return text;
}

/**
 * The VBIOS version in the RIM's notation, e.g. bytes 00 5e 00 96 01 00 00 00 ->
 * "96.00.5e.00.01": the 8-byte little-endian value's high 32 bits as four bytes, then the
 * low byte of the upper half of the low word (the OEM byte), lower-case hex.
 */
export function vbiosVersionOf(report: NvidiaAttestationReport): string {
  const v = report.opaque.get(OPAQUE_FIELD.VBIOS_VERSION);
  if (v === undefined || v.byteLength !== 8) throw fail(`the VBIOS version (field 6) is ${v === undefined ? 'absent' : `${v.byteLength} bytes`}, not 8`);
  // Big-endian hex of the little-endian value: "0000000196005e00" for the example above.
  const be = Buffer.from(v).reverse().toString('hex');
  const digits = be.slice(8) + be.slice(6, 8);
  return (digits.match(/.{2}/g) ?? []).join('.');
}
