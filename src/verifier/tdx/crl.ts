/**
 * The two CRLs of TDX collateral, checked before @phala/dcap-qvl uses them for revocation.
 *
 * dcap-qvl (0.3.9) looks up serial numbers in `root_ca_crl` and `pck_crl` but checks neither
 * CRL's signature nor its validity, and ignores a CRL it cannot parse. Collateral travels with
 * the evidence through the untrusted host, so without this check the host could hand out an
 * empty or garbled CRL and hide a revoked PCK certificate. Here, fail closed:
 *
 * - root_ca_crl: DER CRL signed (ECDSA P-256 / SHA-256) by the pinned Intel SGX Root CA;
 * - pck_crl: DER CRL signed by the first certificate of `pck_crl_issuer_chain` (the Intel SGX
 *   PCK Platform or Processor CA), which must itself be signed by the pinned root, and whose
 *   chain must end in exactly that root;
 * - each CRL: no trailing bytes, issuer name = its signer's subject, thisUpdate <= at <=
 *   nextUpdate (nextUpdate required).
 */
import { X509Certificate, verify as cryptoVerify } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { CertificateList, Certificate } from '@peculiar/asn1-x509';
import type { Collateral } from '@phala/dcap-qvl';
import { timingSafeEqualBytes } from '../../crypto/ct.js';
import { CloisterError } from '../../errors.js';
import { pemToDerList } from '../x509/certificate.js';

const ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2';

