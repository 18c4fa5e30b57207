/**
 * The evidence file (`cloister attest --out`, `cloister verify FILE`): one server's evidence
 * bundle as an auditor keeps it, so that it can be verified offline, later, by anyone.
 *
 * Format, version 1 (docs/PROTOCOL.md "Evidence file"): one deterministic CBOR map (RFC 8949
 * section 4.2.1: definite lengths, shortest heads, keys sorted bytewise), text keys only,
 * nothing after it:
 *
 *   {
 *     "format":       "cloister-evidence",      text, always this
 *     "version":      1,                        uint, this format's version
 *     "platform":     "nitro" | "sev-snp" | "tdx" | "simulated",
 *     "evidence":     bstr,   the platform evidence (COSE_Sign1 document, SNP report, TDX quote)
 *     "keyConfig":    bstr,   the exact key config bytes the evidence binds
 *     "certificates": bstr,   optional: SEV-SNP certificate table (auxblob) or a VCEK/VLEK DER
 *     "collateral":   bstr,   optional: TDX collateral JSON (UTF-8, QuoteCollateralV3 shape)
 *     "nonce":        bstr,   optional: the 1..64-byte nonce the evidence was requested with
 *   }
 *
 * Every field is either checked by verification (the evidence signature and chain, the key
 * config through the binding, the nonce through the binding, the certificates and collateral
 * through their vendor chains) or fixed (format, version, platform): the file carries nothing
 * unauthenticated that verification could ignore, so changing any byte makes it fail. Unknown
 * fields are refused; a later version adds fields under a new "version".
 *
 * Older `cloister attest --out` files (the wire message {t: "evidence", bundle}) are read too.
 */
import { CloisterError } from '../errors.js';
import { decodeCbor, DEFAULT_CBOR_DECODE_OPTIONS, encodeCbor } from '../core/cbor.js';
import type { CborDecodeOptions, CborMap, CborValue } from '../core/cbor.js';
import { MAX_NONCE_BYTES, decodeWireMessage } from '../protocol/wire.js';
import { PLATFORMS } from '../core/types.js';
import type { EvidenceBundle, Platform } from '../core/types.js';

const EVIDENCE_FILE_FORMAT = 'cloister-evidence';
const EVIDENCE_FILE_VERSION = 1;
/** Largest evidence file read or written (a Nitro document is < 16 KiB, TDX collateral < 64 KiB). */
export const MAX_EVIDENCE_FILE_BYTES = 1024 * 1024;

export interface EvidenceFile {
  /** 1 for this format; 0 for a legacy wire-message file. */
  readonly version: 0 | 1;
  readonly bundle: EvidenceBundle;
  /** The nonce the evidence was requested with, when one was. */
  readonly nonce?: Uint8Array;
}

/** The strict defaults (deterministic, no tags, floats or bigints), with this format's bounds. */
const DECODE_OPTIONS: CborDecodeOptions = Object.freeze({ ...DEFAULT_CBOR_DECODE_OPTIONS, maxDepth: 1, maxItems: 32, maxBytes: MAX_EVIDENCE_FILE_BYTES });

const FIELDS: Readonly<Record<string, 'text' | 'uint' | 'bytes'>> = {
  format: 'text',
  version: 'uint',
  platform: 'text',
  evidence: 'bytes',
  keyConfig: 'bytes',
  certificates: 'bytes',
  collateral: 'bytes',
  nonce: 'bytes',
};
const REQUIRED = ['format', 'version', 'platform', 'evidence', 'keyConfig'] as const;

function malformed(why: string, cause?: unknown): CloisterError {
  return new CloisterError('EVIDENCE_MALFORMED', `evidence file: ${why}`, cause === undefined ? {} : { cause });
}

/**
 * True when the bytes start like a CBOR map, i.e. an evidence file rather than raw evidence:
 * a raw Nitro document starts with 0x84 or 0xD2, an SEV-SNP report with its version (2, 3, ...)
 * and a TDX quote with its version (4, 5) as little-endian integers.
 */
export function looksLikeEvidenceFile(bytes: Uint8Array): boolean {
  const first = bytes[0];
  return first !== undefined && first >= 0xa0 && first <= 0xbf;
}

