/**
 * NVIDIA reference integrity manifests (RIMs): a SWID tag (ISO/IEC 19770-2:2015, TCG RIM
 * information model) whose Payload lists the golden measurement of each SPDM block, signed
 * with an enveloped XML-DSig signature (ECDSA P-384 / SHA-384, C14N 1.1) whose KeyInfo
 * carries the signer's chain up to NVIDIA's CoRIM signing root.
 *
 * Verification, in order:
 * 1. size limit, no DTD (no entity can be declared, so none can expand), well-formed XML;
 * 2. exactly one ds:Signature, exactly one Reference, with URI="" (the whole document);
 * 3. the KeyInfo chain (leaf first) verifies to the pinned RIM root at the given instant
 *    (the project's x509 chain code);
 * 4. the signature verifies with that leaf key (xml-crypto, with the ECDSA-SHA384,
 *    SHA-384 and C14N 1.1 algorithms registered below; the KeyInfo is never used as a key
 *    source by xml-crypto itself);
 * 5. the measurements and version are read from the canonical bytes that the signature
 *    covers (xml-crypto's signed reference), never from the document as received, so no
 *    signature-wrapping trick can make unsigned content count.
 *
 * C14N 1.1 differs from C14N 1.0 only in how xml:id / xml:base / xml:lang attributes are
 * inherited into a document subset; the reference here is the whole document (URI="",
 * enveloped-signature), which has no subset, so the 1.0 canonicalizer of xml-crypto
 * produces the C14N 1.1 output. A RIM whose Transforms name anything else is refused.
 */
