/**
 * Real TDX quotes and collateral from test/vectors/tdx, each verified at the sidecar's
 * time (vendored: a fresh clone runs them).
 */
import { X509Certificate } from 'node:crypto';
import { expect, it } from 'vitest';
import {
  INTEL_SGX_ROOT_CA_FINGERPRINT256,
  INTEL_SGX_ROOT_CA_PEM,
  parseTdxQuote,
  tdxPolicy,
  verifyTdxEvidence,
  type TdxPolicy,
} from '../../../src/verifier/tdx/index.js';
import type { EvidenceBundle, VerificationReport } from '../../../src/core/types.js';
import { hex } from '../../helpers/bytes.js';
import { describeWithVectors, readVector, readVectorJson } from '../../helpers/vectors.js';

const read = (f: string): Uint8Array => readVector(`tdx/${f}`);
const sidecar = (f: string): Record<string, unknown> => readVectorJson<Record<string, unknown>>(`tdx/${f}`);
const step = (r: VerificationReport, name: string) => r.steps.find((s) => s.step === name);

function bundle(quote: Uint8Array, collateral?: Uint8Array): EvidenceBundle {
  return { platform: 'tdx', evidence: quote, keyConfig: new Uint8Array([0xa1, 0x01, 0x01]), ...(collateral ? { collateral } : {}) };
}

function policyFor(quote: Uint8Array, extra: Partial<TdxPolicy> = {}): TdxPolicy {
  const r = parseTdxQuote(quote).report;
  return tdxPolicy({ mrTd: [r.mrTd], rtmr0: [r.rtmrs[0]], rtmr1: [r.rtmrs[1]], rtmr2: [r.rtmrs[2]], ...extra });
}

/**
 * The sidecars' now_used lies a minute (outdated) or 15 minutes (v4) after the PCK CRL's
 * nextUpdate: dcap-qvl does not check CRL validity, our verifier does (src/verifier/tdx/crl.ts).
 * Verify an hour earlier, when every part of the collateral is valid.
 */
const BEFORE_CRL_EXPIRY_S = 3600;
const OUTDATED_NOW = new Date((1774003334 - BEFORE_CRL_EXPIRY_S) * 1000);
const verifyTime = (meta: Record<string, unknown>): Date => new Date((Number(meta['now_used']) - BEFORE_CRL_EXPIRY_S) * 1000);

