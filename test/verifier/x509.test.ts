/**
 * Certificate chain verification: real chains (AWS Nitro ECDSA P-384, AMD RSA-PSS SHA-384),
 * and a generated chain bent in every way the validator must refuse.
 */
import { generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { KeyUsageFlags, parseCertificate, pemToDerList } from '../../src/verifier/x509/certificate.js';
import { verifyCertificateChain } from '../../src/verifier/x509/chain.js';
import type { ChainResult } from '../../src/verifier/x509/chain.js';
import { derToPem, issueCertificate } from '../../src/attester/simulated/issue-certificate.js';
import { decodeCoseSign1 } from '../../src/verifier/nitro/cose.js';
import { parseNitroDocument } from '../../src/verifier/nitro/document.js';
import { awsNitroRootDer } from '../../src/verifier/nitro/aws-root.js';
import { describeWithVectors, readVector, readVectorJson, readVectorText } from '../helpers/vectors.js';

const T0 = Date.UTC(2025, 5, 1);
const DAY = 24 * 3600 * 1000;
const at = new Date(T0);

interface Node {
  readonly der: Uint8Array;
  readonly key: { publicKey: KeyObject; privateKey: KeyObject };
  readonly cn: string;
}

function p384(): { publicKey: KeyObject; privateKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'P-384' });
}

const CA_USAGE = KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign;

function makeRoot(cn = 'test-root'): Node {
  const key = p384();
  return {
    key,
    cn,
    der: issueCertificate({ subjectCommonName: cn, publicKey: key.publicKey, signingKey: key.privateKey, notBefore: new Date(T0 - DAY), notAfter: new Date(T0 + 365 * DAY), ca: true, keyUsage: CA_USAGE }),
  };
}

function issue(issuer: Node, cn: string, o: { ca: boolean; pathLen?: number; keyUsage?: number; notBefore?: number; notAfter?: number; extra?: { oid: string; critical: boolean; value: Uint8Array }[]; signingKey?: KeyObject }): Node {
  const key = p384();
  return {
    key,
    cn,
    der: issueCertificate({
      subjectCommonName: cn,
      publicKey: key.publicKey,
      signingKey: o.signingKey ?? issuer.key.privateKey,
      issuerCommonName: issuer.cn,
      issuerPublicKey: issuer.key.publicKey,
      notBefore: new Date(o.notBefore ?? T0 - DAY),
      notAfter: new Date(o.notAfter ?? T0 + 30 * DAY),
      ca: o.ca,
      ...(o.pathLen === undefined ? {} : { pathLen: o.pathLen }),
      keyUsage: o.keyUsage ?? (o.ca ? CA_USAGE : KeyUsageFlags.digitalSignature),
      ...(o.extra === undefined ? {} : { extraExtensions: o.extra }),
    }),
  };
}

function expectFail(r: ChainResult, code: string, index?: number): void {
  expect(r.ok, JSON.stringify(r)).toBe(false);
  if (r.ok) return;
  expect(r.code).toBe(code);
  if (index !== undefined) expect(r.index).toBe(index);
}