/** [start, end) of the TLV at `off`, and where its content starts. Definite lengths only. */
function tlv(b: Uint8Array, off: number): { start: number; contentStart: number; end: number } {
  if (off + 2 > b.byteLength) throw new Error('truncated');
  const first = b[off + 1] ?? 0;
  let len = first;
  let head = 2;
  if (first >= 0x80) {
    const n = first & 0x7f;
    if (n === 0 || n > 4 || off + 2 + n > b.byteLength) throw new Error('bad length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (b[off + 2 + i] ?? 0);
    head = 2 + n;
  }
  const end = off + head + len;
  if (end > b.byteLength) throw new Error('truncated');
  return { start: off, contentStart: off + head, end };
}

function bytesOf(hexOrBytes: unknown, field: string): Uint8Array {
  if (typeof hexOrBytes === 'string') return new Uint8Array(Buffer.from(hexOrBytes, 'hex'));
  if (Array.isArray(hexOrBytes) || hexOrBytes instanceof Uint8Array) return Uint8Array.from(hexOrBytes as ArrayLike<number>);
  throw new CloisterError('EVIDENCE_MALFORMED', `TDX collateral: ${field} is missing`);
}

function nameDer(name: unknown): Uint8Array {
  return new Uint8Array(AsnConvert.serialize(name));
}

/** Verify one DER CRL against its signer. Returns its nextUpdate. */
function checkCrl(der: Uint8Array, signer: X509Certificate, at: Date, what: string): Date {
  const fail = (code: 'EVIDENCE_MALFORMED' | 'CERT_CHAIN_INVALID' | 'CERT_EXPIRED', why: string, cause?: unknown): CloisterError =>
    new CloisterError(code, `TDX collateral ${what}: ${why}`, cause === undefined ? {} : { cause });
  let tbs: Uint8Array;
  let crl: CertificateList;
  try {
    const outer = tlv(der, 0);
    if (der[0] !== 0x30 || outer.end !== der.byteLength) throw new Error('not exactly one DER SEQUENCE');
    const t = tlv(der, outer.contentStart);
    tbs = der.subarray(t.start, t.end);
    crl = AsnConvert.parse(der, CertificateList);
  } catch (cause) {
    throw fail('EVIDENCE_MALFORMED', 'is not a DER CRL', cause);
  }
  if (crl.signatureAlgorithm.algorithm !== ECDSA_WITH_SHA256 || crl.tbsCertList.signature.algorithm !== ECDSA_WITH_SHA256) {
    throw fail('CERT_CHAIN_INVALID', `signature algorithm ${crl.signatureAlgorithm.algorithm} is not ecdsa-with-SHA256`);
  }
  const signerAsn = AsnConvert.parse(signer.raw, Certificate);
  if (!timingSafeEqualBytes(nameDer(crl.tbsCertList.issuer), nameDer(signerAsn.tbsCertificate.subject))) {
    throw fail('CERT_CHAIN_INVALID', `issuer is not ${signer.subject.replace(/\n/g, ', ')}`);
  }
  const sig = new Uint8Array(crl.signature);
  if (!cryptoVerify('sha256', tbs, signer.publicKey, sig)) throw fail('CERT_CHAIN_INVALID', 'signature does not verify');
  const thisUpdate = crl.tbsCertList.thisUpdate.getTime();
  const nextUpdate = crl.tbsCertList.nextUpdate?.getTime();
  if (nextUpdate === undefined) throw fail('CERT_CHAIN_INVALID', 'has no nextUpdate');
  if (at.getTime() < thisUpdate.getTime()) throw fail('CERT_EXPIRED', `is not valid before ${thisUpdate.toISOString()}`);
  if (at.getTime() > nextUpdate.getTime()) throw fail('CERT_EXPIRED', `expired at ${nextUpdate.toISOString()} (nextUpdate)`);
  return nextUpdate;
}

/**
 * Check both CRLs of the collateral against the pinned root at `at`. Returns the earlier
 * nextUpdate. Throws EVIDENCE_MALFORMED, CERT_CHAIN_INVALID or CERT_EXPIRED.
 */
export function checkTdxCollateralCrls(collateral: Collateral, root: X509Certificate, at: Date): Date {
  const rootNext = checkCrl(bytesOf(collateral.root_ca_crl, 'root_ca_crl'), root, at, 'root_ca_crl');
  let chain: X509Certificate[];
  try {
    chain = pemToDerList(collateral.pck_crl_issuer_chain).map((d) => new X509Certificate(d));
  } catch (cause) {
    throw new CloisterError('EVIDENCE_MALFORMED', 'TDX collateral: pck_crl_issuer_chain is not a PEM certificate chain', { cause });
  }
  const signer = chain[0];
  const top = chain[chain.length - 1];
  if (signer === undefined || top === undefined || chain.length !== 2 || top.fingerprint256 !== root.fingerprint256) {
    throw new CloisterError('CERT_CHAIN_INVALID', 'TDX collateral: pck_crl_issuer_chain is not [PCK CA, pinned Intel SGX Root CA]');
  }
  if (!signer.checkIssued(root) || !signer.verify(root.publicKey)) {
    throw new CloisterError('CERT_CHAIN_INVALID', 'TDX collateral: the PCK CRL issuer is not signed by the pinned Intel SGX Root CA');
  }
  if (at.getTime() < Date.parse(signer.validFrom) || at.getTime() > Date.parse(signer.validTo)) {
    throw new CloisterError('CERT_EXPIRED', `TDX collateral: the PCK CRL issuer is valid ${signer.validFrom} .. ${signer.validTo}, not at ${at.toISOString()}`);
  }
  const pckNext = checkCrl(bytesOf(collateral.pck_crl, 'pck_crl'), signer, at, 'pck_crl');
  return rootNext.getTime() < pckNext.getTime() ? rootNext : pckNext;
}

/** A DER CRL's nextUpdate (no signature check: for scheduling refreshes only). */
export function crlNextUpdate(der: Uint8Array, what: string): Date {
  let next: Date | undefined;
  try {
    next = AsnConvert.parse(der, CertificateList).tbsCertList.nextUpdate?.getTime();
  } catch (cause) {
    throw new CloisterError('EVIDENCE_MALFORMED', `TDX collateral ${what}: is not a DER CRL`, { cause });
  }
  if (next === undefined) throw new CloisterError('EVIDENCE_MALFORMED', `TDX collateral ${what}: has no nextUpdate`);
  return next;
}
