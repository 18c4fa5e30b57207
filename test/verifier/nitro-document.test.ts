/**
 * CBOR in evidence, the COSE_Sign1 envelope and the attestation document parser:
 * hand-built malformed inputs, one rule per case, and every size limit hit.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CborTagged, encodeCbor } from '../../src/core/cbor.js';
import type { CborKey, CborValue } from '../../src/core/cbor.js';
import { checkEs384Header, decodeCoseSign1, decodeEvidenceCbor } from '../../src/verifier/nitro/cose.js';
import { parseNitroDocument } from '../../src/verifier/nitro/document.js';
import { verifyNitroDocument } from '../../src/verifier/nitro/verify.js';
import { createSimulatedAttester } from '../../src/attester/simulated/attester.js';
import { hex } from '../helpers/bytes.js';
import { codeOf as code, NO_THROW } from '../helpers/errors.js';

describe('CBOR in evidence (the codec itself: test/core/cbor.test.ts)', () => {
  it('reads NSM output leniently where the NSM may differ: indefinite maps, any key order, long heads', () => {
    expect(decodeEvidenceCbor(hex('bf 61 61 01 ff'), {})).toEqual(new Map([['a', 1]]));
    expect(decodeEvidenceCbor(hex('9f 01 02 ff'), {})).toEqual([1, 2]);
    expect(decodeEvidenceCbor(hex('a2 61 62 01 61 61 02'), {})).toEqual(new Map([['b', 1], ['a', 2]]));
    expect(decodeEvidenceCbor(hex('18 01'), {})).toBe(1);
  });

  it('a malformed encoding is EVIDENCE_MALFORMED, a limit is LIMIT_EXCEEDED', () => {
    const cases: [string, string][] = [
      ['trailing byte', '01 00'],
      ['truncated', '42 ab'],
      ['float', 'fb 3f f0 00 00 00 00 00 00'],
      ['undefined', 'f7'],
      ['indefinite byte string', '5f 41 00 ff'],
      ['duplicate map key', 'a2 61 61 01 61 61 02'],
      ['map key without value', 'bf 61 61 ff'],
      ['tag outside the envelope', 'd2 80'],
    ];
    for (const [name, bytes] of cases) expect(code(() => decodeEvidenceCbor(hex(bytes), {})), name).toBe('EVIDENCE_MALFORMED');
    expect(code(() => decodeEvidenceCbor(hex('81'.repeat(10) + '00'), { maxDepth: 8 }))).toBe('LIMIT_EXCEEDED');
    expect(code(() => decodeEvidenceCbor(encodeCbor(Array.from({ length: 100 }, (_, i) => i)), { maxItems: 100 }))).toBe('LIMIT_EXCEEDED');
    // Through the document parser too: a payload with a trailing byte.
    expect(code(() => parseNitroDocument(hex('a0 00')))).toBe('EVIDENCE_MALFORMED');
  });
});

describe('COSE_Sign1 envelope', () => {
  const prot = encodeCbor(new Map([[1, -35]]));
  const sig = new Uint8Array(96);
  const env = (items: CborValue[]): Uint8Array => encodeCbor(items);

  it('accepts untagged and tag 18, rejects other shapes', () => {
    expect(decodeCoseSign1(env([prot, new Map(), hex('a0'), sig])).tagged).toBe(false);
    expect(decodeCoseSign1(encodeCbor(new CborTagged(18, [prot, new Map(), hex('a0'), sig]))).tagged).toBe(true);
    expect(code(() => decodeCoseSign1(encodeCbor(new CborTagged(98, [prot, new Map(), hex('a0'), sig]))))).toBe('EVIDENCE_MALFORMED');
    expect(code(() => decodeCoseSign1(env([prot, new Map(), hex('a0')])))).toBe('EVIDENCE_MALFORMED');
    expect(code(() => decodeCoseSign1(env([prot, new Map(), null, sig])))).toBe('EVIDENCE_MALFORMED'); // detached payload
    expect(code(() => decodeCoseSign1(env([new Map([[1, -35]]), new Map(), hex('a0'), sig])))).toBe('EVIDENCE_MALFORMED');
    expect(code(() => decodeCoseSign1(env([prot, new Map([[4, hex('01')]]), hex('a0'), sig])))).toBe('EVIDENCE_MALFORMED');
  });

  it('the envelope is read in deterministic form (definite lengths, shortest heads); tag 18 is the one benign acceptance', () => {
    const good = env([prot, new Map(), hex('a0'), sig]);
    const b = Buffer.from(good);
    expect(b.subarray(0, 9).toString('hex')).toBe('8444a1013822a041a0'); // array(4), bstr(4) a1 01 38 22, {}, bstr(1) a0, ...
    expect(code(() => decodeCoseSign1(good))).toBe(NO_THROW);
    const items = b.subarray(1); // the four items after the array head 84
    const cases: [string, Buffer][] = [
      ['indefinite outer array', Buffer.concat([hex('9f'), items, hex('ff')])],
      ['non-shortest outer array head', Buffer.concat([hex('98 04'), items])],
      ['non-shortest protected bstr head', Buffer.concat([hex('84 58 04'), prot, items.subarray(1 + prot.byteLength)])],
      ['indefinite unprotected map', Buffer.concat([hex('84 44'), prot, hex('bf ff'), items.subarray(1 + prot.byteLength + 1)])],
      ['non-shortest payload head', Buffer.concat([hex('84 44'), prot, hex('a0 58 01 a0 58 60'), sig])],
      ['non-shortest signature head', Buffer.concat([hex('84 44'), prot, hex('a0 41 a0 59 00 60'), sig])],
      ['tag 18 with a long head (d8 12)', Buffer.concat([hex('d8 12'), good])],
      ['tag 18 twice', Buffer.concat([hex('d2 d2'), good])],
    ];
    for (const [name, bytes] of cases) expect(code(() => decodeCoseSign1(new Uint8Array(bytes))), name).toBe('EVIDENCE_MALFORMED');
    // Benign and allowed by RFC 9052 section 2: the COSE_Sign1 tag 18 (d2) around the same array.
    expect(decodeCoseSign1(new Uint8Array(Buffer.concat([hex('d2'), good]))).tagged).toBe(true);
  });

  it('the protected header must be { 1: -35 } in deterministic form', () => {
    const check = (p: Uint8Array): string => code(() => checkEs384Header(decodeCoseSign1(env([p, new Map(), hex('a0'), sig]))));
    expect(check(hex('a1 01 38 22'))).toBe(NO_THROW);
    expect(check(hex('a1 18 01 38 22'))).toBe('EVIDENCE_MALFORMED'); // key 1 with a long head
    expect(check(hex('a1 01 39 00 22'))).toBe('EVIDENCE_MALFORMED'); // -35 with a long head
    expect(check(hex('bf 01 38 22 ff'))).toBe('EVIDENCE_MALFORMED'); // indefinite map
  });

  it('requires exactly alg ES384 and a 96-byte signature', () => {
    const check = (p: Uint8Array, s: Uint8Array): string => code(() => checkEs384Header(decodeCoseSign1(env([p, new Map(), hex('a0'), s]))));
    expect(check(prot, sig)).toBe(NO_THROW);
    expect(check(encodeCbor(new Map([[1, -7]])), sig)).toBe('EVIDENCE_MALFORMED'); // ES256
    expect(check(encodeCbor(new Map<CborKey, CborValue>([[1, -35], [4, hex('00')]])), sig)).toBe('EVIDENCE_MALFORMED');
    expect(check(encodeCbor(new Map()), sig)).toBe('EVIDENCE_MALFORMED');
    expect(check(prot, new Uint8Array(95))).toBe('EVIDENCE_MALFORMED');
    expect(check(prot, new Uint8Array(104))).toBe('EVIDENCE_MALFORMED');
  });
});

describe('attestation document parser', () => {
  const cert = new Uint8Array(600).fill(0x30);
  const pcr = new Uint8Array(48).fill(0xaa);
  function doc(over: Record<string, CborValue | undefined> = {}, drop: string[] = []): Uint8Array {
    const fields: [string, CborValue][] = [
      ['module_id', 'i-0123-enc0123'],
      ['digest', 'SHA384'],
      ['timestamp', 1_700_000_000_000],
      ['pcrs', new Map<CborKey, CborValue>([[0, pcr], [1, pcr], [2, pcr]])],
      ['certificate', cert],
      ['cabundle', [cert, cert]],
      ['public_key', null],
      ['user_data', null],
      ['nonce', null],
    ];
    const m = new Map<CborKey, CborValue>();
    for (const [k, v] of fields) if (!drop.includes(k)) m.set(k, k in over ? (over[k] as CborValue) : v);
    for (const [k, v] of Object.entries(over)) if (!m.has(k) && v !== undefined) m.set(k, v);
    return encodeCbor(m);
  }

  it('parses a well-formed document; absent and null optional fields are null', () => {
    const d = parseNitroDocument(doc());
    expect(d.moduleId).toBe('i-0123-enc0123');
    expect(d.pcrs.size).toBe(3);
    expect(d.publicKey).toBeNull();
    expect(parseNitroDocument(doc({}, ['public_key', 'user_data', 'nonce'])).nonce).toBeNull();
    expect(parseNitroDocument(doc({ user_data: new Uint8Array(0) })).userData).toEqual(new Uint8Array(0));
  });

  it('rejects wrong types, values and unknown keys', () => {
    const bad: [string, Uint8Array][] = [
      ['not a map', encodeCbor([1])],
      ['unknown key', doc({ extra: 1 })],
      ['integer key', encodeCbor(new Map<CborKey, CborValue>([[1, 1]]))],
      ['missing module_id', doc({}, ['module_id'])],
      ['empty module_id', doc({ module_id: '' })],
      ['module_id bytes', doc({ module_id: hex('01') })],
      ['digest SHA256', doc({ digest: 'SHA256' })],
      ['timestamp text', doc({ timestamp: '1' })],
      ['timestamp zero', doc({ timestamp: 0 })],
      ['timestamp negative', doc({ timestamp: -5 })],
      ['pcrs array', doc({ pcrs: [pcr] })],
      ['no pcrs', doc({ pcrs: new Map() })],
      ['pcr index 32', doc({ pcrs: new Map<CborKey, CborValue>([[32, pcr]]) })],
      ['pcr index text', doc({ pcrs: new Map<CborKey, CborValue>([['0', pcr]]) })],
      ['pcr 32 bytes', doc({ pcrs: new Map<CborKey, CborValue>([[0, new Uint8Array(32)]]) })],
      ['pcr 49 bytes', doc({ pcrs: new Map<CborKey, CborValue>([[0, new Uint8Array(49)]]) })],
      ['missing certificate', doc({}, ['certificate'])],
      ['empty certificate', doc({ certificate: new Uint8Array(0) })],
      ['cabundle empty', doc({ cabundle: [] })],
      ['cabundle entry text', doc({ cabundle: ['x'] })],
      ['public_key text', doc({ public_key: 'pem' })],
      ['nonce integer', doc({ nonce: 5 })],
      ['user_data false', doc({ user_data: false })],
    ];
    for (const [name, bytes] of bad) expect(code(() => parseNitroDocument(bytes)), name).toBe('EVIDENCE_MALFORMED');
  });

  it('enforces every size limit, default and configured', () => {
    const big = new Uint8Array(1025);
    expect(code(() => parseNitroDocument(doc({ public_key: big })))).toBe('EVIDENCE_MALFORMED');
    expect(code(() => parseNitroDocument(doc({ user_data: big })))).toBe('EVIDENCE_MALFORMED');
    expect(code(() => parseNitroDocument(doc({ nonce: big })))).toBe('EVIDENCE_MALFORMED');
    expect(code(() => parseNitroDocument(doc({ certificate: big })))).toBe('EVIDENCE_MALFORMED');
    const k = new Uint8Array(1024);
    expect(parseNitroDocument(doc({ public_key: k, user_data: k, nonce: k })).nonce?.byteLength).toBe(1024);
    expect(code(() => parseNitroDocument(doc({ public_key: new Uint8Array(33) }), { maxPublicKeyBytes: 32 }))).toBe('EVIDENCE_MALFORMED');
    expect(code(() => parseNitroDocument(doc({ user_data: new Uint8Array(65) }), { maxUserDataBytes: 64 }))).toBe('EVIDENCE_MALFORMED');
    expect(code(() => parseNitroDocument(doc({ nonce: new Uint8Array(65) }), { maxNonceBytes: 64 }))).toBe('EVIDENCE_MALFORMED');
    expect(code(() => parseNitroDocument(doc(), { maxCertificateBytes: 599 }))).toBe('EVIDENCE_MALFORMED');
    expect(code(() => parseNitroDocument(doc(), { maxCabundleLength: 1 }))).toBe('EVIDENCE_MALFORMED');
    expect(code(() => parseNitroDocument(doc(), { maxPcrs: 2 }))).toBe('EVIDENCE_MALFORMED');
    expect(code(() => parseNitroDocument(doc(), { maxModuleIdLength: 5 }))).toBe('EVIDENCE_MALFORMED');
    expect(code(() => parseNitroDocument(doc({ module_id: 'x'.repeat(257) })))).toBe('EVIDENCE_MALFORMED');
    expect(code(() => parseNitroDocument(doc({ cabundle: Array.from({ length: 9 }, () => cert) })))).toBe('EVIDENCE_MALFORMED');
  });

  it('accepts an indefinite-length payload map', () => {
    const definite = doc();
    // Re-frame the top-level map as indefinite length: 0xbf ... 0xff.
    expect(definite[0]).toBe(0xa9);
    const indefinite = new Uint8Array(definite.byteLength + 1);
    indefinite[0] = 0xbf;
    indefinite.set(definite.subarray(1), 1);
    indefinite[indefinite.byteLength - 1] = 0xff;
    expect(parseNitroDocument(indefinite).moduleId).toBe('i-0123-enc0123');
  });
});

describe('verifyNitroDocument: limits and options', () => {
  it('maxDocumentBytes (LIMIT_EXCEEDED at the decode step)', async () => {
    const sim = await createSimulatedAttester();
    const bundle = await sim.attest({ keyConfig: new Uint8Array([1]), hpkePublicKey: new Uint8Array(32) });
    const ok = verifyNitroDocument(bundle.evidence, { platform: 'simulated', trustedRoots: [sim.rootPem] });
    expect(ok.ok).toBe(true);
    const r = verifyNitroDocument(bundle.evidence, { platform: 'simulated', trustedRoots: [sim.rootPem], maxDocumentBytes: bundle.evidence.byteLength - 1 });
    expect(r.steps[0]).toMatchObject({ step: 'decode', ok: false, code: 'LIMIT_EXCEEDED' });
    expect(verifyNitroDocument(bundle.evidence, { platform: 'simulated', trustedRoots: [sim.rootPem], maxDocumentBytes: bundle.evidence.byteLength }).ok).toBe(true);
  });

  it('binding step compares public_key, user_data and nonce', async () => {
    const sim = await createSimulatedAttester();
    const keyConfig = new Uint8Array([1, 2, 3]);
    const pk = new Uint8Array(32).fill(4);
    const nonce = new Uint8Array(8).fill(5);
    const bundle = await sim.attest({ keyConfig, hpkePublicKey: pk, nonce });
    const opts = { platform: 'simulated' as const, trustedRoots: [sim.rootPem] };
    const userData = new Uint8Array(createHash('sha512').update(keyConfig).digest());
    expect(verifyNitroDocument(bundle.evidence, { ...opts, binding: { publicKey: pk, userData, nonce } }).ok).toBe(true);
    const wrongNonce = verifyNitroDocument(bundle.evidence, { ...opts, binding: { publicKey: pk, userData, nonce: new Uint8Array(8) } });
    expect(wrongNonce.steps.at(-1)).toMatchObject({ step: 'binding', ok: false, code: 'BINDING_MISMATCH' });
    expect(verifyNitroDocument(bundle.evidence, { ...opts, binding: { publicKey: new Uint8Array(32), userData, nonce } }).ok).toBe(false);
    expect(verifyNitroDocument(bundle.evidence, { ...opts, binding: { publicKey: pk, userData: new Uint8Array(64), nonce } }).ok).toBe(false);
    expect(verifyNitroDocument(bundle.evidence, { ...opts, binding: { nonce: null } }).ok).toBe(false);
  });

  it('rejects invalid options', () => {
    expect(code(() => verifyNitroDocument(new Uint8Array(1), { at: new Date(Number.NaN) }))).toBe('INVALID_ARGUMENT');
    expect(code(() => verifyNitroDocument(new Uint8Array(1), { maxAgeMs: -1 }))).toBe('INVALID_ARGUMENT');
    expect(code(() => verifyNitroDocument(new Uint8Array(1), { trustedRoots: [] }))).toBe('INVALID_ARGUMENT');
  });
});
