/**
 * Parse an EIF and compute its PCRs the way nitro-cli does (aws-nitro-enclaves-image-format,
 * src/utils/eif_reader.rs + get_pcrs in src/utils/mod.rs), streaming so multi-GiB images are
 * never held in memory:
 *
 *   PCR0 = SHA384(0^48 || SHA384(kernel || cmdline || every ramdisk))      image
 *   PCR1 = SHA384(0^48 || SHA384(kernel || cmdline || first ramdisk))      bootstrap
 *   PCR2 = SHA384(0^48 || SHA384(remaining ramdisks))                     application
 *   PCR8 = SHA384(0^48 || SHA384(DER of the signing certificate))         signed images only
 *
 * (the `tpm_extend_finalize_reset` of an uncached EifHasher). Section data is hashed in file
 * order. The parser is strict: magic, supported version, known flags, must-be-zero fields,
 * section table consistent with the sections actually present, no gaps, no trailing bytes,
 * CRC over the whole file, bounded section sizes.
 */
import { createHash, X509Certificate } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { CloisterError } from '../../errors.js';
import { decodeCbor } from '../../core/cbor.js';
import type { CborValue } from '../../core/cbor.js';
import { Crc32 } from './crc32.js';
import {
  EIF_HDR_ARCH_ARM64,
  EIF_HEADER_SIZE,
  EIF_MAGIC,
  EIF_MAX_SECTIONS,
  EIF_MAX_VERSION,
  EIF_MIN_VERSION,
  EIF_SECTION_HEADER_SIZE,
  EIF_SECTION_TYPES,
} from './format.js';
import type { EifHeader, EifSectionInfo, EifSectionKind } from './format.js';

interface EifMeasureOptions {
  /** Largest file accepted; default 32 GiB. */
  readonly maxFileBytes?: number;
  /** Largest signature section; default 64 KiB. */
  readonly maxSignatureBytes?: number;
  /** Largest metadata section; default 1 MiB. */
  readonly maxMetadataBytes?: number;
  /** Largest cmdline section; default 64 KiB. */
  readonly maxCmdlineBytes?: number;
  /** Read size while hashing; default 1 MiB. */
  readonly chunkBytes?: number;
}

export interface EifMeasurements {
  readonly hashAlgorithm: 'SHA384';
  /** Lower-case hex, 96 characters each. */
  readonly pcr0: string;
  readonly pcr1: string;
  readonly pcr2: string;
  /** Present only for signed images. */
  readonly pcr8?: string;
}

interface EifReport {
  readonly header: EifHeader;
  readonly arch: 'x86_64' | 'aarch64';
  readonly sections: readonly EifSectionInfo[];
  readonly measurements: EifMeasurements;
  /** The metadata section (JSON: ImageName, BuildMetadata, DockerInfo, ...), when present and valid JSON. */
  readonly metadata?: unknown;
  /** SHA-256 of the whole file, hex. */
  readonly fileSha256: string;
}

/** Random access to the image bytes. */
interface ByteSource {
  readonly size: number;
  read(offset: number, length: number): Uint8Array;
}

function bytesSource(bytes: Uint8Array): ByteSource {
  return {
    size: bytes.byteLength,
    read: (offset, length) => {
      if (offset < 0 || length < 0 || offset + length > bytes.byteLength) throw bad('read past the end of the image', offset);
      return bytes.subarray(offset, offset + length);
    },
  };
}

function bad(message: string, offset?: number): CloisterError {
  return new CloisterError('MALFORMED', `EIF: ${message}`, offset === undefined ? {} : { detail: { offset } });
}

const ZERO48 = new Uint8Array(48);

function tpmExtend(inner: Hash): string {
  // EifHasher::tpm_extend_finalize_reset: SHA384(initial zero digest || SHA384(data)).
  return createHash('sha384').update(ZERO48).update(inner.digest()).digest('hex');
}

function toSafe(v: bigint, what: string, offset: number): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`${what} too large`, offset);
  return Number(v);
}

function parseEifHeader(bytes: Uint8Array): EifHeader {
  if (bytes.byteLength !== EIF_HEADER_SIZE) throw bad(`header must be ${EIF_HEADER_SIZE} bytes`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < 4; i++) if (bytes[i] !== EIF_MAGIC[i]) throw bad('bad magic (not an EIF file)', 0);
  const sectionOffsets: bigint[] = [];
  const sectionSizes: bigint[] = [];
  for (let i = 0; i < EIF_MAX_SECTIONS; i++) {
    sectionOffsets.push(v.getBigUint64(28 + 8 * i));
    sectionSizes.push(v.getBigUint64(28 + 8 * EIF_MAX_SECTIONS + 8 * i));
  }
  return {
    version: v.getUint16(4),
    flags: v.getUint16(6),
    defaultMem: v.getBigUint64(8),
    defaultCpus: v.getBigUint64(16),
    reserved: v.getUint16(24),
    numSections: v.getUint16(26),
    sectionOffsets,
    sectionSizes,
    unused: v.getUint32(540),
    crc32: v.getUint32(544),
  };
}

