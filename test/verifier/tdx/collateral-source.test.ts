/**
 * TDX collateral obtained by the server (a file, Intel PCS or a PCCS), cached, refreshed before
 * it expires and attached to the evidence; and fetched by a client itself. Intel is never
 * reached: a loopback stand-in PCCS (test/helpers/pccs.ts) serves the real collateral bytes of
 * the vendored vectors over the real PCS v4 paths and headers.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeEach, expect, it } from 'vitest';
import { TdxCollateralSource } from '../../../src/verifier/tdx/collateral-source.js';
import { PcsCollateralFetcher } from '../../../src/verifier/tdx/collateral.js';
import { fetchTdxCollateral, pckPlatformOf } from '../../../src/verifier/tdx/pcs.js';
import { verifyTdxEvidence } from '../../../src/verifier/tdx/index.js';
import { tdxPolicy } from '../../../src/verifier/tdx/policy.js';
import { parseTdxQuote } from '../../../src/verifier/tdx/quote.js';
import { TdxConfigfsAttester } from '../../../src/attester/tsm/attesters.js';
import type { ConfigfsTsm } from '../../../src/attester/tsm/configfs.js';
import { reportDataFor } from '../../../src/protocol/binding.js';
import { codeOf } from '../../helpers/errors.js';
import { startStandinPccs } from '../../helpers/pccs.js';
import type { StandinPccs } from '../../helpers/pccs.js';
import { describeWithVectors, readVector, readVectorJson } from '../../helpers/vectors.js';

const work = mkdtempSync(path.join(tmpdir(), 'cloister-pccs-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function rejection(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (err) {
    return { code: (err as { code: string }).code, message: (err as Error).message };
  }
  throw new Error('expected a rejection');
}

describeWithVectors('tdx', 'TDX collateral from a (stand-in) PCCS', () => {
  const quote = (): Uint8Array => readVector('tdx/tdx_phala_v4_quote.bin');
  const collateralJson = (): Record<string, string> => readVectorJson<Record<string, string>>('tdx/tdx_phala_v4_collateral.json');
  // An hour before the sidecar's now_used: every part of this collateral is valid then.
  const NOW = (readVectorJson<{ now_used: number }>('tdx/tdx_phala_v4.json').now_used - 3600) * 1000;
  let pccs: StandinPccs;
  beforeEach(async () => {
    pccs = await startStandinPccs(collateralJson());
  });
  afterEach(async () => {
    await pccs.close();
  });

  it('reads FMSPC and CA type from the quote and fetches over the PCS v4 paths; the result verifies the quote', async () => {
    const q = quote();
    const { fmspc, ca } = pckPlatformOf(q);
    expect(fmspc).toBe('B0C06F000000');
    const fetched = await fetchTdxCollateral(q, { baseUrl: pccs.url });
    expect(pccs.requests.sort()).toEqual(
      [
        `/sgx/certification/v4/pckcrl?ca=${ca}&encoding=der`,
        `/tdx/certification/v4/tcb?fmspc=${fmspc}`,
        '/tdx/certification/v4/qe/identity',
        '/sgx/certification/v4/rootcacrl',
      ].sort(),
    );
    expect(fetched.nextUpdate.toISOString()).toBe('2025-07-19T10:00:35.000Z'); // the PCK CRL's nextUpdate, the earliest part
    const r = await verifyTdxEvidence(
      { platform: 'tdx', evidence: q, keyConfig: new Uint8Array(0), collateral: fetched.bytes },
      { policy: tdxPolicy({ mrTd: [parseTdxQuote(q).report.mrTd], rtmr0: [parseTdxQuote(q).report.rtmrs[0]], rtmr1: [parseTdxQuote(q).report.rtmrs[1]], rtmr2: [parseTdxQuote(q).report.rtmrs[2]] }), at: new Date(NOW), skipBinding: true },
    );
    expect(r.steps.filter((s) => !s.ok)).toEqual([]);
    expect(r.claims?.details['tcbStatus']).toBe('UpToDate');
  });

  it('bounds every response (maxResponseBytes) and names the URL of a failed request', async () => {
    const big = await rejection(fetchTdxCollateral(quote(), { baseUrl: pccs.url, maxResponseBytes: 1000 }));
    expect(big.code).toBe('LIMIT_EXCEEDED');
    expect(big.message).toMatch(/exceeds maxResponseBytes 1000/);
    pccs.failWith(503);
    const down = await rejection(fetchTdxCollateral(quote(), { baseUrl: pccs.url }));
    expect(down.code).toBe('CONNECTION_FAILED');
    expect(down.message).toMatch(new RegExp(`GET ${pccs.url}/.* returned 503`));
  });

  it('times out (timeoutMs) on a PCCS that accepts and never answers', async () => {
    const sockets = new Set<Socket>();
    const silent = createServer((sock) => {
      sockets.add(sock);
    });
    await new Promise<void>((done) => silent.listen(0, '127.0.0.1', done));
    const { port } = silent.address() as AddressInfo;
    try {
      const e = await rejection(fetchTdxCollateral(quote(), { baseUrl: `http://127.0.0.1:${port}`, timeoutMs: 200 }));
      expect(e.code).toBe('TIMEOUT');
      expect(e.message).toMatch(/no answer within 200 ms/);
    } finally {
      for (const sock of sockets) sock.destroy();
      await new Promise<void>((done) => silent.close(() => done()));
    }
  });

  it('the server source caches, refreshes after the interval and before expiry, and keeps valid collateral when a refresh fails', async () => {
    let now = NOW;
    const source = new TdxCollateralSource({ pcs: { baseUrl: pccs.url }, refreshIntervalMs: 60_000, refreshMarginMs: 10 * 60_000, now: () => now });
    const first = await source.get(quote());
    const n = pccs.requests.length;
    expect(n).toBe(4);
    expect(await source.get(quote())).toBe(first); // cached
    expect(pccs.requests.length).toBe(n);
    now += 61_000; // past the refresh interval: fetched again
    await source.get(quote());
    expect(pccs.requests.length).toBe(2 * n);
    // 10 minutes of margin before the PCK CRL's nextUpdate (10:00:35): a refresh is due; it fails
    now = Date.parse('2025-07-19T09:55:00Z');
    pccs.failWith(500);
    expect(await source.get(quote())).toEqual(first); // still valid: kept
    expect(source.lastError).toMatch(/returned 500/);
    // past its nextUpdate, with the PCCS still down: attestation fails, naming the cause
    now = Date.parse('2025-07-19T10:01:00Z');
    const e = await rejection(source.get(quote()));
    expect(e.code).toBe('ATTESTER_FAILED');
    expect(e.message).toMatch(/TDX collateral from PCS http:\/\/127\.0\.0\.1:\d+ is unavailable: GET .* returned 500/);
  });

  it('never hands out collateral that does not verify its own quote (here: another platform\'s collateral)', async () => {
    pccs.setCollateral(readVectorJson<Record<string, string>>('tdx/tdx_gotdxguest_spr_e4_collateral.json'));
    const source = new TdxCollateralSource({ pcs: { baseUrl: pccs.url }, now: () => NOW });
    const e = await rejection(source.get(quote()));
    expect(e.code).toBe('ATTESTER_FAILED');
  });

  it('reads collateral from a file (and refuses a file that does not verify the quote, naming it)', async () => {
    const good = path.join(work, 'collateral.json');
    writeFileSync(good, JSON.stringify(collateralJson()));
    const source = new TdxCollateralSource({ file: good, now: () => NOW });
    expect(JSON.parse(new TextDecoder().decode(await source.get(quote())))).toEqual(collateralJson());
    const missing = new TdxCollateralSource({ file: path.join(work, 'absent.json'), now: () => NOW });
    const e = await rejection(missing.get(quote()));
    expect(e.code).toBe('ATTESTER_FAILED');
    expect(e.message).toContain(path.join(work, 'absent.json'));
  });

  it('the TDX attester attaches what the source returns for its quote', async () => {
    const kc = Uint8Array.of(0xa0);
    const rd = reportDataFor(kc);
    // A structurally valid quote carrying our report_data: the real quote with its report_data replaced.
    const q = quote();
    const parsed = parseTdxQuote(q);
    const at = Buffer.from(q).indexOf(Buffer.from(parsed.report.reportData));
    const ours = Uint8Array.from(q);
    ours.set(rd, at);
    const tsm = { report: async () => ({ provider: 'tdx_guest', outblob: ours, generation: 1 }) } as unknown as ConfigfsTsm;
    const seen: Uint8Array[] = [];
    const attester = new TdxConfigfsAttester(tsm, {
      collateral: async (qb) => {
        seen.push(qb);
        return new TextEncoder().encode('{"x":1}');
      },
    });
    const bundle = await attester.attest({ keyConfig: kc, hpkePublicKey: new Uint8Array(32) });
    expect(seen[0]).toEqual(ours);
    expect(new TextDecoder().decode(bundle.collateral)).toBe('{"x":1}');
  });

  it('a client can fetch collateral itself and ignore what the evidence carries', async () => {
    const q = quote();
    const fetcher = new PcsCollateralFetcher({ baseUrl: pccs.url });
    const bundle = { platform: 'tdx' as const, evidence: q, keyConfig: new Uint8Array(0), collateral: new TextEncoder().encode('{"not":"collateral"}') };
    const opts = { policy: tdxPolicy({ mrTd: [parseTdxQuote(q).report.mrTd], rtmr0: [parseTdxQuote(q).report.rtmrs[0]], rtmr1: [parseTdxQuote(q).report.rtmrs[1]], rtmr2: [parseTdxQuote(q).report.rtmrs[2]] }), at: new Date(NOW), skipBinding: true, pcs: fetcher };
    const fromEvidence = await verifyTdxEvidence(bundle, opts);
    expect(fromEvidence.steps.find((s) => !s.ok)?.step).toBe('collateral');
    const own = await verifyTdxEvidence(bundle, { ...opts, ignoreEvidenceCollateral: true });
    expect(own.steps.filter((s) => !s.ok)).toEqual([]);
    expect(own.steps.find((s) => s.step === 'collateral')?.detail).toBe('fetched from PCS / PCCS');
  });

  it('cloister verify --pccs fetches the collateral itself', async () => {
    const { run } = await import('../../../src/cli/commands/verify.js');
    const qPath = path.join(work, 'quote.bin');
    writeFileSync(qPath, quote());
    const out: string[] = [];
    const err: string[] = [];
    // No policy and no key config here: an inspection (the collateral fetch is what is tested).
    const code = await run([qPath, '--platform', 'tdx', '--pccs', pccs.url, '--at', new Date(NOW).toISOString(), '--inspect'], { out: (t) => out.push(t), err: (t) => err.push(t) });
    expect(code, err.join('\n')).toBe(0);
    expect(out.join('\n')).toMatch(/ok +collateral +fetched from PCS \/ PCCS/);
    expect(pccs.requests.length).toBe(4);
  });

  it('serve flags: file and URL are alternatives; none attaches nothing', async () => {
    const { tdxCollateralFromArgs } = await import('../../../src/cli/commands/tdx-collateral-args.js');
    const args = (m: Record<string, string>) => (k: string): string | undefined => m[k];
    expect(tdxCollateralFromArgs(args({ 'tdx-collateral': 'none' }))).toBeUndefined();
    expect(tdxCollateralFromArgs(args({}))?.describe()).toBe('PCS https://api.trustedservices.intel.com');
    expect(tdxCollateralFromArgs(args({ 'tdx-pccs-url': pccs.url }))?.describe()).toBe(`PCS ${pccs.url}`);
    expect(codeOf(() => tdxCollateralFromArgs(args({ 'tdx-collateral': 'a.json', 'tdx-pccs-url': pccs.url })))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => tdxCollateralFromArgs(args({ 'tdx-collateral-refresh-minutes': '0' })))).toBe('INVALID_ARGUMENT');
  });
});
