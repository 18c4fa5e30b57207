/**
 * Certificate path validation for attestation chains, a deliberately small subset of
 * RFC 5280 section 6: the path is given in order (no path building), anchored at a pinned
 * root compared by the SHA-256 of its DER, and every certificate is checked:
 *
 * - signature by its issuer's key, with an allow-listed algorithm, and the outer
 *   signatureAlgorithm equal to the TBS signature field (RFC 5280 4.1.1.2);
 * - issuer name chaining (OpenSSL X509_check_issued: names and key identifiers);
 * - every issuer is a CA: basicConstraints cA (4.2.1.9), keyUsage keyCertSign (4.2.1.3),
 *   and pathLenConstraint counts the CA certificates below it;
 * - no unknown critical extension (4.2);
 * - validity at the verification instant (4.1.2.5), for every certificate, root included.
 *
 * Revocation (CRLs) is out of scope: attestation roots publish CRLs, but the verifier must
 * work offline; short-lived leaves (Nitro: 3 hours) bound the exposure.
 */
import type { KeyObject } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { CloisterError } from '../../errors.js';
import type { ErrorCode } from '../../errors.js';
import { timingSafeEqualBytes } from '../../crypto/ct.js';
import { DEFAULT_MAX_CERTIFICATE_BYTES, KeyUsageFlags, parseCertificate } from './certificate.js';
import type { CertificateInput, ParsedCertificate } from './certificate.js';
import { toHex } from '../../core/hex.js';

/** Signature algorithms accepted anywhere in a chain. SHA-1 and MD5 are absent on purpose. */
const ALLOWED_SIGNATURE_ALGORITHMS: ReadonlyMap<string, string> = new Map([
  ['1.2.840.10045.4.3.2', 'ecdsa-with-SHA256'], // Intel SGX PCK chain
  ['1.2.840.10045.4.3.3', 'ecdsa-with-SHA384'], // AWS Nitro
  ['1.2.840.10045.4.3.4', 'ecdsa-with-SHA512'],
  ['1.2.840.113549.1.1.10', 'RSASSA-PSS'], // AMD ARK/ASK/VCEK (SHA-384, MGF1-SHA-384, salt 48)
  ['1.2.840.113549.1.1.11', 'sha256WithRSAEncryption'],
  ['1.2.840.113549.1.1.12', 'sha384WithRSAEncryption'],
  ['1.2.840.113549.1.1.13', 'sha512WithRSAEncryption'],
]);

/** Extensions this validator understands well enough to accept when marked critical. */
const UNDERSTOOD_CRITICAL_EXTENSIONS: ReadonlySet<string> = new Set([
  '2.5.29.19', // basicConstraints
  '2.5.29.15', // keyUsage
  '2.5.29.37', // extKeyUsage (not enforced: attestation leaves sign evidence, not TLS)
  '2.5.29.14', // subjectKeyIdentifier
  '2.5.29.35', // authorityKeyIdentifier
  '2.5.29.17', // subjectAltName
  '2.5.29.31', // cRLDistributionPoints
]);

const DEFAULT_MAX_CHAIN_LENGTH = 8;
const MIN_RSA_BITS = 2048;
const ALLOWED_CURVES: ReadonlySet<string> = new Set(['prime256v1', 'secp384r1', 'secp521r1']);

interface VerifyChainOptions {
  /** The end-entity certificate whose key signs the evidence. */
  readonly leaf: CertificateInput;
  /** CA certificates between the root and the leaf, ordered root side first (the one the root issued comes first). */
  readonly intermediates: readonly CertificateInput[];
  /**
   * A root that arrived with the evidence (e.g. Nitro cabundle[0]). It must be byte-identical
   * (SHA-256 of the DER) to one of `trustedRoots`. When absent, the trusted root that issued
   * the top certificate is used.
   */
  readonly presentedRoot?: CertificateInput;
  /** Pinned roots. Required and non-empty: nothing is trusted by default here. */
  readonly trustedRoots: readonly CertificateInput[];
  /** Verification instant for every validity period. */
  readonly at: Date;
  /** Longest accepted path, root and leaf included. Default 8. */
  readonly maxChainLength?: number;
  /** Largest accepted DER certificate. Default 8192. */
  readonly maxCertificateBytes?: number;
}

/** The outcome for one certificate of the path, root first. */
interface ChainCertificateReport {
  readonly index: number;
  readonly role: 'root' | 'intermediate' | 'leaf';
  readonly subject: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly sha256Hex: string;
}

