/**
 * X.509 certificate parsing for attestation chains (RFC 5280).
 *
 * Every certificate is parsed twice on purpose: node:crypto's X509Certificate (OpenSSL) for
 * signature verification and issuer matching, and @peculiar/asn1-x509 for the fields
 * OpenSSL does not expose in Node 20 (exact validity instants, basicConstraints
 * pathLenConstraint, keyUsage bits, critical extensions). Both read the same DER, whose
 * outer length is checked first so that trailing bytes never go unnoticed.
 */
import { X509Certificate, createHash } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import {
  BasicConstraints,
  Certificate,
  KeyUsage,
  KeyUsageFlags,
  id_ce_basicConstraints,
  id_ce_keyUsage,
} from '@peculiar/asn1-x509';
import { CloisterError } from '../../errors.js';

/** A certificate as a caller hands it over: DER bytes, or PEM text (one CERTIFICATE block). */
export type CertificateInput = Uint8Array | string;

/** Default upper bound on one encoded certificate. AWS caps Nitro certificates at 1024 bytes; AMD's are ~1.6 KiB. */
export const DEFAULT_MAX_CERTIFICATE_BYTES = 8192;

export interface ParsedCertificate {
  /** A private copy of the exact DER bytes. */
  readonly der: Uint8Array;
  /** SHA-256 of the DER: the identity used to pin roots. */
  readonly sha256: Uint8Array;
  readonly x509: X509Certificate;
  readonly asn: Certificate;
  readonly subject: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** undefined when the extension is absent. */
  readonly basicConstraints: { readonly ca: boolean; readonly pathLen?: number } | undefined;
  /** KeyUsage bit flags (KeyUsageFlags), undefined when the extension is absent. */
  readonly keyUsage: number | undefined;
  /** OIDs of critical extensions, for the unknown-critical-extension check (RFC 5280 section 4.2). */
  readonly criticalExtensions: readonly string[];
}

export { KeyUsageFlags };

/**
 * Total length of the outermost DER TLV (a SEQUENCE for a certificate), or -1 when the
 * header is not a definite-length SEQUENCE. DER forbids indefinite lengths (X.690 10.1).
 */
function derSequenceLength(b: Uint8Array): number {
  if (b.byteLength < 2 || b[0] !== 0x30) return -1;
  const first = b[1] ?? 0;
  if (first < 0x80) return 2 + first;
  const n = first & 0x7f;
  // 0x80 is indefinite length; more than 4 length bytes is far beyond any certificate.
  if (n === 0 || n > 4 || b.byteLength < 2 + n) return -1;
  let len = 0;
  for (let i = 0; i < n; i++) len = len * 256 + (b[2 + i] ?? 0);
  // DER: shortest length form (X.690 10.1).
  if (len < 0x80 || (n > 1 && b[2] === 0)) return -1;
  return 2 + n + len;
}

const PEM_RE = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----/g;

/** All CERTIFICATE blocks of a PEM text, in order. Throws MALFORMED when there is none. */
export function pemToDerList(pem: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const m of pem.matchAll(PEM_RE)) {
    const body = (m[1] ?? '').replace(/\s+/g, '');
    const der = Buffer.from(body, 'base64');
    // Reject base64 that does not round-trip (Buffer silently skips invalid characters).
    if (der.toString('base64') !== body) {
      throw new CloisterError('MALFORMED', 'PEM certificate block is not canonical base64');
    }
    out.push(new Uint8Array(der));
  }
  if (out.length === 0) throw new CloisterError('MALFORMED', 'no PEM CERTIFICATE block found');
  return out;
}

/**
 * The certificates of a file given on the command line or in a config (`--vcek`, `--root`,
 * ...): PEM text with one or more CERTIFICATE blocks, or one DER certificate (as AMD KDS
 * serves a VCEK; snpguest and many guides save it as PEM). Each must parse as X.509; every
 * error names the file. Throws CloisterError(MALFORMED).
 */
