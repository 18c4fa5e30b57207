/**
 * Attestation errors name their cause (issue 11, section 5): POLICY_MISMATCH shows the actual
 * and the expected values (measurements are not secret), ROOT_UNTRUSTED names the pinned root
 * and the one found, by SHA-256.
 */
import { createHash } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { createSimulatedAttester } from '../../src/attester/simulated/attester.js';
import type { SimulatedAttester } from '../../src/attester/simulated/attester.js';
import { policyFromJson } from '../../src/verifier/policy.js';
import { verifyEvidence } from '../../src/verifier/verify.js';
import { verifySevSnpEvidence, sevSnpPolicy, parseSnpReport } from '../../src/verifier/sev-snp/index.js';
import { verifyTdxEvidence } from '../../src/verifier/tdx/index.js';
import { tdxPolicy } from '../../src/verifier/tdx/policy.js';
import { parseTdxQuote } from '../../src/verifier/tdx/quote.js';
import { encodeKeyConfig } from '../../src/protocol/key-config.js';
import type { VerificationReport } from '../../src/core/types.js';
import { describeWithVectors, readVector, readVectorJson } from '../helpers/vectors.js';

const T0 = Date.UTC(2026, 0, 15, 12, 0, 0);
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const digest = new Uint8Array(createHash('sha256').update('model').digest());
const kc = encodeKeyConfig({
  version: 1,
  keyId: 1,
  kemId: 0x20,
  kdfId: 1,
  aeadIds: [1],
  hpkePublicKey: new Uint8Array(32).fill(0x11),
  receiptPublicKey: new Uint8Array(32).fill(0x22),
  models: [{ name: 'm', task: 'text-classification', digest }],
  configDigest: new Uint8Array(32).fill(0x33),
  platform: 'simulated',
  notBefore: Math.floor(T0 / 1000) - 60,
  expiresAt: Math.floor(T0 / 1000) + 3600,
});

async function rejection(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (err) {
    return { code: (err as { code: string }).code, message: (err as Error).message };
  }
  throw new Error('expected a rejection');
}

function failed(r: VerificationReport): { code?: string; detail?: string } {
  const s = r.steps.find((x) => !x.ok);
  return { ...(s?.code === undefined ? {} : { code: s.code }), ...(s?.detail === undefined ? {} : { detail: s.detail }) };
}

describe('simulated / Nitro', () => {
  let sim: SimulatedAttester;
  let other: SimulatedAttester;
  beforeAll(async () => {
    sim = await createSimulatedAttester({ clock: () => T0 });
    other = await createSimulatedAttester({ clock: () => T0 });
  });
  const attest = (s: SimulatedAttester): ReturnType<SimulatedAttester['attest']> => s.attest({ keyConfig: kc, hpkePublicKey: new Uint8Array(32).fill(0x11) });

  it('POLICY_MISMATCH names each differing PCR with its actual and expected value', async () => {
    const section = sim.policySection();
    const actual = section.pcrs['0'] ?? '';
    const wanted = 'ab'.repeat(48);
    const policy = policyFromJson({ version: 1, platforms: { simulated: { ...section, pcrs: { ...section.pcrs, '0': wanted } } } });
    const e = await rejection(verifyEvidence(await attest(sim), { policy, trustedRoots: { simulated: [sim.rootPem] }, at: new Date(T0 + 1000) }));
    expect(e.code).toBe('POLICY_MISMATCH');
    expect(e.message).toContain(`PCR0 is ${actual}, the policy expects ${wanted}`);
  });

  it('POLICY_MISMATCH on a model digest names both digests', async () => {
    const wrong = 'cd'.repeat(32);
    const policy = policyFromJson({ version: 1, platforms: { simulated: sim.policySection() }, models: { m: wrong } });
    const e = await rejection(verifyEvidence(await attest(sim), { policy, trustedRoots: { simulated: [sim.rootPem] }, at: new Date(T0 + 1000) }));
    expect(e.code).toBe('POLICY_MISMATCH');
    expect(e.message).toContain(`model m digest is ${hex(digest)}; the policy expects ${wrong}`);
  });

  it('ROOT_UNTRUSTED names the trusted root and the presented one', async () => {
    const policy = policyFromJson({ version: 1, platforms: { simulated: other.policySection() } });
    const e = await rejection(verifyEvidence(await attest(other), { policy, trustedRoots: { simulated: [sim.rootPem] }, at: new Date(T0 + 1000) }));
    expect(e.code).toBe('ROOT_UNTRUSTED');
    expect(e.message).toContain(`sha256 ${other.rootSha256Hex}`);
    expect(e.message).toContain(`trusted: sha256 ${sim.rootSha256Hex}`);
  });

  it('ROOT_UNTRUSTED against a pinned rootSha256 names both digests', async () => {
    const policy = policyFromJson({ version: 1, platforms: { simulated: { ...other.policySection(), rootSha256: sim.rootSha256Hex } } });
    const e = await rejection(verifyEvidence(await attest(other), { policy, at: new Date(T0 + 1000) }));
    expect(e.code).toBe('ROOT_UNTRUSTED');
    expect(e.message).toContain(`the presented root has SHA-256 ${other.rootSha256Hex}; the pinned root SHA-256 is ${sim.rootSha256Hex}`);
  });
});

describeWithVectors(['sev-snp', 'tdx'], 'SEV-SNP and TDX', () => {
  it('SEV-SNP: the launch measurement, expected and actual', async () => {
    const report = readVector('sev-snp/snp_virtee_milan_report.bin');
    const actual = hex(parseSnpReport(report).measurement);
    const r = await verifySevSnpEvidence(
      { platform: 'sev-snp', evidence: report, keyConfig: new Uint8Array(0) },
      { policy: sevSnpPolicy({ measurements: [new Uint8Array(48).fill(7)] }), vcek: readVector('sev-snp/snp_virtee_milan_vcek.der'), at: new Date('2024-06-01T00:00:00Z'), skipBinding: true },
    );
    expect(failed(r)).toEqual({ code: 'POLICY_MISMATCH', detail: `launch measurement is ${actual}; the policy expects ${'07'.repeat(48)}` });
  });

  it('TDX: MRTD, expected and actual', async () => {
    const quote = readVector('tdx/tdx_phala_v4_quote.bin');
    const actual = hex(parseTdxQuote(quote).report.mrTd);
    const now = readVectorJson<{ now_used: number }>('tdx/tdx_phala_v4.json').now_used - 3600;
    const r = await verifyTdxEvidence(
      { platform: 'tdx', evidence: quote, keyConfig: new Uint8Array(0), collateral: readVector('tdx/tdx_phala_v4_collateral.json') },
      { policy: tdxPolicy({ mrTd: [new Uint8Array(48).fill(1), new Uint8Array(48).fill(2)], rtmr0: [new Uint8Array(48)], rtmr1: [new Uint8Array(48)], rtmr2: [new Uint8Array(48)] }), at: new Date(now * 1000), skipBinding: true },
    );
    expect(failed(r)).toEqual({ code: 'POLICY_MISMATCH', detail: `MRTD is ${actual}; the policy expects one of ${'01'.repeat(48)}, ${'02'.repeat(48)}` });
  });
});