export type ChainResult =
  | {
      readonly ok: true;
      /** Root first, leaf last. */
      readonly path: readonly ParsedCertificate[];
      readonly certificates: readonly ChainCertificateReport[];
      readonly leafPublicKey: KeyObject;
    }
  | {
      readonly ok: false;
      readonly code: Extract<ErrorCode, 'CERT_CHAIN_INVALID' | 'CERT_EXPIRED' | 'ROOT_UNTRUSTED'>;
      readonly message: string;
      /** Index in the root-first path of the certificate that failed, when one did. */
      readonly index?: number;
    };

type Failure = Extract<ChainResult, { ok: false }>;

function fail(code: Failure['code'], message: string, index?: number): Failure {
  return index === undefined ? { ok: false, code, message } : { ok: false, code, message, index };
}

/** A root as error messages name it: SHA-256 of its DER (the pin) and its subject. */
function describeRoot(c: ParsedCertificate): string {
  return `sha256 ${Buffer.from(c.sha256).toString('hex')} (${c.subject})`;
}

function sameAlgorithm(cert: ParsedCertificate): boolean {
  const outer = new Uint8Array(AsnConvert.serialize(cert.asn.signatureAlgorithm));
  const inner = new Uint8Array(AsnConvert.serialize(cert.asn.tbsCertificate.signature));
  return timingSafeEqualBytes(outer, inner);
}

function keyAcceptable(key: KeyObject): boolean {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec') return ALLOWED_CURVES.has(details.namedCurve ?? '');
  if (key.asymmetricKeyType === 'rsa' || key.asymmetricKeyType === 'rsa-pss') {
    return (details.modulusLength ?? 0) >= MIN_RSA_BITS;
  }
  return false;
}

/** Signature, algorithm and name chaining of `cert` under `issuer`. Null when all hold. */
function checkSignedBy(cert: ParsedCertificate, issuer: ParsedCertificate): string | null {
  const alg = cert.asn.signatureAlgorithm.algorithm;
  if (!ALLOWED_SIGNATURE_ALGORITHMS.has(alg)) return `signature algorithm ${alg} is not allowed`;
  if (!sameAlgorithm(cert)) return 'signatureAlgorithm differs from the TBS signature field';
  if (!keyAcceptable(issuer.x509.publicKey)) return 'issuer key type or size is not allowed';
  if (!cert.x509.checkIssued(issuer.x509)) return 'issuer name or key identifier does not chain';
  let ok = false;
  try {
    ok = cert.x509.verify(issuer.x509.publicKey);
  } catch {
    ok = false;
  }
  return ok ? null : 'signature does not verify with the issuer key';
}

/** CA requirements for a certificate that issues `caBelow` further CA certificates. */
function checkCa(cert: ParsedCertificate, caBelow: number): string | null {
  const bc = cert.basicConstraints;
  if (bc === undefined || !bc.ca) return 'issuer is not a CA (basicConstraints cA missing)';
  if (cert.keyUsage === undefined || (cert.keyUsage & KeyUsageFlags.keyCertSign) === 0) {
    return 'issuer keyUsage lacks keyCertSign';
  }
  if (bc.pathLen !== undefined && caBelow > bc.pathLen) {
    return `pathLenConstraint ${bc.pathLen} exceeded (${caBelow} CA certificates below)`;
  }
  return null;
}

function checkCriticalExtensions(cert: ParsedCertificate): string | null {
  for (const oid of cert.criticalExtensions) {
    if (!UNDERSTOOD_CRITICAL_EXTENSIONS.has(oid)) return `unknown critical extension ${oid}`;
  }
  return null;
}

/**
 * Verify an ordered certificate path to a pinned root. Never throws for a bad chain: the
 * failure comes back as `{ ok: false, code }` with the failing certificate's index. Throws
 * CloisterError(INVALID_ARGUMENT) only for caller mistakes (no trusted root, bad `at`).
 */
