/**
 * AMD endorsement-key certificates (VCEK / VLEK) and the ARK -> ASK|ASVK -> VCEK|VLEK chain.
 *
 * Extensions (AMD "Versioned Chip Endorsement Key (VCEK) Certificate and KDS Interface
 * Specification", pub. 57230, table "VCEK Certificate Extensions"):
 *   1.3.6.1.4.1.3704.1.1       structVersion (INTEGER)
 *   1.3.6.1.4.1.3704.1.2       productName (IA5String, e.g. "Milan-B0", "Genoa", "Turin")
 *   1.3.6.1.4.1.3704.1.3.1..9  blSPL, teeSPL, snpSPL, spl_4..spl_7, ucodeSPL, fmcSPL (INTEGER)
 *   1.3.6.1.4.1.3704.1.4       hwID (raw bytes: 64 on Milan/Genoa, 8 on Turin) - VCEK only
 *   1.3.6.1.4.1.3704.1.5       cspID - VLEK only
 * All certificates in the chain are RSASSA-PSS with SHA-384 (ARK and ASK are RSA-4096).
 */
import { X509Certificate, type KeyObject } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate } from '@peculiar/asn1-x509';
import { CloisterError } from '../../errors.js';
import { verifyCertificateChain } from '../x509/index.js';
import { AMD_PRODUCT_ROOTS, type AmdProductRoots } from './roots.js';
import { SNP_PRODUCTS, type SnpProduct } from './tcb.js';

const OID_PREFIX = '1.3.6.1.4.1.3704.1.';
const OID_RSASSA_PSS = '1.2.840.113549.1.1.10';
const OID_EC_PUBLIC_KEY = '1.2.840.10045.2.1';

/** Largest VCEK/VLEK accepted, bytes (real ones are about 1.3 KiB). */
const MAX_EK_CERT_BYTES = 16 * 1024;

interface AmdEkTcb {
  readonly bootloader: number;
  readonly tee: number;
  readonly snp: number;
  readonly microcode: number;
  readonly fmc?: number;
  /** spl_4..spl_7: reserved; kept to reject certificates that set them. */
  readonly reserved: readonly number[];
}

export interface AmdEndorsementKey {
  readonly kind: 'vcek' | 'vlek';
  readonly certificate: X509Certificate;
  readonly publicKey: KeyObject;
  /** productName extension as written (e.g. "Milan-B0"). */
  readonly productName?: string;
  /** The product that productName names, when it names a known one. */
  readonly product?: SnpProduct;
  readonly tcb: AmdEkTcb;
  /** VCEK only. */
  readonly hwId?: Uint8Array;
}

function certError(message: string, detail: Record<string, string | number | boolean> = {}): CloisterError {
  return new CloisterError('CERT_CHAIN_INVALID', message, { detail: { step: 'vcek', ...detail } });
}

/** Decode a small non-negative DER INTEGER (an SPL: 0..255). */
function derSmallInt(v: Uint8Array, oid: string): number {
  if (v.byteLength < 3 || v[0] !== 0x02 || v[1] !== v.byteLength - 2 || v.byteLength > 4) {
    throw certError('TCB extension is not a small DER INTEGER', { oid });
  }
  const first = v[2] ?? 0;
  if (v.byteLength === 4) {
    // Two content bytes are only minimal DER when the first is 0x00 and the second >= 0x80.
    if (first !== 0 || (v[3] ?? 0) < 0x80) throw certError('TCB extension INTEGER is not minimal DER', { oid });
    return v[3] ?? 0;
  }
  if (first >= 0x80) throw certError('TCB extension INTEGER is negative', { oid });
  return first;
}

function derIa5(v: Uint8Array, oid: string): string {
  if (v.byteLength < 2 || v[0] !== 0x16 || v[1] !== v.byteLength - 2 || v.byteLength > 129) {
    throw certError('productName extension is not a short IA5String', { oid });
  }
  const s = Buffer.from(v.subarray(2)).toString('latin1');
  if (!/^[\x20-\x7e]*$/.test(s)) throw certError('productName has non-printable characters', { oid });
  return s;
}

function productFromName(name: string): SnpProduct | undefined {
  const base = name.split('-')[0];
  return SNP_PRODUCTS.find((p) => p === base);
}