/** Encode a bundle (and the nonce it was requested with) as a version 1 evidence file. */
export function encodeEvidenceFile(bundle: EvidenceBundle, nonce?: Uint8Array): Uint8Array {
  if (!PLATFORMS.includes(bundle.platform)) throw new CloisterError('INVALID_ARGUMENT', 'evidence bundle names no known platform');
  if (nonce !== undefined && (nonce.byteLength < 1 || nonce.byteLength > MAX_NONCE_BYTES)) {
    throw new CloisterError('INVALID_ARGUMENT', `nonce must be 1..${MAX_NONCE_BYTES} bytes`);
  }
  const map = new Map<string, string | number | Uint8Array>([
    ['format', EVIDENCE_FILE_FORMAT],
    ['version', EVIDENCE_FILE_VERSION],
    ['platform', bundle.platform],
    ['evidence', bundle.evidence],
    ['keyConfig', bundle.keyConfig],
  ]);
  if (bundle.certificates !== undefined) map.set('certificates', bundle.certificates);
  if (bundle.collateral !== undefined) map.set('collateral', bundle.collateral);
  if (nonce !== undefined) map.set('nonce', nonce);
  const out = encodeCbor(map);
  if (out.byteLength > MAX_EVIDENCE_FILE_BYTES) {
    throw new CloisterError('LIMIT_EXCEEDED', `evidence file of ${out.byteLength} bytes exceeds MAX_EVIDENCE_FILE_BYTES ${MAX_EVIDENCE_FILE_BYTES}`);
  }
  return out;
}

function field(map: CborMap, key: string): CborValue | undefined {
  return map.get(key);
}

/** Decode an evidence file strictly. Throws EVIDENCE_MALFORMED (LIMIT_EXCEEDED when too large). */
export function decodeEvidenceFile(bytes: Uint8Array): EvidenceFile {
  if (bytes.byteLength > MAX_EVIDENCE_FILE_BYTES) {
    throw new CloisterError('LIMIT_EXCEEDED', `evidence file of ${bytes.byteLength} bytes exceeds MAX_EVIDENCE_FILE_BYTES ${MAX_EVIDENCE_FILE_BYTES}`);
  }
  if (!looksLikeEvidenceFile(bytes)) throw malformed('does not start with a CBOR map');
  let top: CborValue;
  try {
    top = decodeCbor(bytes, DECODE_OPTIONS);
  } catch (cause) {
    // A legacy file: the wire message {bundle, t: "evidence"} (two nested maps, so depth 2).
    try {
      const msg = decodeWireMessage(bytes);
      if (msg.t === 'evidence') return { version: 0, bundle: msg.bundle };
    } catch {
      // Not that either: report the evidence-file error.
    }
    throw malformed(cause instanceof Error ? cause.message : 'not CBOR', cause);
  }
  if (!(top instanceof Map)) throw malformed('not a map');
  for (const [k, v] of top) {
    if (typeof k !== 'string') throw malformed('map keys must be text');
    const kind = Object.prototype.hasOwnProperty.call(FIELDS, k) ? FIELDS[k] : undefined;
    if (kind === undefined) throw malformed(`unknown field '${k.length <= 16 ? k : `${k.slice(0, 16)}...`}'`);
    const ok = kind === 'text' ? typeof v === 'string' : kind === 'uint' ? typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 : v instanceof Uint8Array;
    if (!ok) throw malformed(`field '${k}' has the wrong type (expected ${kind === 'bytes' ? 'a byte string' : kind === 'uint' ? 'an unsigned integer' : 'text'})`);
  }
  for (const k of REQUIRED) if (!top.has(k)) throw malformed(`missing field '${k}'`);
  if (field(top, 'format') !== EVIDENCE_FILE_FORMAT) throw malformed(`format is not '${EVIDENCE_FILE_FORMAT}'`);
  const version = field(top, 'version');
  if (version !== EVIDENCE_FILE_VERSION) throw malformed(`version ${String(version)} is not supported (this build reads version ${EVIDENCE_FILE_VERSION})`);
  const platform = field(top, 'platform');
  if (typeof platform !== 'string' || !(PLATFORMS as readonly string[]).includes(platform)) {
    throw malformed(`unknown platform (expected one of ${PLATFORMS.join(', ')})`);
  }
  const bytesOf = (k: string): Uint8Array | undefined => {
    const v = field(top as CborMap, k);
    return v instanceof Uint8Array ? v : undefined;
  };
  const evidence = bytesOf('evidence');
  const keyConfig = bytesOf('keyConfig');
  if (evidence === undefined || evidence.byteLength === 0) throw malformed('evidence is empty');
  if (keyConfig === undefined || keyConfig.byteLength === 0) throw malformed('keyConfig is empty');
  const certificates = bytesOf('certificates');
  const collateral = bytesOf('collateral');
  const nonce = bytesOf('nonce');
  if (nonce !== undefined && (nonce.byteLength < 1 || nonce.byteLength > MAX_NONCE_BYTES)) {
    throw malformed(`nonce must be 1..${MAX_NONCE_BYTES} bytes`);
  }
  if (certificates !== undefined && platform !== 'sev-snp') throw malformed('certificates are only carried for sev-snp evidence');
  if (collateral !== undefined && platform !== 'tdx') throw malformed('collateral is only carried for tdx evidence');
  const bundle: EvidenceBundle = {
    platform: platform as Platform,
    evidence,
    keyConfig,
    ...(certificates === undefined ? {} : { certificates }),
    ...(collateral === undefined ? {} : { collateral }),
  };
  return nonce === undefined ? { version: 1, bundle } : { version: 1, bundle, nonce };
}
