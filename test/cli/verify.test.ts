/**
 * `cloister verify`: the command's run(argv) with captured output, against the real Nitro
 * vectors and a simulated document.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/commands/verify.js';
import { createSimulatedAttester } from '../../src/attester/simulated/attester.js';
import { describeWithVectors, readVectorJson, REPO_ROOT, vectorPath } from '../helpers/vectors.js';

const base = vectorPath('nitro/nitro_base_nov2024.cbor');
const baseAt = '2024-11-30T16:22:48Z';
const basePcr0 = 'ec74bfbe7f7445a6c7610e152935e028276f638042b74797b119648e13f7a3675796b721034c320f140ea001b41aeae2';

const work = mkdtempSync(path.join(tmpdir(), 'cloister-verify-test-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await run(argv, { out: (t) => out.push(t), err: (t) => err.push(t) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

function writeJson(name: string, value: unknown): string {
  const p = path.join(work, name);
  writeFileSync(p, JSON.stringify(value));
  return p;
}

describe('cloister verify: usage', () => {
  it('prints help and exits 0', async () => {
    const r = await cli(['--help']);
    expect(r.code).toBe(0);
    expect(r.out).toContain('--platform nitro');
  });

  it('rejects unknown options, missing file, missing or unknown platform, bad --at', async () => {
    expect((await cli(['x.cbor', '--platform', 'nitro', '--bogus'])).code).toBe(2);
    expect((await cli(['--platform', 'nitro'])).code).toBe(2);
    expect((await cli(['x.cbor'])).code).toBe(2);
    expect((await cli(['x.cbor', '--platform', 'sgx'])).code).toBe(2);
    expect((await cli(['x.cbor', '--platform', 'nitro', '--at', 'yesterday'])).code).toBe(2);
    expect((await cli(['x.cbor', '--platform', 'nitro', '--at', '2024-11-30T16:22:48'])).code).toBe(2);
  });

  it('fails with NOT_FOUND for a missing file', async () => {
    const r = await cli([path.join(work, 'absent.cbor'), '--platform', 'nitro']);
    expect(r.code).toBe(1);
    expect(r.err).toContain('NOT_FOUND');
  });
});

describeWithVectors('nitro', 'cloister verify: real Nitro document', () => {
  it('without a policy or a bound key config it is not VERIFIED: VERIFICATION_INCOMPLETE, exit 1', async () => {
    const r = await cli([base, '--platform', 'nitro', '--at', baseAt]);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^NOT VERIFIED \(incomplete/);
    expect(r.out).not.toMatch(/^VERIFIED/m);
    expect(r.err).toMatch(/VERIFICATION_INCOMPLETE: every check that ran passed, but NOT checked: policy: no --policy given.*; binding: no key config was bound/);
    expect(r.err).toContain('--inspect');
    const j = await cli([base, '--platform', 'nitro', '--at', baseAt, '--json']);
    expect(j.code).toBe(1);
    expect(JSON.parse(j.out)).toMatchObject({ ok: false, verified: false, checksPassed: true, inspect: false });
  });

  it('--inspect: inspects at the document time, prints the PCRs as JSON and what was NOT checked (exit 0)', async () => {
    const r = await cli([base, '--platform', 'nitro', '--at', baseAt, '--json', '--inspect']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out) as { ok: boolean; checksPassed: boolean; notChecked: string[]; platform: string; claims: { measurements: Record<string, string>; details: Record<string, unknown>; timestamp: string } };
    expect(report.ok).toBe(false);
    expect(report.checksPassed).toBe(true);
    expect(report.notChecked).toEqual([expect.stringMatching(/^policy: /), expect.stringMatching(/^binding: /)]);
    expect(report.platform).toBe('nitro');
    expect(report.claims.measurements['PCR0']).toBe(basePcr0);
    expect(report.claims.details['moduleId']).toBe('i-0de38b2b6853cc9e8-enc0193685e7fee7d85');
    expect(report.claims.timestamp).toBe('2024-11-30T16:22:48.387Z');
  });

  it('--inspect prints human-readable claims, and what was checked and NOT checked', async () => {
    const r = await cli([base, '--platform', 'nitro', '--at', baseAt, '--inspect']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^INSPECTED \(not verified/);
    expect(r.out).toMatch(/ok +signature/);
    expect(r.out).toContain('NOT checked  policy: no --policy given');
    expect(r.out).toContain('NOT checked  binding: no key config was bound');
    expect(r.out).toContain(`PCR0        ${basePcr0}`);
    expect(r.out).toContain('module id   i-0de38b2b6853cc9e8-enc0193685e7fee7d85');
    expect(r.err).toMatch(/inspection only: every check that ran passed; NOT checked: policy/);
  });

  it('--inspect still exits 1 when a check that ran fails', async () => {
    const r = await cli([base, '--platform', 'nitro', '--inspect']);
    expect(r.code).toBe(1);
    expect(r.err).toContain('CERT_EXPIRED');
  });

  it('exits non-zero without --at (the certificates expired long ago)', async () => {
    const r = await cli([base, '--platform', 'nitro']);
    expect(r.code).toBe(1);
    expect(r.err).toContain('CERT_EXPIRED');
  });

  it('exits non-zero for a copy with one flipped byte', async () => {
    const bytes = readFileSync(base);
    const tampered = Buffer.from(bytes);
    tampered[tampered.length - 10] = (tampered[tampered.length - 10] ?? 0) ^ 0xff; // inside the signature
    const p = path.join(work, 'tampered.cbor');
    writeFileSync(p, tampered);
    const r = await cli([p, '--platform', 'nitro', '--at', baseAt, '--json']);
    expect(r.code).toBe(1);
    expect(r.err).toContain('EVIDENCE_SIGNATURE_INVALID');
    expect((JSON.parse(r.out) as { ok: boolean }).ok).toBe(false);
  });

  it('exits non-zero with a root that is not AWS', async () => {
    const sim = await createSimulatedAttester();
    const rootPath = path.join(work, 'other-root.pem');
    await sim.writeRootPem(rootPath);
    const r = await cli([base, '--platform', 'nitro', '--at', baseAt, '--root', rootPath]);
    expect(r.code).toBe(1);
    expect(r.err).toContain('ROOT_UNTRUSTED');
  });

  it('applies a policy: matching PCRs pass, a different PCR fails with POLICY_MISMATCH', async () => {
    const meta = readVectorJson<{ pcrs_decoded: Record<string, string> }>('nitro/nitro_base_nov2024.json');
    const pcrs = { '0': meta.pcrs_decoded['0'], '1': meta.pcrs_decoded['1'], '2': meta.pcrs_decoded['2'] };
    const good = writeJson('good-policy.json', { version: 1, platforms: { nitro: { pcrs } } });
    // The policy is checked; no key config is bound: an inspection passes, a verification is incomplete.
    expect((await cli([base, '--platform', 'nitro', '--at', baseAt, '--policy', good, '--inspect'])).code).toBe(0);
    const incomplete = await cli([base, '--platform', 'nitro', '--at', baseAt, '--policy', good]);
    expect(incomplete.code).toBe(1);
    expect(incomplete.err).toMatch(/VERIFICATION_INCOMPLETE: .*NOT checked: binding: /);
    expect(incomplete.err).not.toMatch(/NOT checked: policy/);
    const bad = writeJson('bad-policy.json', { version: 1, platforms: { nitro: { pcrs: { ...pcrs, '8': 'ab'.repeat(48) } } } });
    const r = await cli([base, '--platform', 'nitro', '--at', baseAt, '--policy', bad]);
    expect(r.code).toBe(1);
    expect(r.err).toContain('POLICY_MISMATCH');
    const noNitro = writeJson('snp-only-policy.json', { version: 1, platforms: { simulated: { pcrs } } });
    expect((await cli([base, '--platform', 'nitro', '--at', baseAt, '--policy', noNitro])).err).toContain('POLICY_MISMATCH');
    const invalid = writeJson('invalid-policy.json', { version: 1, platforms: { nitro: { pcrs, extra: 1 } } });
    expect((await cli([base, '--platform', 'nitro', '--at', baseAt, '--policy', invalid])).err).toContain('POLICY_INVALID');
  });

  it('checks --nonce against the document', async () => {
    // The base document has a null nonce: any non-empty expected nonce must fail.
    const r = await cli([base, '--platform', 'nitro', '--at', baseAt, '--nonce', '00ff']);
    expect(r.code).toBe(1);
    expect(r.err).toContain('BINDING_MISMATCH');
    expect((await cli([base, '--platform', 'nitro', '--at', baseAt, '--nonce', 'zz'])).code).toBe(1);
  });
});

describe('cloister verify: simulated', () => {
  it('requires --root, verifies with it, and labels the result simulated', async () => {
    const sim = await createSimulatedAttester({ measurements: { codeDigest: new Uint8Array(32).fill(1) } });
    const nonce = new Uint8Array(16).fill(9);
    const bundle = await sim.attest({ keyConfig: new Uint8Array([1, 2, 3]), hpkePublicKey: new Uint8Array(32).fill(5), nonce });
    const doc = path.join(work, 'sim.cbor');
    writeFileSync(doc, bundle.evidence);
    const rootPath = path.join(work, 'sim-root.pem');
    await sim.writeRootPem(rootPath);

    expect((await cli([doc, '--platform', 'simulated'])).code).toBe(2);
    // A nonce alone binds no key config: only an inspection passes.
    const r = await cli([doc, '--platform', 'simulated', '--root', rootPath, '--nonce', Buffer.from(nonce).toString('hex'), '--json', '--inspect']);
    expect(r.code).toBe(0);
    expect((JSON.parse(r.out) as { notChecked: string[] }).notChecked[1]).toMatch(/binding: no key config was bound \(only the nonce was compared\)/);
    const report = JSON.parse(r.out) as { simulated: boolean; platform: string; claims: { measurements: Record<string, string> } };
    expect(report.simulated).toBe(true);
    expect(report.platform).toBe('simulated');
    expect(report.claims.measurements['PCR0']).toBe(Buffer.from(sim.pcrs.get(0) ?? []).toString('hex'));

    // The same document is not real Nitro: the AWS root rejects it.
    expect((await cli([doc, '--platform', 'nitro'])).err).toContain('ROOT_UNTRUSTED');

    const policy = writeJson('sim-policy.json', { version: 1, platforms: { simulated: sim.policySection() } });
    expect((await cli([doc, '--platform', 'simulated', '--root', rootPath, '--policy', policy, '--inspect'])).code).toBe(0);
    expect((await cli([doc, '--platform', 'simulated', '--root', rootPath, '--policy', policy])).code).toBe(1);
  });
});

describeWithVectors('nitro', 'cloister verify: a real debug-mode Nitro document', () => {
  const debugDoc = vectorPath('nitro/nitro_blocky_sept2024_debug.cbor');
  const at = (): string => new Date(readVectorJson<{ timestamp_ms: number }>('nitro/nitro_blocky_sept2024_debug.json').timestamp_ms).toISOString();

  it('is refused with DEBUG_MODE without any policy, also with --inspect (exit 1, never VERIFIED)', async () => {
    for (const extra of [[], ['--inspect'], ['--json']]) {
      const r = await cli([debugDoc, '--platform', 'nitro', '--at', at(), ...extra]);
      expect(r.code, extra.join(' ')).toBe(1);
      expect(r.err).toMatch(/DEBUG_MODE at step policy: PCR0 is all zero/);
      expect(r.out).not.toMatch(/^VERIFIED|^INSPECTED/m);
    }
  });
});

describeWithVectors('nitro', 'cloister verify: the README example', () => {
  it('runs as written and exits 0 (an inspection against docs/policies/nitro.json)', async () => {
    const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
    const m = /npx cloister verify (test\/vectors\/nitro\/\S+) ([^\n]*)\\\n\s+([^\n]*)\n/.exec(readme);
    expect(m).not.toBeNull();
    const argv = [m?.[1] ?? '', ...`${m?.[2] ?? ''} ${m?.[3] ?? ''}`.trim().split(/\s+/)].map((a) => (a.startsWith('test/') || a.startsWith('docs/') ? path.join(REPO_ROOT, a) : a));
    expect(argv).toContain('--inspect');
    const r = await cli(argv);
    expect(r.code, r.err).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ checksPassed: true, notChecked: [expect.stringMatching(/^binding: /)] });
  });
});