import { createHash, verify as cryptoVerify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import { CloisterError } from '../../errors.js';
import { verifyCertificateChain } from '../x509/chain.js';
import type { ChainResult } from '../x509/chain.js';

/** One certificate of a verified path, root first (as the x509 chain code reports it). */
type ChainCertificateReport = Extract<ChainResult, { ok: true }>['certificates'][number];

export const DEFAULT_MAX_RIM_BYTES = 256 * 1024;
/** The most measurement entries a RIM may list (Hopper RIMs list 64 or fewer). */
export const MAX_RIM_MEASUREMENTS = 255;
/** The most alternatives one measurement may list. */
export const MAX_RIM_ALTERNATIVES = 16;

/*
 * xml-crypto and @xmldom/xmldom are loaded untyped: their type declarations pull in
 * TypeScript's "dom" lib (/// <reference lib="dom" />), which changes Node's global types
 * (fetch bodies, streams) for the whole project. The few DOM members used here are typed
 * locally instead.
 */
interface XmlElement {
  readonly localName: string;
  readonly namespaceURI: string | null;
  readonly textContent: string | null;
  getAttribute(name: string): string | null;
  getAttributeNS(ns: string, name: string): string | null;
  getElementsByTagNameNS(ns: string, local: string): ArrayLike<XmlElement>;
}
interface XmlDocument {
  readonly documentElement: XmlElement | null;
  getElementsByTagNameNS(ns: string, local: string): ArrayLike<XmlElement>;
}
interface XmlErrorHandler {
  warning(m: string): void;
  error(m: string): void;
  fatalError(m: string): void;
}
interface SignedXmlLike {
  HashAlgorithms: Record<string, unknown>;
  SignatureAlgorithms: Record<string, unknown>;
  CanonicalizationAlgorithms: Record<string, unknown>;
  loadSignature(node: XmlElement): void;
  checkSignature(xml: string): boolean;
  getSignedReferences(): string[];
}
interface XmlLibraries {
  readonly DOMParser: new (options: { errorHandler: XmlErrorHandler }) => { parseFromString(text: string, mime: string): XmlDocument };
  readonly SignedXml: new (options: { publicCert: string; getCertFromKeyInfo: () => null }) => SignedXmlLike;
  readonly C14nCanonicalization: unknown;
}
let xmlLibraries: XmlLibraries | undefined;
/** Loaded on first use: every CLI command imports the verifier, few verify a RIM. */
function xml(): XmlLibraries {
  if (xmlLibraries === undefined) {
    const requireCjs = createRequire(import.meta.url);
    const dom = requireCjs('@xmldom/xmldom') as Pick<XmlLibraries, 'DOMParser'>;
    const crypto = requireCjs('xml-crypto') as Pick<XmlLibraries, 'SignedXml' | 'C14nCanonicalization'>;
    xmlLibraries = { DOMParser: dom.DOMParser, SignedXml: crypto.SignedXml, C14nCanonicalization: crypto.C14nCanonicalization };
  }
  return xmlLibraries;
}

const DSIG_NS = 'http://www.w3.org/2000/09/xmldsig#';
const SWID_NS = 'http://standards.iso.org/iso/19770/-2/2015/schema.xsd';
const SHA384_NS = 'http://www.w3.org/2001/04/xmlenc#sha384';
const ALG_ECDSA_SHA384 = 'http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384';
const ALG_SHA384 = 'http://www.w3.org/2001/04/xmldsig-more#sha384';
const ALG_C14N11 = 'http://www.w3.org/2006/12/xml-c14n11';
const ALG_ENVELOPED = 'http://www.w3.org/2000/09/xmldsig#enveloped-signature';

export interface RimMeasurement {
  /** 0-based, as the RIM numbers them (SPDM block index - 1). */
  readonly index: number;
  readonly active: boolean;
  readonly size: number;
  /** Lower-case hex of each accepted value. */
  readonly alternatives: readonly string[];
  readonly name: string;
}

export interface VerifiedRim {
  /** colloquialVersion, lower case: the driver ("545.00") or VBIOS ("96.00.5e.00.01") version. */
  readonly version: string;
  /** SoftwareIdentity name / Meta product, e.g. "GH100". */
  readonly product: string;
  readonly tagId: string;
  readonly measurements: readonly RimMeasurement[];
  readonly signer: readonly ChainCertificateReport[];
  /** SHA-256 of the RIM bytes as given. */
  readonly sha256: string;
}

export interface VerifyRimOptions {
  /** Pinned RIM root(s), PEM or DER. */
  readonly trustedRoots: readonly (string | Uint8Array)[];
  readonly at: Date;
  readonly maxBytes?: number;
  /** What the RIM is, for messages ("driver RIM", "VBIOS RIM"). */
  readonly what: string;
}

class Sha384 {
  getHash(xml: string): string {
    return createHash('sha384').update(xml, 'utf8').digest('base64');
  }
  getAlgorithmName(): string {
    return ALG_SHA384;
  }
}

/** XML-DSig ECDSA (RFC 4050 / XMLDSig 1.1 section 6.4.3): the SignatureValue is r || s. */
class EcdsaSha384 {
  getSignature(): string {
    throw new CloisterError('INVALID_ARGUMENT', 'RIM signing is not supported');
  }
  verifySignature(material: string, key: KeyObject, signatureValue: string): boolean {
    return cryptoVerify('sha384', Buffer.from(material, 'utf8'), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(signatureValue, 'base64'));
  }
  getAlgorithmName(): string {
    return ALG_ECDSA_SHA384;
  }
}

function fail(what: string, message: string, code: 'EVIDENCE_MALFORMED' | 'EVIDENCE_SIGNATURE_INVALID' = 'EVIDENCE_MALFORMED'): CloisterError {
  return new CloisterError(code, `${what}: ${message}`);
}

/** Strict XML parse: any parser warning or error is a failure. */
function parseXml(text: string, what: string): XmlDocument {
  const problems: string[] = [];
  const parser = new (xml().DOMParser)({
    errorHandler: {
      warning: (m: string) => problems.push(m),
      error: (m: string) => problems.push(m),
      fatalError: (m: string) => problems.push(m),
    },
  });
  let doc: XmlDocument;
  try {
    doc = parser.parseFromString(text, 'text/xml');
  } catch (cause) {
    throw new CloisterError('EVIDENCE_MALFORMED', `${what}: not well-formed XML`, { cause });
  }
  if (problems.length > 0 || doc.documentElement === null) {
    throw fail(what, `not well-formed XML (${(problems[0] ?? 'no root element').split('\n')[0]})`);
  }
  return doc;
}

function elementsNS(parent: XmlDocument | XmlElement, ns: string, local: string): XmlElement[] {
  return Array.from(parent.getElementsByTagNameNS(ns, local));
}

function only(parent: XmlDocument | XmlElement, ns: string, local: string, what: string): XmlElement {
  const list = elementsNS(parent, ns, local);
  const first = list[0];
  if (list.length !== 1 || first === undefined) throw fail(what, `expected exactly one ${local} element, found ${list.length}`);
  return first;
}

function attr(e: XmlElement, name: string, what: string, ns?: string): string {
  const v = ns === undefined ? e.getAttribute(name) : e.getAttributeNS(ns, name);
  if (v === null || v === '') throw fail(what, `${e.localName} has no ${name} attribute`);
  return v;
}

function intAttr(e: XmlElement, name: string, what: string, max: number): number {
  const v = attr(e, name, what);
  if (!/^(0|[1-9][0-9]{0,5})$/.test(v) || Number(v) > max) throw fail(what, `${e.localName} ${name}="${v}" is not an integer in 0..${max}`);
  return Number(v);
}

/** Read version and measurements from the signed canonical XML. */
function readSignedContent(canonical: string, what: string): Omit<VerifiedRim, 'signer' | 'sha256'> {
  const doc = parseXml(canonical, what);
  const root = doc.documentElement;
  if (root === null || root.namespaceURI !== SWID_NS || root.localName !== 'SoftwareIdentity') {
    throw fail(what, 'the signed content is not a SWID SoftwareIdentity');
  }
  const meta = only(root, SWID_NS, 'Meta', what);
  const version = attr(meta, 'colloquialVersion', what).toLowerCase();
  if (!/^[0-9a-z.\-_]{1,64}$/.test(version)) throw fail(what, `colloquialVersion "${version}" is not a version`);
  const product = attr(meta, 'product', what);
  const tagId = attr(root, 'tagId', what);
  const payload = only(root, SWID_NS, 'Payload', what);
  const resources = elementsNS(payload, SWID_NS, 'Resource');
  if (resources.length > MAX_RIM_MEASUREMENTS) throw fail(what, `${resources.length} measurements exceed the limit of ${MAX_RIM_MEASUREMENTS}`);
  const measurements: RimMeasurement[] = [];
  const seen = new Set<number>();
  for (const r of resources) {
    if (r.getAttribute('type') !== 'Measurement') continue;
    const index = intAttr(r, 'index', what, 254);
    if (seen.has(index)) throw fail(what, `measurement index ${index} appears twice`);
    seen.add(index);
    const activeText = attr(r, 'active', what);
    if (activeText !== 'True' && activeText !== 'False') throw fail(what, `measurement ${index}: active="${activeText}" is neither True nor False`);
    const count = intAttr(r, 'alternatives', what, MAX_RIM_ALTERNATIVES);
    const size = intAttr(r, 'size', what, 1024);
    if (count === 0) throw fail(what, `measurement ${index} lists no alternatives`);
    const alternatives: string[] = [];
    for (let i = 0; i < count; i++) {
      const h = attr(r, `Hash${i}`, what, SHA384_NS).toLowerCase();
      if (!/^[0-9a-f]*$/.test(h) || h.length !== size * 2) throw fail(what, `measurement ${index} Hash${i} is not ${size} bytes of hex`);
      alternatives.push(h);
    }
    measurements.push({ index, active: activeText === 'True', size, alternatives, name: r.getAttribute('name') ?? '' });
  }
  if (measurements.length === 0) throw fail(what, 'lists no measurements');
  return { version, product, tagId, measurements };
}

function decodeRimText(input: Uint8Array | string, what: string, maxBytes: number): string {
  const size = typeof input === 'string' ? Buffer.byteLength(input, 'utf8') : input.byteLength;
  if (size > maxBytes) {
    throw new CloisterError('LIMIT_EXCEEDED', `${what} is ${size} bytes, over the limit of ${maxBytes} (maxRimBytes)`, { detail: { size, maxBytes } });
  }
  let text: string;
  try {
    text = typeof input === 'string' ? input : new TextDecoder('utf-8', { fatal: true }).decode(input);
  } catch (cause) {
    throw new CloisterError('EVIDENCE_MALFORMED', `${what}: not UTF-8 text`, { cause });
  }
  // No DTD: an internal subset could declare entities (expansion bombs, or content the
  // canonical form would differ on). NVIDIA's RIMs have none.
  if (/<!DOCTYPE|<!ENTITY/i.test(text)) throw fail(what, 'a DTD is not allowed');
  return text;
}

/**
 * Verify one RIM: signer chain to the pinned root, XML signature, then its signed content.
 * Throws CloisterError: EVIDENCE_MALFORMED (structure), CERT_CHAIN_INVALID / CERT_EXPIRED /
 * ROOT_UNTRUSTED (signer chain), EVIDENCE_SIGNATURE_INVALID (signature or digest).
 */
export function verifyRim(input: Uint8Array | string, options: VerifyRimOptions): VerifiedRim {
  const what = options.what;
  const text = decodeRimText(input, what, options.maxBytes ?? DEFAULT_MAX_RIM_BYTES);
  const doc = parseXml(text, what);
  const signature = only(doc, DSIG_NS, 'Signature', what);
  const signedInfo = only(signature, DSIG_NS, 'SignedInfo', what);
  const references = elementsNS(signedInfo, DSIG_NS, 'Reference');
  const reference = references[0];
  if (references.length !== 1 || reference === undefined || reference.getAttribute('URI') !== '') {
    throw fail(what, 'the signature must have exactly one Reference, to the whole document (URI="")');
  }
  const transforms = elementsNS(reference, DSIG_NS, 'Transform').map((t) => t.getAttribute('Algorithm'));
  if (transforms.length !== 2 || transforms[0] !== ALG_ENVELOPED || transforms[1] !== ALG_C14N11) {
    throw fail(what, `unexpected Transforms ${transforms.join(', ')} (expected enveloped-signature, C14N 1.1)`);
  }
  const c14n = only(signedInfo, DSIG_NS, 'CanonicalizationMethod', what).getAttribute('Algorithm');
  const sigAlg = only(signedInfo, DSIG_NS, 'SignatureMethod', what).getAttribute('Algorithm');
  const digestAlg = only(reference, DSIG_NS, 'DigestMethod', what).getAttribute('Algorithm');
  if (c14n !== ALG_C14N11 || sigAlg !== ALG_ECDSA_SHA384 || digestAlg !== ALG_SHA384) {
    throw fail(what, `unexpected algorithms (canonicalization ${String(c14n)}, signature ${String(sigAlg)}, digest ${String(digestAlg)})`);
  }

  // The signer chain, leaf first as NVIDIA writes it.
  const keyInfo = only(signature, DSIG_NS, 'KeyInfo', what);
  const ders = elementsNS(keyInfo, DSIG_NS, 'X509Certificate').map((e, i) => {
    const body = (e.textContent ?? '').replace(/\s+/g, '');
    const der = Buffer.from(body, 'base64');
    if (der.byteLength === 0 || der.toString('base64') !== body) throw fail(what, `KeyInfo certificate ${i + 1} is not canonical base64`);
    return new Uint8Array(der);
  });
  const leaf = ders[0];
  if (leaf === undefined || ders.length < 2) throw fail(what, `KeyInfo holds ${ders.length} certificates; expected the signer chain up to the RIM root`);
  const chain = verifyCertificateChain({
    leaf,
    intermediates: ders.slice(1, -1).reverse(),
    presentedRoot: ders[ders.length - 1] ?? leaf,
    trustedRoots: options.trustedRoots,
    at: options.at,
  });
  if (!chain.ok) throw new CloisterError(chain.code, `${what} signer chain: ${chain.message}`);

  const { SignedXml, C14nCanonicalization } = xml();
  const sx = new SignedXml({ publicCert: chain.leafPublicKey.export({ type: 'spki', format: 'pem' }).toString(), getCertFromKeyInfo: () => null });
  sx.HashAlgorithms[ALG_SHA384] = Sha384;
  sx.SignatureAlgorithms[ALG_ECDSA_SHA384] = EcdsaSha384;
  sx.CanonicalizationAlgorithms[ALG_C14N11] = C14nCanonicalization;
  let valid = false;
  try {
    sx.loadSignature(signature);
    valid = sx.checkSignature(text);
  } catch (cause) {
    throw new CloisterError('EVIDENCE_SIGNATURE_INVALID', `${what}: the XML signature does not verify (${cause instanceof Error ? cause.message.split('\n')[0] ?? '' : 'error'})`, { cause });
  }
  const signed = sx.getSignedReferences();
  const canonical = signed[0];
  if (!valid || signed.length !== 1 || canonical === undefined) {
    throw fail(what, 'the XML signature or the digest of the signed content does not verify', 'EVIDENCE_SIGNATURE_INVALID');
  }
  const content = readSignedContent(canonical, what);
  return { ...content, signer: chain.certificates, sha256: createHash('sha256').update(text, 'utf8').digest('hex') };
}