/** Parse a VCEK or VLEK certificate (DER) and read its AMD extensions. */
export function parseAmdEndorsementKey(der: Uint8Array): AmdEndorsementKey {
  if (der.byteLength === 0 || der.byteLength > MAX_EK_CERT_BYTES) {
    throw new CloisterError('EVIDENCE_MALFORMED', 'endorsement key certificate has a bad length', {
      detail: { length: der.byteLength, max: MAX_EK_CERT_BYTES },
    });
  }
  const copy = Buffer.from(new Uint8Array(der));
  let certificate: X509Certificate;
  let parsed: Certificate;
  try {
    certificate = new X509Certificate(copy);
    parsed = AsnConvert.parse(copy, Certificate);
  } catch (cause) {
    throw new CloisterError('EVIDENCE_MALFORMED', 'endorsement key certificate is not valid DER X.509', { cause });
  }
  // Re-encoding must give back exactly the input: no trailing bytes, no BER leniency.
  if (!Buffer.from(certificate.raw).equals(copy)) {
    throw new CloisterError('EVIDENCE_MALFORMED', 'endorsement key certificate has trailing bytes');
  }
  const cn = /(?:^|\n)CN=([^\n]*)/.exec(certificate.subject)?.[1];
  let kind: 'vcek' | 'vlek';
  if (cn === 'SEV-VCEK') kind = 'vcek';
  else if (cn === 'SEV-VLEK') kind = 'vlek';
  else throw certError('certificate subject is neither SEV-VCEK nor SEV-VLEK');
  if (parsed.tbsCertificate.subjectPublicKeyInfo.algorithm.algorithm !== OID_EC_PUBLIC_KEY) {
    throw certError('endorsement key is not an EC key');
  }
  const publicKey = certificate.publicKey;
  if (publicKey.asymmetricKeyDetails?.namedCurve !== 'secp384r1') throw certError('endorsement key is not P-384');

  const ext = new Map<string, Uint8Array>();
  for (const e of parsed.tbsCertificate.extensions ?? []) {
    if (!e.extnID.startsWith(OID_PREFIX)) continue;
    if (ext.has(e.extnID)) throw certError('duplicate AMD extension', { oid: e.extnID });
    ext.set(e.extnID, new Uint8Array(e.extnValue.buffer.slice(0)));
  }
  const spl = (n: number): number | undefined => {
    const oid = `${OID_PREFIX}3.${n}`;
    const v = ext.get(oid);
    return v === undefined ? undefined : derSmallInt(v, oid);
  };
  const need = (n: number, name: string): number => {
    const v = spl(n);
    if (v === undefined) throw certError(`endorsement key lacks the ${name} extension`, { oid: `${OID_PREFIX}3.${n}` });
    return v;
  };
  const reserved: number[] = [];
  for (const n of [4, 5, 6, 7]) reserved.push(spl(n) ?? 0);
  const fmc = spl(9);
  const tcb: AmdEkTcb = {
    bootloader: need(1, 'blSPL'),
    tee: need(2, 'teeSPL'),
    snp: need(3, 'snpSPL'),
    microcode: need(8, 'ucodeSPL'),
    reserved,
    ...(fmc === undefined ? {} : { fmc }),
  };
  const nameRaw = ext.get(`${OID_PREFIX}2`);
  const productName = nameRaw === undefined ? undefined : derIa5(nameRaw, `${OID_PREFIX}2`);
  const product = productName === undefined ? undefined : productFromName(productName);
  const hwRaw = ext.get(`${OID_PREFIX}4`);
  if (kind === 'vcek') {
    if (hwRaw === undefined) throw certError('VCEK lacks the hwID extension');
    if (hwRaw.byteLength !== 64 && hwRaw.byteLength !== 8) throw certError('VCEK hwID has a bad length', { length: hwRaw.byteLength });
  }
  return {
    kind,
    certificate,
    publicKey,
    tcb,
    ...(productName === undefined ? {} : { productName }),
    ...(product === undefined ? {} : { product }),
    ...(kind === 'vcek' && hwRaw !== undefined ? { hwId: hwRaw } : {}),
  };
}

function isRsaPss(cert: X509Certificate): boolean {
  const parsed = AsnConvert.parse(Buffer.from(cert.raw), Certificate);
  return parsed.signatureAlgorithm.algorithm === OID_RSASSA_PSS;
}