describe('generated chains', () => {
  const root = makeRoot();
  const inter = issue(root, 'test-intermediate', { ca: true, pathLen: 0 });
  const leaf = issue(inter, 'test-leaf', { ca: false });

  it('a well-formed chain verifies, with or without the root presented', () => {
    const presented = verifyCertificateChain({ leaf: leaf.der, intermediates: [inter.der], presentedRoot: root.der, trustedRoots: [root.der], at });
    expect(presented.ok).toBe(true);
    const pinned = verifyCertificateChain({ leaf: derToPem(leaf.der), intermediates: [derToPem(inter.der)], trustedRoots: [derToPem(root.der)], at });
    expect(pinned.ok).toBe(true);
    if (pinned.ok) expect(pinned.certificates.map((c) => c.role)).toEqual(['root', 'intermediate', 'leaf']);
  });

  it('an untrusted root is ROOT_UNTRUSTED', () => {
    const other = makeRoot('other-root');
    expectFail(verifyCertificateChain({ leaf: leaf.der, intermediates: [inter.der], presentedRoot: root.der, trustedRoots: [other.der], at }), 'ROOT_UNTRUSTED', 0);
    expectFail(verifyCertificateChain({ leaf: leaf.der, intermediates: [inter.der], trustedRoots: [other.der], at }), 'ROOT_UNTRUSTED', 0);
    // A look-alike root with the same name but another key is still untrusted.
    const twin = makeRoot('test-root');
    expectFail(verifyCertificateChain({ leaf: leaf.der, intermediates: [inter.der], presentedRoot: twin.der, trustedRoots: [root.der], at }), 'ROOT_UNTRUSTED');
    expectFail(verifyCertificateChain({ leaf: leaf.der, intermediates: [inter.der], trustedRoots: [twin.der], at }), 'ROOT_UNTRUSTED');
  });

  it('a certificate signed by the wrong key is CERT_CHAIN_INVALID', () => {
    const forged = issue(inter, 'forged-leaf', { ca: false, signingKey: p384().privateKey });
    expectFail(verifyCertificateChain({ leaf: forged.der, intermediates: [inter.der], trustedRoots: [root.der], at }), 'CERT_CHAIN_INVALID', 2);
  });

  it('intermediates out of order or missing are rejected', () => {
    const inter2 = issue(inter, 'second-intermediate', { ca: true });
    const leaf2 = issue(inter2, 'leaf2', { ca: false });
    const okWithPathLen = verifyCertificateChain({ leaf: leaf2.der, intermediates: [inter.der, inter2.der], trustedRoots: [root.der], at });
    // inter has pathLen 0 but another CA sits below it.
    expectFail(okWithPathLen, 'CERT_CHAIN_INVALID', 1);
    const root2 = makeRoot('r2');
    const a = issue(root2, 'a', { ca: true, pathLen: 1 });
    const b = issue(a, 'b', { ca: true, pathLen: 0 });
    const l = issue(b, 'l', { ca: false });
    expect(verifyCertificateChain({ leaf: l.der, intermediates: [a.der, b.der], trustedRoots: [root2.der], at }).ok).toBe(true);
    expect(verifyCertificateChain({ leaf: l.der, intermediates: [b.der, a.der], trustedRoots: [root2.der], at }).ok).toBe(false);
    expect(verifyCertificateChain({ leaf: l.der, intermediates: [b.der], trustedRoots: [root2.der], at }).ok).toBe(false);
  });

  it('an issuer that is not a CA, or lacks keyCertSign, is rejected', () => {
    const notCa = issue(root, 'not-ca', { ca: false, keyUsage: CA_USAGE | KeyUsageFlags.digitalSignature });
    const l1 = issue(notCa, 'l1', { ca: false });
    expectFail(verifyCertificateChain({ leaf: l1.der, intermediates: [notCa.der], trustedRoots: [root.der], at }), 'CERT_CHAIN_INVALID', 1);
    const noCertSign = issue(root, 'no-certsign', { ca: true, keyUsage: KeyUsageFlags.digitalSignature | KeyUsageFlags.cRLSign });
    const l2 = issue(noCertSign, 'l2', { ca: false });
    expectFail(verifyCertificateChain({ leaf: l2.der, intermediates: [noCertSign.der], trustedRoots: [root.der], at }), 'CERT_CHAIN_INVALID', 1);
  });

  it('a CA leaf, or a leaf without digitalSignature, is rejected', () => {
    const caLeaf = issue(inter, 'ca-leaf', { ca: true });
    expectFail(verifyCertificateChain({ leaf: caLeaf.der, intermediates: [inter.der], trustedRoots: [root.der], at }), 'CERT_CHAIN_INVALID', 2);
    const encLeaf = issue(inter, 'enc-leaf', { ca: false, keyUsage: KeyUsageFlags.keyEncipherment });
    expectFail(verifyCertificateChain({ leaf: encLeaf.der, intermediates: [inter.der], trustedRoots: [root.der], at }), 'CERT_CHAIN_INVALID', 2);
  });

  it('an unknown critical extension is rejected; an unknown non-critical one is accepted', () => {
    const value = Uint8Array.of(0x05, 0x00);
    const crit = issue(inter, 'crit', { ca: false, extra: [{ oid: '1.3.6.1.4.1.99999.1', critical: true, value }] });
    expectFail(verifyCertificateChain({ leaf: crit.der, intermediates: [inter.der], trustedRoots: [root.der], at }), 'CERT_CHAIN_INVALID', 2);
    const nonCrit = issue(inter, 'noncrit', { ca: false, extra: [{ oid: '1.3.6.1.4.1.99999.1', critical: false, value }] });
    expect(verifyCertificateChain({ leaf: nonCrit.der, intermediates: [inter.der], trustedRoots: [root.der], at }).ok).toBe(true);
  });

  it('validity is checked for every certificate: CERT_EXPIRED', () => {
    const early = issue(inter, 'future', { ca: false, notBefore: T0 + DAY, notAfter: T0 + 2 * DAY });
    expectFail(verifyCertificateChain({ leaf: early.der, intermediates: [inter.der], trustedRoots: [root.der], at }), 'CERT_EXPIRED', 2);
    expectFail(verifyCertificateChain({ leaf: leaf.der, intermediates: [inter.der], trustedRoots: [root.der], at: new Date(T0 + 31 * DAY) }), 'CERT_EXPIRED');
    expectFail(verifyCertificateChain({ leaf: leaf.der, intermediates: [inter.der], trustedRoots: [root.der], at: new Date(T0 - 2 * DAY) }), 'CERT_EXPIRED', 0);
    // Boundaries are inclusive (RFC 5280 4.1.2.5).
    const p = parseCertificate(leaf.der);
    expect(verifyCertificateChain({ leaf: leaf.der, intermediates: [inter.der], trustedRoots: [root.der], at: p.notAfter }).ok).toBe(true);
    expectFail(verifyCertificateChain({ leaf: leaf.der, intermediates: [inter.der], trustedRoots: [root.der], at: new Date(p.notAfter.getTime() + 1) }), 'CERT_EXPIRED');
  });

  it('limits: certificate size and chain length', () => {
    const biggest = Math.max(leaf.der.byteLength, inter.der.byteLength);
    expect(verifyCertificateChain({ leaf: leaf.der, intermediates: [inter.der], trustedRoots: [root.der], at, maxCertificateBytes: biggest }).ok).toBe(true);
    expectFail(verifyCertificateChain({ leaf: leaf.der, intermediates: [inter.der], trustedRoots: [root.der], at, maxCertificateBytes: biggest - 1 }), 'CERT_CHAIN_INVALID');
    expectFail(verifyCertificateChain({ leaf: leaf.der, intermediates: [inter.der], trustedRoots: [root.der], at, maxChainLength: 2 }), 'CERT_CHAIN_INVALID');
    expect(verifyCertificateChain({ leaf: leaf.der, intermediates: [inter.der], trustedRoots: [root.der], at, maxChainLength: 3 }).ok).toBe(true);
  });

  it('rejects trailing bytes, truncation and junk in DER and PEM', () => {
    const trailing = new Uint8Array(leaf.der.byteLength + 1);
    trailing.set(leaf.der);
    expect(() => parseCertificate(trailing)).toThrow(/trailing|length/);
    expect(() => parseCertificate(leaf.der.subarray(0, leaf.der.byteLength - 1))).toThrow();
    expectFail(verifyCertificateChain({ leaf: trailing, intermediates: [inter.der], trustedRoots: [root.der], at }), 'CERT_CHAIN_INVALID');
    expect(() => pemToDerList('no pem here')).toThrow();
    const pem = derToPem(leaf.der);
    expect(() => pemToDerList(pem.replace('MII', 'MI*I'))).toThrow();
    expect(pemToDerList(pem + derToPem(inter.der)).length).toBe(2);
    expect(() => parseCertificate(pem + derToPem(inter.der))).toThrow(/one PEM/);
  });

  it('a flipped bit anywhere in an intermediate is rejected (sampled)', () => {
    for (let i = 0; i < inter.der.byteLength; i += 5) {
      const bad = Uint8Array.from(inter.der);
      bad[i] = (bad[i] ?? 0) ^ (1 << (i % 8));
      const r = verifyCertificateChain({ leaf: leaf.der, intermediates: [bad], trustedRoots: [root.der], at });
      expect(r.ok, `byte ${i}`).toBe(false);
    }
  });

  it('does not mutate caller buffers', () => {
    const copy = Uint8Array.from(leaf.der);
    verifyCertificateChain({ leaf: copy, intermediates: [inter.der], trustedRoots: [root.der], at });
    expect(copy).toEqual(leaf.der);
  });

  it('refuses to run without a trusted root', () => {
    expect(() => verifyCertificateChain({ leaf: leaf.der, intermediates: [], trustedRoots: [], at })).toThrow(/trusted root/);
  });
});