function parseSignatureCertificate(data: Uint8Array): Uint8Array {
  // The signature section is serde_cbor of Vec<PcrSignature { signing_certificate: Vec<u8>,
  // signature: Vec<u8> }>: Vec<u8> without serde_bytes encodes as an array of small uints,
  // so accept that and a byte string.
  let value: CborValue;
  try {
    value = decodeCbor(data, { maxDepth: 4, maxItems: data.byteLength + 16, requireCanonical: false });
  } catch (cause) {
    throw new CloisterError('MALFORMED', 'EIF: undecodable signature section', { cause });
  }
  if (!Array.isArray(value) || value.length === 0) throw bad('signature section must be a non-empty array');
  const first = value[0];
  if (!(first instanceof Map)) throw bad('PcrSignature must be a map');
  const raw = first.get('signing_certificate');
  let pem: Uint8Array;
  if (raw instanceof Uint8Array) pem = raw;
  else if (Array.isArray(raw) && raw.every((b) => typeof b === 'number' && b >= 0 && b <= 255)) pem = Uint8Array.from(raw as number[]);
  else throw bad('signing_certificate must be bytes');
  try {
    return new Uint8Array(new X509Certificate(pem).raw);
  } catch (cause) {
    throw new CloisterError('MALFORMED', 'EIF: signing_certificate is not a PEM certificate', { cause });
  }
}

