import { describe, expect, it } from 'vitest';
import { parseTdxCollateral, parseTdxPolicy, PcsCollateralFetcher } from '../../../src/verifier/tdx/index.js';

const H = 'cd'.repeat(48);
const COLLATERAL = {
  pck_crl_issuer_chain: 'pem',
  root_ca_crl: 'ab',
  pck_crl: 'cd',
  tcb_info_issuer_chain: 'pem',
  tcb_info: '{}',
  tcb_info_signature: 'ef',
  qe_identity_issuer_chain: 'pem',
  qe_identity: '{}',
  qe_identity_signature: '01',
};

describe('TDX policy parsing (fail closed)', () => {
  it('defaults to UpToDate only and no debug', () => {
    expect(parseTdxPolicy({ mrTd: [H], rtmr0: [H], rtmr1: [H], rtmr2: [H] })).toMatchObject({ allowDebug: false, acceptedTcbStatuses: ['UpToDate'] });
  });
  it.each([
    [{}, /mrTd is required/],
    [{ mrTd: [H], rtmr4: [H] }, /unknown key/],
    [{ mrTd: ['00'] }, /48 bytes/],
    [{ mrTd: [H] }, /rtmr0, rtmr1, rtmr2 are missing/],
    [{ mrTd: [H], acceptedTcbStatuses: ['Revoked'] }, /Revoked is never accepted/],
    [{ mrTd: [H], acceptedTcbStatuses: [] }, /non-empty/],
    [{ mrTd: [H], allowDebug: 1 }, /boolean/],
  ])('rejects %j', (section, msg) => {
    expect(() => parseTdxPolicy(section)).toThrow(msg);
    expect(() => parseTdxPolicy(section)).toThrow(expect.objectContaining({ code: 'POLICY_INVALID' }));
  });
});

describe('TDX collateral', () => {
  it('parses the dcap-qvl shape strictly and bounds its size', () => {
    const bytes = new TextEncoder().encode(JSON.stringify(COLLATERAL));
    expect(parseTdxCollateral(bytes).tcb_info).toBe('{}');
    expect(() => parseTdxCollateral(bytes, 10)).toThrow(expect.objectContaining({ code: 'LIMIT_EXCEEDED' }));
    expect(() => parseTdxCollateral({ ...COLLATERAL, pck_crl: 'xyz' })).toThrow(/hex/);
    expect(() => parseTdxCollateral({ ...COLLATERAL, qe_identity: undefined })).toThrow(/qe_identity/);
    expect(() => parseTdxCollateral(new Uint8Array([0xff]))).toThrow(expect.objectContaining({ code: 'EVIDENCE_MALFORMED' }));
  });
  it('PCS fetcher caches per platform and times out (injected, no network)', async () => {
    let calls = 0;
    const f = new PcsCollateralFetcher({
      fetchCollateral: () => {
        calls++;
        return Promise.resolve(COLLATERAL);
      },
    });
    const cert = new Uint8Array([1, 2, 3]);
    await f.fetch(new Uint8Array(10), cert);
    await f.fetch(new Uint8Array(10), cert);
    expect(calls).toBe(1);
    const slow = new PcsCollateralFetcher({ timeoutMs: 5, fetchCollateral: () => new Promise(() => undefined) });
    await expect(slow.fetch(new Uint8Array(10), cert)).rejects.toMatchObject({ code: 'TIMEOUT' });
  });
});
