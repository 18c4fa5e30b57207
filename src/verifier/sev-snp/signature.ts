/**
 * SEV-SNP report signature: ECDSA P-384 with SHA-384 over bytes 0x000..0x29F, R and S stored
 * as 72-byte little-endian integers (SEV-SNP ABI spec 56860, "ECDSA Signature Format").
 * `parseSnpReport` has already converted them to 48-byte big-endian scalars; here they are
 * concatenated into the IEEE P1363 form that node:crypto accepts.
 */
import { verify as cryptoVerify, type KeyObject } from 'node:crypto';
import type { SnpReport } from './report.js';

/** True when the report's signature verifies under `publicKey` (an EC P-384 key). */
export function verifySnpReportSignature(report: SnpReport, publicKey: KeyObject): boolean {
  if (publicKey.asymmetricKeyType !== 'ec' || publicKey.asymmetricKeyDetails?.namedCurve !== 'secp384r1') {
    return false;
  }
  const sig = new Uint8Array(96);
  sig.set(report.signatureR, 0);
  sig.set(report.signatureS, 48);
  try {
    return cryptoVerify('sha384', report.signedBytes, { key: publicKey, dsaEncoding: 'ieee-p1363' }, sig);
  } catch {
    // A malformed scalar (zero, >= n) makes OpenSSL throw rather than return false.
    return false;
  }
}