describeWithVectors('tdx', 'TDX real vectors', () => {
  it('the bundled Intel root equals the vendored root PEM', () => {
    const shared = new X509Certificate(read('intel_sgx_root_ca.pem'));
    expect(new X509Certificate(INTEL_SGX_ROOT_CA_PEM).fingerprint256).toBe(shared.fingerprint256);
    expect(shared.fingerprint256).toBe(INTEL_SGX_ROOT_CA_FINGERPRINT256);
  });

  it('phala v4 quote: UpToDate, no advisories, MRTD / RTMR0 / report_data as in the sidecar', async () => {
    const meta = sidecar('tdx_phala_v4.json');
    const measured = meta['measured'] as Record<string, string>;
    const quote = read('tdx_phala_v4_quote.bin');
    const q = parseTdxQuote(quote);
    expect(q.version).toBe(4);
    const res = await verifyTdxEvidence(bundle(quote, read('tdx_phala_v4_collateral.json')), {
      policy: policyFor(quote, { rtmr0: [hex(measured['rtmr0'] ?? '')] }),
      at: verifyTime(meta),
      expectedReportData: hex(measured['report_data'] ?? ''),
    });
    expect(res.steps.map((s) => [s.step, s.ok])).toEqual([
      ['decode', true],
      ['collateral', true],
      ['quote', true],
      ['tcb-status', true],
      ['policy', true],
      ['binding', true],
    ]);
    expect(res.ok).toBe(true);
    expect(res.claims?.measurements['MRTD']).toBe(measured['mr_td']);
    expect(res.claims?.details['tcbStatus']).toBe('UpToDate');
    expect(res.claims?.details['advisoryIds']).toEqual([]);
  });

  it('a byte changed in the root certificate embedded in the quote fails ROOT_UNTRUSTED (dcap-qvl alone ignores that root)', async () => {
    const meta = sidecar('tdx_phala_v4.json');
    const quote = read('tdx_phala_v4_quote.bin');
    const opts = { policy: policyFor(quote), collateral: read('tdx_phala_v4_collateral.json'), at: verifyTime(meta), skipBinding: true };
    expect((await verifyTdxEvidence(bundle(quote), opts)).ok).toBe(true);
    // The third PEM block of the certification data is the presented root.
    const text = Buffer.from(quote).toString('latin1');
    const begin = '-----BEGIN CERTIFICATE-----';
    const third = text.indexOf(begin, text.indexOf(begin, text.indexOf(begin) + 1) + 1);
    expect(third).toBeGreaterThan(0);
    const end = text.indexOf('-----END CERTIFICATE-----', third);
    for (const at of [third + begin.length + 40, Math.floor((third + end) / 2), end - 20]) {
      const tampered = Uint8Array.from(quote);
      const ch = String.fromCharCode(tampered[at] ?? 0);
      expect(ch, `offset ${at}`).toMatch(/[A-Za-z0-9+/]/);
      tampered[at] = (ch === 'A' ? 'B' : 'A').charCodeAt(0); // still canonical base64 PEM, different DER
      const res = await verifyTdxEvidence(bundle(tampered), opts);
      const failed = res.steps.find((st) => !st.ok);
      expect(res.ok).toBe(false);
      expect(failed).toMatchObject({ step: 'quote', code: 'ROOT_UNTRUSTED' });
      expect(failed?.detail).toMatch(/the quote presents a root with DER SHA-256 [0-9a-f]{64}, not the pinned Intel SGX Root CA/);
    }
  });

  it('the CRLs must verify and be current: dcap-qvl alone accepts a swapped, garbled or expired CRL', async () => {
    const meta = sidecar('tdx_phala_v4.json');
    const quote = read('tdx_phala_v4_quote.bin');
    const coll = JSON.parse(new TextDecoder().decode(read('tdx_phala_v4_collateral.json'))) as Record<string, string>;
    const run = async (c: Record<string, string>, at = verifyTime(meta)): Promise<{ code?: string; detail?: string }> => {
      const res = await verifyTdxEvidence(bundle(quote, new TextEncoder().encode(JSON.stringify(c))), { policy: policyFor(quote), at, skipBinding: true });
      const failed = res.steps.find((st) => !st.ok);
      return failed === undefined ? {} : { ...(failed.code === undefined ? {} : { code: failed.code }), ...(failed.detail === undefined ? {} : { detail: failed.detail }) };
    };
    expect(await run(coll)).toEqual({});
    // the root CA CRL in place of the PCK CRL: wrong issuer
    expect(await run({ ...coll, pck_crl: coll['root_ca_crl'] ?? '' })).toMatchObject({ code: 'CERT_CHAIN_INVALID', detail: expect.stringMatching(/pck_crl: issuer is not/) });
    // one byte of the PCK CRL's revocation list changed: signature
    const pck = coll['pck_crl'] ?? '';
    const mid = Math.floor(pck.length / 4) * 2;
    const garbled = pck.slice(0, mid) + ((parseInt(pck.slice(mid, mid + 2), 16) ^ 1).toString(16).padStart(2, '0')) + pck.slice(mid + 2);
    expect(await run({ ...coll, pck_crl: garbled })).toMatchObject({ code: expect.stringMatching(/CERT_CHAIN_INVALID|EVIDENCE_MALFORMED/) });
    // at the sidecar's now_used the PCK CRL is 15 minutes past its nextUpdate
    expect(await run(coll, new Date(Number(meta['now_used']) * 1000))).toMatchObject({ code: 'CERT_EXPIRED', detail: expect.stringMatching(/pck_crl: expired at 2025-07-19T10:00:35/) });
  });

  it('phala v4 quote fails the default key-config binding and a foreign MRTD', async () => {
    const meta = sidecar('tdx_phala_v4.json');
    const quote = read('tdx_phala_v4_quote.bin');
    const res = await verifyTdxEvidence(bundle(quote), {
      policy: tdxPolicy({ mrTd: [new Uint8Array(48)], rtmr0: [new Uint8Array(48)], rtmr1: [new Uint8Array(48)], rtmr2: [new Uint8Array(48)] }),
      collateral: read('tdx_phala_v4_collateral.json'),
      at: verifyTime(meta),
    });
    expect(res.ok).toBe(false);
    expect(step(res, 'policy')).toMatchObject({ ok: false, code: 'POLICY_MISMATCH' });
    expect(step(res, 'binding')).toMatchObject({ ok: false, code: 'BINDING_MISMATCH' });
  });

  it('phala v4 collateral is rejected after it expires', async () => {
    const quote = read('tdx_phala_v4_quote.bin');
    const res = await verifyTdxEvidence(bundle(quote, read('tdx_phala_v4_collateral.json')), {
      policy: policyFor(quote),
      at: new Date('2025-09-01T00:00:00Z'),
      skipBinding: true,
    });
    expect(step(res, 'quote')).toMatchObject({ ok: false, code: 'CERT_EXPIRED' });
  });

  it('phala outdated v5 quote fails: no matching TCB level', async () => {
    const quote = read('tdx_phala_outdated_quote.bin');
    expect(parseTdxQuote(quote).version).toBe(5);
    const res = await verifyTdxEvidence(bundle(quote, read('tdx_phala_outdated_collateral.json')), {
      policy: policyFor(quote, { acceptedTcbStatuses: ['UpToDate', 'OutOfDate'] }),
      at: OUTDATED_NOW,
      skipBinding: true,
    });
    expect(res.ok).toBe(false);
    expect(step(res, 'quote')).toMatchObject({ ok: false, code: 'TCB_STATUS_REJECTED' });
    expect(step(res, 'quote')?.detail).toMatch(/No matching TCB level/);
    expect(res.claims).toBeUndefined();
  });

  it('go-tdx-guest SPR E4 quote fails: its appended test text is rejected, and without it no TCB level matches', async () => {
    const raw = read('tdx_gotdxguest_spr_e4_quote.bin');
    const withJunk = await verifyTdxEvidence(bundle(raw, read('tdx_gotdxguest_spr_e4_collateral.json')), {
      policy: tdxPolicy({ mrTd: [new Uint8Array(48)], rtmr0: [new Uint8Array(48)], rtmr1: [new Uint8Array(48)], rtmr2: [new Uint8Array(48)] }),
      at: new Date('2023-07-01T01:00:00Z'),
      skipBinding: true,
    });
    expect(step(withJunk, 'decode')).toMatchObject({ ok: false, code: 'EVIDENCE_MALFORMED' });
    // go-tdx-guest appends "\nextra bytes(only for testing purpose)\n" (39 bytes) to the quote.
    const tail = new TextDecoder().decode(raw.subarray(raw.byteLength - 39));
    expect(tail).toContain('extra bytes');
    const quote = raw.subarray(0, raw.byteLength - 39);
    const res = await verifyTdxEvidence(bundle(quote, read('tdx_gotdxguest_spr_e4_collateral.json')), {
      policy: policyFor(quote),
      at: new Date('2023-07-01T01:00:00Z'),
      skipBinding: true,
    });
    expect(res.ok).toBe(false);
    expect(step(res, 'quote')).toMatchObject({ ok: false, code: 'TCB_STATUS_REJECTED' });
  });

  it('go-tdx-guest v5 quote with the phala outdated collateral at now_used: UpToDate', async () => {
    const meta = sidecar('tdx_gotdxguest_v5.json');
    const quote = read('tdx_gotdxguest_v5_quote.bin');
    expect(parseTdxQuote(quote).version).toBe(5);
    const res = await verifyTdxEvidence(bundle(quote), {
      policy: policyFor(quote),
      collateral: read('tdx_phala_outdated_collateral.json'),
      at: verifyTime(meta),
      expectedReportData: parseTdxQuote(quote).report.reportData,
    });
    expect(step(res, 'quote')?.ok).toBe(true);
    expect(res.claims?.details['tcbStatus']).toBe('UpToDate');
    expect(res.claims?.details['advisoryIds']).toEqual([]);
    expect(res.ok).toBe(true);
  });

  it('nearai v4 quote: OutOfDate with advisories; rejected by default, accepted only when named', async () => {
    const meta = sidecar('tdx_nearai.json');
    const measured = meta['measured'] as Record<string, string>;
    const quote = read('tdx_nearai_quote.bin');
    const opts = {
      collateral: read('tdx_phala_outdated_collateral.json'),
      at: OUTDATED_NOW,
      expectedReportData: hex(measured['report_data'] ?? ''),
    };
    const strict = await verifyTdxEvidence(bundle(quote), { ...opts, policy: policyFor(quote) });
    expect(strict.ok).toBe(false);
    expect(step(strict, 'tcb-status')).toMatchObject({ ok: false, code: 'TCB_STATUS_REJECTED' });
    expect(strict.claims?.details['tcbStatus']).toBe('OutOfDate');
    const advisories = strict.claims?.details['advisoryIds'] as string[];
    for (const id of ['INTEL-SA-01036', 'INTEL-SA-01079', 'INTEL-SA-01099', 'INTEL-SA-01103', 'INTEL-SA-01111']) {
      expect(advisories).toContain(id);
    }
    expect(step(strict, 'tcb-status')?.detail).toContain('INTEL-SA-01036');
    expect(strict.claims?.measurements['MRTD']).toBe(measured['mr_td']);

    const lenient = await verifyTdxEvidence(bundle(quote), { ...opts, policy: policyFor(quote, { acceptedTcbStatuses: ['UpToDate', 'OutOfDate'] }) });
    expect(lenient.ok).toBe(true);
  });

  it('a tampered quote body fails the signature', async () => {
    const meta = sidecar('tdx_phala_v4.json');
    const quote = read('tdx_phala_v4_quote.bin');
    const policy = policyFor(quote);
    const bad = quote.slice();
    const mrTdOffset = 48 + 16 + 48 + 48 + 8 + 8 + 8;
    bad[mrTdOffset] = (bad[mrTdOffset] ?? 0) ^ 1; // first byte of MRTD
    const res = await verifyTdxEvidence(bundle(bad, read('tdx_phala_v4_collateral.json')), {
      policy,
      at: verifyTime(meta),
      skipBinding: true,
    });
    expect(step(res, 'quote')).toMatchObject({ ok: false, code: 'EVIDENCE_SIGNATURE_INVALID' });
  });

  it('rejects trailing bytes, truncation and a wrong length prefix', () => {
    const quote = read('tdx_phala_v4_quote.bin');
    const exact = read('tdx_phala_outdated_quote.bin'); // no padding: ends with the signature data
    const trailing = new Uint8Array(exact.byteLength + 1);
    trailing.set(exact);
    trailing[exact.byteLength] = 0x41;
    expect(() => parseTdxQuote(trailing)).toThrow(expect.objectContaining({ code: 'EVIDENCE_MALFORMED' }));
    expect(() => parseTdxQuote(exact.subarray(0, exact.byteLength - 1))).toThrow(expect.objectContaining({ code: 'EVIDENCE_MALFORMED' }));
    const badLen = quote.slice();
    new DataView(badLen.buffer).setUint32(48 + 584, 0xffff, true);
    expect(() => parseTdxQuote(badLen)).toThrow(expect.objectContaining({ code: 'EVIDENCE_MALFORMED' }));
    expect(() => parseTdxQuote(quote, { maxQuoteBytes: 1024 })).toThrow(expect.objectContaining({ code: 'LIMIT_EXCEEDED' }));
    // Real v4 quotes carry 70 zero bytes of padding: tolerated up to the limit, never non-zero.
    expect(parseTdxQuote(quote).version).toBe(4);
    expect(() => parseTdxQuote(quote, { maxZeroPadding: 69 })).toThrow(expect.objectContaining({ code: 'EVIDENCE_MALFORMED' }));
    const junk = quote.slice();
    junk[junk.byteLength - 1] = 1;
    expect(() => parseTdxQuote(junk)).toThrow(expect.objectContaining({ code: 'EVIDENCE_MALFORMED' }));
    const v5 = read('tdx_phala_outdated_quote.bin').slice();
    new DataView(v5.buffer).setUint32(50, 600, true); // v5 body size
    expect(() => parseTdxQuote(v5)).toThrow(expect.objectContaining({ code: 'EVIDENCE_MALFORMED' }));
  });

  it('rejects collateral from the evidence with unknown keys or a bad shape', async () => {
    const quote = read('tdx_phala_v4_quote.bin');
    const c = sidecar('tdx_phala_v4_collateral.json');
    c['extra'] = 1;
    const res = await verifyTdxEvidence(bundle(quote, new TextEncoder().encode(JSON.stringify(c))), {
      policy: policyFor(quote),
      at: new Date((1752920162 - BEFORE_CRL_EXPIRY_S) * 1000),
      skipBinding: true,
    });
    expect(step(res, 'collateral')).toMatchObject({ ok: false, code: 'EVIDENCE_MALFORMED' });
    const none = await verifyTdxEvidence(bundle(quote), { policy: policyFor(quote), at: new Date((1752920162 - BEFORE_CRL_EXPIRY_S) * 1000), skipBinding: true });
    expect(step(none, 'collateral')).toMatchObject({ ok: false, code: 'NOT_FOUND' });
  });
});