interface AmdChainOptions {
  /** Verification time. */
  readonly at: Date;
  /** Products whose roots are trusted (default: all three). */
  readonly products?: readonly SnpProduct[];
  /** Replace the pinned AMD roots (tests with a private chain only). */
  readonly roots?: readonly AmdProductRoots[];
  /** ARK / ASK (or ASVK) the evidence carried; when present they must equal the pinned ones. */
  readonly presentedArk?: Uint8Array;
  readonly presentedAsk?: Uint8Array;
}

interface AmdChainResult {
  readonly product: SnpProduct;
  readonly arkFingerprint256: string;
}

function loadPinned(pem: string, fingerprint: string, name: string): X509Certificate {
  const c = new X509Certificate(pem);
  if (c.fingerprint256 !== fingerprint) {
    throw new CloisterError('ROOT_UNTRUSTED', `pinned ${name} does not match its fingerprint`, { detail: { cert: name } });
  }
  return c;
}

/**
 * Verify ARK -> ASK (VCEK) or ARK -> ASVK (VLEK) -> endorsement key against the pinned roots.
 * Returns the product whose chain verified.
 */
export function verifyAmdChain(ek: AmdEndorsementKey, options: AmdChainOptions): AmdChainResult {
  const allowed = options.products ?? SNP_PRODUCTS;
  const rootSets = options.roots ?? AMD_PRODUCT_ROOTS;
  let issuedByOtherProduct: SnpProduct | undefined;
  for (const set of rootSets) {
    const ark = loadPinned(set.arkPem, set.arkFingerprint256, 'ARK');
    const issuer =
      ek.kind === 'vcek'
        ? loadPinned(set.askPem, set.askFingerprint256, 'ASK')
        : loadPinned(set.asvkPem, set.asvkFingerprint256, 'ASVK');
    if (!ek.certificate.checkIssued(issuer) || !ek.certificate.verify(issuer.publicKey)) continue;
    if (!allowed.includes(set.product)) {
      issuedByOtherProduct = set.product;
      continue;
    }
    if (ek.product !== undefined && ek.product !== set.product) {
      throw certError('productName does not match the product whose key signed it', { product: set.product });
    }
    if (options.presentedAsk !== undefined) {
      const p = new X509Certificate(Buffer.from(options.presentedAsk));
      if (p.fingerprint256 !== issuer.fingerprint256) {
        throw new CloisterError('ROOT_UNTRUSTED', `evidence carries an ${ek.kind === 'vcek' ? 'ASK' : 'ASVK'} with SHA-256 ${p.fingerprint256}; the pinned ${set.product} one is ${issuer.fingerprint256}`);
      }
    }
    for (const c of [ark, issuer, ek.certificate]) {
      if (!isRsaPss(c)) throw certError('AMD chain certificate is not signed with RSASSA-PSS');
    }
    // Generic path validation (signatures, CA flags, keyUsage, pathLen, validity) against the
    // pinned ARK, compared by the SHA-256 of its DER.
    const result = verifyCertificateChain({
      leaf: new Uint8Array(ek.certificate.raw),
      intermediates: [new Uint8Array(issuer.raw)],
      trustedRoots: [new Uint8Array(ark.raw)],
      at: options.at,
      ...(options.presentedArk === undefined ? {} : { presentedRoot: new Uint8Array(options.presentedArk) }),
    });
    if (!result.ok) {
      throw new CloisterError(result.code, `AMD chain: ${result.message}`, { detail: { product: set.product } });
    }
    return { product: set.product, arkFingerprint256: ark.fingerprint256 };
  }
  if (issuedByOtherProduct !== undefined) {
    throw new CloisterError('ROOT_UNTRUSTED', 'endorsement key chains to a product the policy does not trust', {
      detail: { product: issuedByOtherProduct },
    });
  }
  const pinned = rootSets.map((s) => `${s.product} ${ek.kind === 'vcek' ? s.askFingerprint256 : s.asvkFingerprint256}`).join(', ');
  throw new CloisterError('ROOT_UNTRUSTED', `endorsement key (issuer ${ek.certificate.issuer.replace(/\n/g, ', ')}) is not issued by any pinned AMD ${ek.kind === 'vcek' ? 'ASK' : 'ASVK'} (SHA-256: ${pinned})`);
}
