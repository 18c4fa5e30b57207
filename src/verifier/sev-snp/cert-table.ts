/**
 * The SEV-SNP extended-report certificate table ("auxblob"): GHCB specification (AMD pub.
 * 56421) section "SNP Extended Guest Request", table "Certificate table entry". A list of
 * 24-byte entries { GUID (16 bytes), offset u32 LE, length u32 LE } terminated by an all-zero
 * entry; offsets are relative to the start of the table and point past the entry list.
 *
 * GUIDs are stored in RFC 4122 byte order (the same order go-sev-guest and the Linux
 * sev-guest driver use).
 */
import { CloisterError } from '../../errors.js';

const CERT_TABLE_ENTRY_SIZE = 24;

export const SNP_CERT_GUIDS = {
  VCEK: '63da758d-e664-4564-adc5-f4b93be8accd',
  VLEK: 'a8074bc2-a25a-483e-aae6-39c045a0b8a1',
  ASK: '4ab7b379-bbac-4fe4-a02f-05aef327c782',
  ARK: 'c0b406a4-a803-4952-9743-3fb6014cd0ae',
} as const;

export interface CertTableLimits {
  /** Largest table accepted, bytes. The kernel caps the buffer at 16 pages per request; default 64 KiB. */
  readonly maxTableBytes?: number;
  /** Most entries accepted. Default 16. */
  readonly maxEntries?: number;
  /** Largest single certificate, bytes. Default 16 KiB. */
  readonly maxCertBytes?: number;
}

const DEFAULT_CERT_TABLE_LIMITS: Required<CertTableLimits> = {
  maxTableBytes: 64 * 1024,
  maxEntries: 16,
  maxCertBytes: 16 * 1024,
};

interface CertTableEntry {
  /** Lower-case canonical GUID text. */
  readonly guid: string;
  readonly data: Uint8Array;
}

function malformed(message: string, detail: Record<string, string | number | boolean> = {}): CloisterError {
  return new CloisterError('EVIDENCE_MALFORMED', message, { detail: { format: 'sev-snp-cert-table', ...detail } });
}

function guidText(b: Uint8Array): string {
  const h = Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** Encode a GUID string into its 16 table bytes. */
function guidBytes(guid: string): Uint8Array {
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(guid)) {
    throw new CloisterError('INVALID_ARGUMENT', 'not a lower-case GUID');
  }
  return new Uint8Array(Buffer.from(guid.replace(/-/g, ''), 'hex'));
}

/**
 * Parse a certificate table. Bytes after the last certificate are allowed only when they are
 * zero (the driver hands back whole pages); entries must not overlap the entry list, run past
 * the end, repeat a GUID, or be empty.
 */
export function parseCertTable(bytes: Uint8Array, limits: CertTableLimits = {}): CertTableEntry[] {
  const lim = { ...DEFAULT_CERT_TABLE_LIMITS, ...limits };
  if (bytes.byteLength > lim.maxTableBytes) {
    throw new CloisterError('LIMIT_EXCEEDED', 'certificate table too large', {
      detail: { limit: 'maxTableBytes', max: lim.maxTableBytes, actual: bytes.byteLength },
    });
  }
  const b = new Uint8Array(bytes); // a copy (Buffer#slice would alias)
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const raw: { guid: string; offset: number; length: number }[] = [];
  let pos = 0;
  for (;;) {
    if (pos + CERT_TABLE_ENTRY_SIZE > b.byteLength) throw malformed('certificate table has no terminating entry');
    const guid = b.subarray(pos, pos + 16);
    const offset = dv.getUint32(pos + 16, true);
    const length = dv.getUint32(pos + 20, true);
    pos += CERT_TABLE_ENTRY_SIZE;
    if (offset === 0 && length === 0 && guid.every((x) => x === 0)) break;
    if (raw.length >= lim.maxEntries) {
      throw new CloisterError('LIMIT_EXCEEDED', 'too many certificate table entries', {
        detail: { limit: 'maxEntries', max: lim.maxEntries },
      });
    }
    raw.push({ guid: guidText(guid), offset, length });
  }
  const headerEnd = pos;
  const seen = new Set<string>();
  const ranges: [number, number][] = [];
  const out: CertTableEntry[] = [];
  for (const [i, e] of raw.entries()) {
    if (seen.has(e.guid)) throw malformed('duplicate GUID in certificate table', { entry: i });
    seen.add(e.guid);
    if (e.length === 0) throw malformed('empty certificate table entry', { entry: i });
    if (e.length > lim.maxCertBytes) {
      throw new CloisterError('LIMIT_EXCEEDED', 'certificate table entry too large', {
        detail: { limit: 'maxCertBytes', max: lim.maxCertBytes, entry: i },
      });
    }
    if (e.offset < headerEnd) throw malformed('certificate offset points into the entry list', { entry: i });
    if (e.offset + e.length > b.byteLength) throw malformed('certificate runs past the table', { entry: i });
    for (const [s, t] of ranges) {
      if (e.offset < t && s < e.offset + e.length) throw malformed('certificate table entries overlap', { entry: i });
    }
    ranges.push([e.offset, e.offset + e.length]);
    out.push({ guid: e.guid, data: b.slice(e.offset, e.offset + e.length) });
  }
  // Anything not covered by the entry list or a certificate must be zero padding.
  const covered = new Uint8Array(b.byteLength);
  covered.fill(1, 0, headerEnd);
  for (const [s, t] of ranges) covered.fill(1, s, t);
  for (let i = 0; i < b.byteLength; i++) {
    if (covered[i] === 0 && b[i] !== 0) throw malformed('non-zero bytes outside any certificate', { offset: i });
  }
  return out;
}

/** Build a certificate table (used by attesters that assemble one, and by tests). */
export function encodeCertTable(entries: readonly CertTableEntry[]): Uint8Array {
  const headerLen = (entries.length + 1) * CERT_TABLE_ENTRY_SIZE;
  let total = headerLen;
  for (const e of entries) total += e.data.byteLength;
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  let off = headerLen;
  entries.forEach((e, i) => {
    out.set(guidBytes(e.guid), i * CERT_TABLE_ENTRY_SIZE);
    dv.setUint32(i * CERT_TABLE_ENTRY_SIZE + 16, off, true);
    dv.setUint32(i * CERT_TABLE_ENTRY_SIZE + 20, e.data.byteLength, true);
    out.set(e.data, off);
    off += e.data.byteLength;
  });
  return out;
}
