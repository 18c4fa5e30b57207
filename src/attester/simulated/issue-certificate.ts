/**
 * Minimal X.509 v3 certificate issuance (RFC 5280 section 4.1) with ECDSA keys, for the
 * simulated platform's root -> intermediate -> leaf chain. Only what that chain needs:
 * a CN-only name, validity, basicConstraints, keyUsage and key identifiers.
 */
import { createHash, randomBytes, sign as cryptoSign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import {
  AlgorithmIdentifier,
  AttributeTypeAndValue,
  AttributeValue,
  AuthorityKeyIdentifier,
  BasicConstraints,
  Certificate,
  Extension,
  Extensions,
  KeyIdentifier,
  KeyUsage,
  Name,
  RelativeDistinguishedName,
  SubjectKeyIdentifier,
  SubjectPublicKeyInfo,
  TBSCertificate,
  Validity,
  Version,
  id_ce_authorityKeyIdentifier,
  id_ce_basicConstraints,
  id_ce_keyUsage,
  id_ce_subjectKeyIdentifier,
} from '@peculiar/asn1-x509';
import { CloisterError } from '../../errors.js';

interface IssueCertificateOptions {
  readonly subjectCommonName: string;
  /** The subject's public key. */
  readonly publicKey: KeyObject;
  /** The issuer's private key; for a self-signed root, the subject's own. */
  readonly signingKey: KeyObject;
  /** Issuer CN; omitted for a self-signed certificate. */
  readonly issuerCommonName?: string;
  /** The issuer's public key, for the authorityKeyIdentifier; defaults to `publicKey`. */
  readonly issuerPublicKey?: KeyObject;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** CA certificate (with the given pathLenConstraint, if any) or end entity. */
  readonly ca: boolean;
  readonly pathLen?: number;
  /** KeyUsageFlags bits. */
  readonly keyUsage: number;
  /** Extra extensions (tests use this to add an unknown critical extension). */
  readonly extraExtensions?: readonly { readonly oid: string; readonly critical: boolean; readonly value: Uint8Array }[];
}

function nameOf(cn: string): Name {
  return new Name([
    new RelativeDistinguishedName([new AttributeTypeAndValue({ type: '2.5.4.3', value: new AttributeValue({ utf8String: cn }) })]),
  ]);
}

/** RFC 5280 section 4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING. */
function keyId(key: KeyObject): ArrayBuffer {
  const spki = AsnConvert.parse(key.export({ type: 'spki', format: 'der' }), SubjectPublicKeyInfo);
  return new Uint8Array(createHash('sha1').update(new Uint8Array(spki.subjectPublicKey)).digest()).buffer;
}

function signatureAlgorithmFor(key: KeyObject): { oid: string; hash: string } {
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (key.asymmetricKeyType === 'ec' && curve === 'secp384r1') return { oid: '1.2.840.10045.4.3.3', hash: 'sha384' };
  if (key.asymmetricKeyType === 'ec' && curve === 'prime256v1') return { oid: '1.2.840.10045.4.3.2', hash: 'sha256' };
  throw new CloisterError('INVALID_ARGUMENT', 'certificates can only be issued with P-256 or P-384 keys');
}

/** Issue one DER certificate. */
export function issueCertificate(o: IssueCertificateOptions): Uint8Array {
  const alg = signatureAlgorithmFor(o.signingKey);
  // A positive 127-bit serial: RFC 5280 section 4.1.2.2 (at most 20 octets, positive).
  const serial = new Uint8Array(randomBytes(16));
  serial[0] = ((serial[0] ?? 0) & 0x7f) | 0x01;
  const ext = (oid: string, critical: boolean, value: ArrayBuffer): Extension =>
    new Extension({ extnID: oid, critical, extnValue: new OctetString(value) });
  const extensions = [
    ext(
      id_ce_basicConstraints,
      true,
      AsnConvert.serialize(o.ca && o.pathLen !== undefined ? new BasicConstraints({ cA: true, pathLenConstraint: o.pathLen }) : new BasicConstraints({ cA: o.ca })),
    ),
    ext(id_ce_keyUsage, true, AsnConvert.serialize(new KeyUsage(o.keyUsage))),
    ext(id_ce_subjectKeyIdentifier, false, AsnConvert.serialize(new SubjectKeyIdentifier(keyId(o.publicKey)))),
    ext(
      id_ce_authorityKeyIdentifier,
      false,
      AsnConvert.serialize(new AuthorityKeyIdentifier({ keyIdentifier: new KeyIdentifier(keyId(o.issuerPublicKey ?? o.publicKey)) })),
    ),
    ...(o.extraExtensions ?? []).map((e) => ext(e.oid, e.critical, Uint8Array.from(e.value).buffer)),
  ];
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: serial.buffer,
    signature: new AlgorithmIdentifier({ algorithm: alg.oid }),
    issuer: nameOf(o.issuerCommonName ?? o.subjectCommonName),
    validity: new Validity({ notBefore: o.notBefore, notAfter: o.notAfter }),
    subject: nameOf(o.subjectCommonName),
    subjectPublicKeyInfo: AsnConvert.parse(o.publicKey.export({ type: 'spki', format: 'der' }), SubjectPublicKeyInfo),
    extensions: new Extensions(extensions),
  });
  const tbsDer = new Uint8Array(AsnConvert.serialize(tbs));
  const signature = new Uint8Array(cryptoSign(alg.hash, tbsDer, { key: o.signingKey, dsaEncoding: 'der' }));
  const cert = new Certificate({
    tbsCertificate: tbs,
    signatureAlgorithm: new AlgorithmIdentifier({ algorithm: alg.oid }),
    signatureValue: signature.buffer,
  });
  return new Uint8Array(AsnConvert.serialize(cert));
}

/** PEM text for one DER certificate (RFC 7468 section 5). */
export function derToPem(der: Uint8Array): string {
  const b64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`;
}