export function certificatesFromFile(bytes: Uint8Array, path: string, what = 'certificate file'): Uint8Array[] {
  const fail = (why: string, cause?: unknown): CloisterError =>
    new CloisterError('MALFORMED', `${what} ${path}: ${why}`, cause === undefined ? { detail: { path } } : { cause, detail: { path } });
  let ders: Uint8Array[];
  if (bytes[0] === 0x30) {
    if (derSequenceLength(bytes) !== bytes.byteLength) throw fail('is neither PEM nor one DER X.509 certificate (DER length does not match the file size)');
    ders = [Uint8Array.from(bytes)];
  } else {
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch (cause) {
      throw fail('is neither PEM (not text) nor DER X.509 (does not start with a SEQUENCE)', cause);
    }
    try {
      ders = pemToDerList(text);
    } catch (cause) {
      throw fail(`is neither DER X.509 nor PEM: ${cause instanceof Error ? cause.message : 'no certificate'}`, cause);
    }
  }
  ders.forEach((der, i) => {
    try {
      parseCertificate(der, { maxBytes: Math.max(DEFAULT_MAX_CERTIFICATE_BYTES, der.byteLength) });
    } catch (cause) {
      throw fail(`certificate ${i + 1} is not valid X.509: ${cause instanceof Error ? cause.message : 'unknown'}`, cause);
    }
  });
  return ders;
}

/** Exactly one certificate from a file (PEM or DER); see certificatesFromFile. */
export function certificateFromFile(bytes: Uint8Array, path: string, what = 'certificate file'): Uint8Array {
  const list = certificatesFromFile(bytes, path, what);
  const first = list[0];
  if (list.length !== 1 || first === undefined) {
    throw new CloisterError('MALFORMED', `${what} ${path}: expected one certificate, found ${list.length}`, { detail: { path } });
  }
  return first;
}

function toDer(input: CertificateInput): Uint8Array {
  if (typeof input === 'string') {
    const list = pemToDerList(input);
    if (list.length !== 1) throw new CloisterError('MALFORMED', `expected one PEM certificate, found ${list.length}`);
    return list[0] ?? new Uint8Array(0);
  }
  if (!(input instanceof Uint8Array)) throw new CloisterError('INVALID_ARGUMENT', 'certificate must be DER bytes or PEM text');
  return Uint8Array.from(input);
}

/**
 * Parse one certificate. Throws CloisterError(MALFORMED) for anything that is not exactly
 * one DER certificate within `maxBytes`.
 */
export function parseCertificate(
  input: CertificateInput,
  options: { readonly maxBytes?: number } = {},
): ParsedCertificate {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_CERTIFICATE_BYTES;
  const der = toDer(input);
  if (der.byteLength === 0 || der.byteLength > maxBytes) {
    throw new CloisterError('MALFORMED', `certificate size ${der.byteLength} outside 1..${maxBytes}`, {
      detail: { size: der.byteLength, maxBytes },
    });
  }
  if (derSequenceLength(der) !== der.byteLength) {
    throw new CloisterError('MALFORMED', 'certificate DER length does not match its encoding (trailing or missing bytes)');
  }
  let x509: X509Certificate;
  let asn: Certificate;
  try {
    x509 = new X509Certificate(der);
    asn = AsnConvert.parse(der, Certificate);
  } catch (cause) {
    throw new CloisterError('MALFORMED', 'certificate is not valid DER X.509', { cause });
  }
  const tbs = asn.tbsCertificate;
  let basicConstraints: ParsedCertificate['basicConstraints'];
  let keyUsage: number | undefined;
  const criticalExtensions: string[] = [];
  const seen = new Set<string>();
  try {
    for (const ext of tbs.extensions ?? []) {
      // RFC 5280 section 4.2: a certificate MUST NOT include more than one instance of an extension.
      if (seen.has(ext.extnID)) throw new CloisterError('MALFORMED', `duplicate extension ${ext.extnID}`);
      seen.add(ext.extnID);
      if (ext.critical) criticalExtensions.push(ext.extnID);
      if (ext.extnID === id_ce_basicConstraints) {
        const bc = AsnConvert.parse(ext.extnValue, BasicConstraints);
        basicConstraints =
          bc.pathLenConstraint === undefined ? { ca: bc.cA } : { ca: bc.cA, pathLen: bc.pathLenConstraint };
      } else if (ext.extnID === id_ce_keyUsage) {
        keyUsage = AsnConvert.parse(ext.extnValue, KeyUsage).toNumber();
      }
    }
  } catch (cause) {
    if (cause instanceof CloisterError) throw cause;
    throw new CloisterError('MALFORMED', 'certificate extension is not valid DER', { cause });
  }
  return {
    der,
    sha256: new Uint8Array(createHash('sha256').update(der).digest()),
    x509,
    asn,
    subject: x509.subject.replace(/\n/g, ', '),
    notBefore: tbs.validity.notBefore.getTime(),
    notAfter: tbs.validity.notAfter.getTime(),
    basicConstraints,
    keyUsage,
    criticalExtensions,
  };
}
