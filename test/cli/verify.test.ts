/**
 * `cloister verify`: the command's run(argv) with captured output, against the real Nitro
 * vectors and a simulated document.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/commands/verify.js';
import { createSimulatedAttester } from '../../src/attestation/simulated/attester.js';
import { describeWithVectors, readVectorJson, vectorPath } from '../helpers/vectors.js';

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
  it('verifies at the document time and prints the PCRs as JSON', async () => {
    const r = await cli([base, '--platform', 'nitro', '--at', baseAt, '--json']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out) as { ok: boolean; platform: string; claims: { measurements: Record<string, string>; details: Record<string, unknown>; timestamp: string } };
    expect(report.ok).toBe(true);
    expect(report.platform).toBe('nitro');
    expect(report.claims.measurements['PCR0']).toBe(basePcr0);
    expect(report.claims.details['moduleId']).toBe('i-0de38b2b6853cc9e8-enc0193685e7fee7d85');
    expect(report.claims.timestamp).toBe('2024-11-30T16:22:48.387Z');
  });

  it('prints human-readable claims', async () => {
    const r = await cli([base, '--platform', 'nitro', '--at', baseAt]);
    expect(r.code).toBe(0);
    expect(r.out).toContain('VERIFIED');
    expect(r.out).toContain(`PCR0        ${basePcr0}`);
    expect(r.out).toContain('module id   i-0de38b2b6853cc9e8-enc0193685e7fee7d85');
    expect(r.err).toContain('no --policy given');
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
    expect((await cli([base, '--platform', 'nitro', '--at', baseAt, '--policy', good])).code).toBe(0);
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
    const r = await cli([doc, '--platform', 'simulated', '--root', rootPath, '--nonce', Buffer.from(nonce).toString('hex'), '--json']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out) as { simulated: boolean; platform: string; claims: { measurements: Record<string, string> } };
    expect(report.simulated).toBe(true);
    expect(report.platform).toBe('simulated');
    expect(report.claims.measurements['PCR0']).toBe(Buffer.from(sim.pcrs.get(0) ?? []).toString('hex'));

    // The same document is not real Nitro: the AWS root rejects it.
    expect((await cli([doc, '--platform', 'nitro'])).err).toContain('ROOT_UNTRUSTED');

    const policy = writeJson('sim-policy.json', { version: 1, platforms: { simulated: sim.policySection() } });
    expect((await cli([doc, '--platform', 'simulated', '--root', rootPath, '--policy', policy])).code).toBe(0);
  });
});