describeWithVectors(['sev-snp', 'nitro'], 'real chains', () => {
  it('AMD Milan ARK -> ASK -> VCEK (RSA-PSS SHA-384) verifies and is pinned', () => {
    const ark = readVectorText('sev-snp/amd_milan_ark.pem');
    const ask = readVectorText('sev-snp/amd_milan_ask.pem');
    const vcek = readVector('sev-snp/snp_virtee_milan_vcek.der');
    const when = new Date('2024-01-01T00:00:00Z');
    const r = verifyCertificateChain({ leaf: vcek, intermediates: [ask], presentedRoot: ark, trustedRoots: [ark], at: when });
    expect(r.ok, JSON.stringify(r)).toBe(true);
    expect(verifyCertificateChain({ leaf: vcek, intermediates: [ask], trustedRoots: [ark], at: when }).ok).toBe(true);
    // Another product's ARK is not this chain's root.
    const genoa = readVectorText('sev-snp/amd_genoa_ark.pem');
    expectFail(verifyCertificateChain({ leaf: vcek, intermediates: [ask], trustedRoots: [genoa], at: when }), 'ROOT_UNTRUSTED');
    expectFail(verifyCertificateChain({ leaf: vcek, intermediates: [ask], trustedRoots: [ark], at: new Date('2031-01-01T00:00:00Z') }), 'CERT_EXPIRED');
    // A flipped bit in the VCEK's signature.
    const bad = Uint8Array.from(vcek);
    bad[bad.byteLength - 3] = (bad[bad.byteLength - 3] ?? 0) ^ 0x10;
    expectFail(verifyCertificateChain({ leaf: bad, intermediates: [ask], trustedRoots: [ark], at: when }), 'CERT_CHAIN_INVALID');
  });

  it('AWS Nitro chain: a flipped bit in any certificate is rejected (sampled over every certificate)', () => {
    const meta = readVectorJson<{ timestamp_ms: number }>('nitro/nitro_base_nov2024.json');
    const doc = parseNitroDocument(decodeCoseSign1(readVector('nitro/nitro_base_nov2024.cbor')).payload);
    const when = new Date(meta.timestamp_ms);
    const [root, ...intermediates] = doc.cabundle;
    if (root === undefined) throw new Error('no root');
    const base = { leaf: doc.certificate, intermediates, presentedRoot: root, trustedRoots: [awsNitroRootDer()], at: when };
    expect(verifyCertificateChain(base).ok).toBe(true);
    const certs = [root, ...intermediates, doc.certificate];
    let checked = 0;
    certs.forEach((cert, ci) => {
      for (let i = ci; i < cert.byteLength; i += 9) {
        const bad = Uint8Array.from(cert);
        bad[i] = (bad[i] ?? 0) ^ (1 << ((i + ci) % 8));
        const all = certs.map((c, k) => (k === ci ? bad : c));
        const [r0, ...rest] = all;
        const leafCert = rest.pop();
        if (r0 === undefined || leafCert === undefined) throw new Error('shape');
        const r = verifyCertificateChain({ ...base, presentedRoot: r0, intermediates: rest, leaf: leafCert });
        expect(r.ok, `certificate ${ci} byte ${i}`).toBe(false);
        checked++;
      }
    });
    expect(checked).toBeGreaterThan(300);
  });
});