/** Parses and measures an image from any byte source. */
function measureEifSource(src: ByteSource, options: EifMeasureOptions = {}): EifReport {
  const maxFile = options.maxFileBytes ?? 32 * 2 ** 30;
  const maxSig = options.maxSignatureBytes ?? 64 * 1024;
  const maxMeta = options.maxMetadataBytes ?? 1024 * 1024;
  const maxCmdline = options.maxCmdlineBytes ?? 64 * 1024;
  const chunk = options.chunkBytes ?? 1024 * 1024;
  if (src.size > maxFile) {
    throw new CloisterError('LIMIT_EXCEEDED', `EIF larger than maxFileBytes (${maxFile})`, { detail: { size: src.size } });
  }
  if (src.size < EIF_HEADER_SIZE) throw bad('file shorter than the EIF header');
  const headerBytes = src.read(0, EIF_HEADER_SIZE).slice();
  const header = parseEifHeader(headerBytes);
  if (header.version < EIF_MIN_VERSION || header.version > EIF_MAX_VERSION) {
    throw bad(`unsupported EIF version ${header.version} (supported ${EIF_MIN_VERSION}..${EIF_MAX_VERSION})`, 4);
  }
  if ((header.flags & ~EIF_HDR_ARCH_ARM64) !== 0) throw bad('unknown header flags', 6);
  if (header.reserved !== 0 || header.unused !== 0) throw bad('must-be-zero header field is set');
  if (header.numSections === 0 || header.numSections > EIF_MAX_SECTIONS) throw bad('num_sections out of range', 26);
  for (let i = header.numSections; i < EIF_MAX_SECTIONS; i++) {
    if (header.sectionOffsets[i] !== 0n || header.sectionSizes[i] !== 0n) throw bad(`section table entry ${i} beyond num_sections is set`);
  }

  const crc = new Crc32().update(headerBytes.subarray(0, EIF_HEADER_SIZE - 4));
  const fileHash = createHash('sha256').update(headerBytes);
  const image = createHash('sha384');
  const bootstrap = createHash('sha384');
  const app = createHash('sha384');
  const sections: EifSectionInfo[] = [];
  let ramdisks = 0;
  let pcr8: string | undefined;
  let metadata: unknown;
  let pos = EIF_HEADER_SIZE;

  for (let i = 0; i < header.numSections; i++) {
    if (BigInt(pos) !== header.sectionOffsets[i]) throw bad(`section ${i} offset does not match the section table`, pos);
    if (src.size - pos < EIF_SECTION_HEADER_SIZE) throw bad(`section ${i} header truncated`, pos);
    const sh = src.read(pos, EIF_SECTION_HEADER_SIZE).slice();
    const sv = new DataView(sh.buffer, sh.byteOffset, sh.byteLength);
    const type = sv.getUint16(0);
    const flags = sv.getUint16(2);
    const size64 = sv.getBigUint64(4);
    const kind: EifSectionKind | undefined = (EIF_SECTION_TYPES as Record<number, EifSectionKind | undefined>)[type];
    if (kind === undefined) throw bad(`section ${i} has invalid type ${type}`, pos);
    if (flags !== 0) throw bad(`section ${i} has non-zero flags`, pos + 2);
    if (size64 !== header.sectionSizes[i]) throw bad(`section ${i} size does not match the section table`, pos + 4);
    const size = toSafe(size64, 'section size', pos + 4);
    const dataAt = pos + EIF_SECTION_HEADER_SIZE;
    if (size > src.size - dataAt) throw bad(`section ${i} runs past the end of the file`, pos);
    crc.update(sh);
    fileHash.update(sh);

    const seen = (k: EifSectionKind): number => sections.filter((s) => s.kind === k).length;
    switch (kind) {
      case 'kernel':
        if (i !== 0) throw bad('the kernel must be the first section', pos);
        break;
      case 'cmdline':
        if (seen('kernel') !== 1 || seen('cmdline') !== 0 || ramdisks !== 0) throw bad('cmdline must follow the kernel, once, before any ramdisk', pos);
        if (size > maxCmdline) throw new CloisterError('LIMIT_EXCEEDED', 'EIF cmdline larger than maxCmdlineBytes');
        break;
      case 'ramdisk':
        if (seen('cmdline') !== 1) throw bad('ramdisk before the cmdline', pos);
        if (seen('signature') !== 0) throw bad('ramdisk after the signature', pos);
        break;
      case 'signature':
        if (seen('signature') !== 0) throw bad('more than one signature section', pos);
        if (size > maxSig) throw new CloisterError('LIMIT_EXCEEDED', 'EIF signature section larger than maxSignatureBytes');
        break;
      case 'metadata':
        if (seen('metadata') !== 0) throw bad('more than one metadata section', pos);
        if (size > maxMeta) throw new CloisterError('LIMIT_EXCEEDED', 'EIF metadata section larger than maxMetadataBytes');
        break;
    }

    const small = kind === 'signature' || kind === 'metadata' ? new Uint8Array(size) : undefined;
    for (let off = 0; off < size; off += chunk) {
      const n = Math.min(chunk, size - off);
      const data = src.read(dataAt + off, n);
      crc.update(data);
      fileHash.update(data);
      if (small !== undefined) small.set(data, off);
      if (kind === 'kernel' || kind === 'cmdline') {
        image.update(data);
        bootstrap.update(data);
      } else if (kind === 'ramdisk') {
        image.update(data);
        (ramdisks === 0 ? bootstrap : app).update(data);
      }
    }
    if (kind === 'ramdisk') ramdisks += 1;
    if (kind === 'signature' && small !== undefined) {
      pcr8 = tpmExtend(createHash('sha384').update(parseSignatureCertificate(small)));
    }
    if (kind === 'metadata' && small !== undefined) {
      try {
        metadata = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(small));
      } catch (cause) {
        throw new CloisterError('MALFORMED', 'EIF: metadata section is not JSON', { cause });
      }
    }
    sections.push({ kind, offset: pos, size });
    pos = dataAt + size;
  }
  if (pos !== src.size) throw bad('trailing bytes after the last section', pos);
  if (ramdisks === 0) throw bad('image has no ramdisk');
  const computed = crc.digest();
  if (computed !== header.crc32) {
    throw bad('CRC32 mismatch (corrupted or modified image)', 544);
  }
  const measurements: EifMeasurements = {
    hashAlgorithm: 'SHA384',
    pcr0: tpmExtend(image),
    pcr1: tpmExtend(bootstrap),
    pcr2: tpmExtend(app),
    ...(pcr8 === undefined ? {} : { pcr8 }),
  };
  return {
    header,
    arch: (header.flags & EIF_HDR_ARCH_ARM64) !== 0 ? 'aarch64' : 'x86_64',
    sections,
    measurements,
    ...(metadata === undefined ? {} : { metadata }),
    fileSha256: fileHash.digest('hex'),
  };
}

/** Parses and measures an in-memory image. */
export function measureEif(bytes: Uint8Array, options: EifMeasureOptions = {}): EifReport {
  return measureEifSource(bytesSource(bytes), options);
}

/** Parses and measures an image file, reading it in chunks. */
export function measureEifFile(path: string, options: EifMeasureOptions = {}): EifReport {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (cause) {
    throw new CloisterError('NOT_FOUND', `cannot open EIF file ${path}`, { cause });
  }
  try {
    const size = fstatSync(fd).size;
    const src: ByteSource = {
      size,
      read(offset, length) {
        const buf = new Uint8Array(length);
        let got = 0;
        while (got < length) {
          const n = readSync(fd, buf, got, length - got, offset + got);
          if (n === 0) throw bad('file shrank while reading', offset + got);
          got += n;
        }
        return buf;
      },
    };
    return measureEifSource(src, options);
  } finally {
    closeSync(fd);
  }
}