export function verifyCertificateChain(options: VerifyChainOptions): ChainResult {
  const maxLen = options.maxChainLength ?? DEFAULT_MAX_CHAIN_LENGTH;
  const maxBytes = options.maxCertificateBytes ?? DEFAULT_MAX_CERTIFICATE_BYTES;
  const at = options.at.getTime();
  if (!Number.isFinite(at)) throw new CloisterError('INVALID_ARGUMENT', 'verification time is not a valid date');
  if (options.trustedRoots.length === 0) throw new CloisterError('INVALID_ARGUMENT', 'no trusted root given');

  // Root (presented or pinned) + intermediates + leaf.
  const length = options.intermediates.length + 2;
  if (length > maxLen) {
    return fail('CERT_CHAIN_INVALID', `chain of ${length} certificates exceeds the limit of ${maxLen}`);
  }

  let trusted: ParsedCertificate[];
  try {
    // Trusted roots come from the caller, not the evidence: the evidence size limit does not apply.
    trusted = options.trustedRoots.map((r) => parseCertificate(r, { maxBytes: Math.max(maxBytes, DEFAULT_MAX_CERTIFICATE_BYTES) }));
  } catch (cause) {
    throw new CloisterError('INVALID_ARGUMENT', 'a trusted root certificate does not parse', { cause });
  }

  let leaf: ParsedCertificate;
  const intermediates: ParsedCertificate[] = [];
  let presentedRoot: ParsedCertificate | undefined;
  try {
    if (options.presentedRoot !== undefined) presentedRoot = parseCertificate(options.presentedRoot, { maxBytes });
    for (const c of options.intermediates) intermediates.push(parseCertificate(c, { maxBytes }));
    leaf = parseCertificate(options.leaf, { maxBytes });
  } catch (cause) {
    return fail('CERT_CHAIN_INVALID', `a certificate does not parse: ${cause instanceof Error ? cause.message : 'unknown'}`);
  }

  // Anchor: the presented root must be one of the pinned roots, byte for byte. Every pin is
  // compared (no early exit) so the time taken does not say which one matched.
  let root: ParsedCertificate | undefined;
  const top = intermediates[0] ?? leaf;
  if (presentedRoot !== undefined) {
    let match = false;
    for (const t of trusted) match = timingSafeEqualBytes(t.sha256, presentedRoot.sha256) || match;
    if (!match) {
      return fail('ROOT_UNTRUSTED', `the presented root ${describeRoot(presentedRoot)} is not a trusted root; trusted: ${trusted.map(describeRoot).join(', ')}`, 0);
    }
    root = presentedRoot;
  } else {
    root = trusted.find((t) => checkSignedBy(top, t) === null);
    if (root === undefined) {
      return fail('ROOT_UNTRUSTED', `no trusted root issued the top certificate (issuer ${top.x509.issuer.replace(/\n/g, ', ')}); trusted: ${trusted.map(describeRoot).join(', ')}`, 0);
    }
  }

  const path: ParsedCertificate[] = [root, ...intermediates, leaf];
  const lastCa = path.length - 2;

  // The root is trusted by pin, but must still be a well-formed self-signed CA.
  const selfSigned = checkSignedBy(root, root);
  if (selfSigned !== null) return fail('CERT_CHAIN_INVALID', `root: ${selfSigned}`, 0);

  for (let i = 0; i < path.length; i++) {
    const cert = path[i];
    if (cert === undefined) return fail('CERT_CHAIN_INVALID', 'internal path error', i);
    const critical = checkCriticalExtensions(cert);
    if (critical !== null) return fail('CERT_CHAIN_INVALID', critical, i);
    if (i <= lastCa) {
      // CA certificates strictly between this one and the leaf.
      const caProblem = checkCa(cert, lastCa - i);
      if (caProblem !== null) return fail('CERT_CHAIN_INVALID', caProblem, i);
    }
    if (i > 0) {
      const issuer = path[i - 1];
      if (issuer === undefined) return fail('CERT_CHAIN_INVALID', 'internal path error', i);
      const sig = checkSignedBy(cert, issuer);
      if (sig !== null) return fail('CERT_CHAIN_INVALID', sig, i);
    }
  }
  // The leaf signs evidence: it must not be a CA, and when it states key usages they must
  // include digitalSignature.
  if (leaf.basicConstraints?.ca === true) return fail('CERT_CHAIN_INVALID', 'leaf certificate is a CA', path.length - 1);
  if (leaf.keyUsage !== undefined && (leaf.keyUsage & KeyUsageFlags.digitalSignature) === 0) {
    return fail('CERT_CHAIN_INVALID', 'leaf keyUsage lacks digitalSignature', path.length - 1);
  }
  if (!keyAcceptable(leaf.x509.publicKey)) return fail('CERT_CHAIN_INVALID', 'leaf key type or size is not allowed', path.length - 1);

  // Validity last, so that a forged chain reports as invalid rather than as expired.
  for (let i = 0; i < path.length; i++) {
    const cert = path[i];
    if (cert === undefined) continue;
    if (at < cert.notBefore.getTime() || at > cert.notAfter.getTime()) {
      return fail(
        'CERT_EXPIRED',
        `certificate ${i} (${cert.subject}) is valid ${cert.notBefore.toISOString()}..${cert.notAfter.toISOString()}, not at ${options.at.toISOString()}`,
        i,
      );
    }
  }

  const certificates = path.map<ChainCertificateReport>((c, index) => ({
    index,
    role: index === 0 ? 'root' : index === path.length - 1 ? 'leaf' : 'intermediate',
    subject: c.subject,
    notBefore: c.notBefore,
    notAfter: c.notAfter,
    sha256Hex: toHex(c.sha256),
  }));
  return { ok: true, path, certificates, leafPublicKey: leaf.x509.publicKey };
}
