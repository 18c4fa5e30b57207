/**
 * `cloister verify --platform sev-snp|tdx` on the real vectors in test/vectors
 * (skipped with a note when absent).
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { run, type CliIo } from '../../src/cli/commands/verify.js';
import { describeWithVectors, REPO_ROOT, vectorPath } from '../helpers/vectors.js';

const snp = (f: string): string => vectorPath(`sev-snp/${f}`);
const tdx = (f: string): string => vectorPath(`tdx/${f}`);
/** The example policies that match these vectors (docs/policies). */
const examplePolicy = (name: string): string => join(REPO_ROOT, 'docs', 'policies', `${name}.json`);
/** REPORT_DATA the vectors carry (SEV-SNP report offset 0x50; TDX from the vector sidecar). */
const SNP_VIRTEE_REPORT_DATA = 'd447b55d197491bfe15cf298f9de9986b7a7c4be2468b4f6e2d53b71d7c645810b0f2cdfca0040433be063fc1a8293f0f3f8dae7b79fecb3d1cd82bd6a93ebfd';
const TDX_PHALA_V4_REPORT_DATA = '9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20';

function capture(): CliIo & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (t) => stdout.push(t), err: (t) => stderr.push(t) };
}

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'cloister-cli-snp-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function policyFile(name: string, body: unknown): Promise<string> {
  const p = join(tmp, name);
  await writeFile(p, JSON.stringify(body));
  return p;
}

describeWithVectors(['sev-snp', 'tdx'], 'cloister verify --platform sev-snp / tdx', () => {
  it('sev-snp: with a policy and --report-data prints the verified claims as JSON and exits 0', async () => {
    const io = capture();
    const code = await run(
      [snp('snp_virtee_milan_report.bin'), '--platform', 'sev-snp', '--vcek', snp('snp_virtee_milan_vcek.der'), '--at', '2024-06-01T00:00:00Z', '--json', '--policy', examplePolicy('sev-snp'), '--report-data', SNP_VIRTEE_REPORT_DATA],
      io,
    );
    expect(code, io.stderr.join('\n')).toBe(0);
    const out = JSON.parse(io.stdout.join('\n')) as { ok: boolean; claims: { measurements: Record<string, string>; details: Record<string, unknown> } };
    expect(out.ok).toBe(true);
    expect(out.claims.measurements['MEASUREMENT']).toBe('7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f');
    expect(out.claims.details['reportedTcb']).toEqual({ bootloader: 3, tee: 0, snp: 8, microcode: 115 });
    expect(out.claims.details['policy']).toMatchObject({ debug: false, raw: '0x30000' });
  });

  it('--vcek accepts PEM as well as DER; a garbage file fails with an error naming the file', async () => {
    const der = await readFile(snp('snp_virtee_milan_vcek.der'));
    const pemPath = join(tmp, 'vcek.pem');
    await writeFile(pemPath, `-----BEGIN CERTIFICATE-----\n${(der.toString('base64').match(/.{1,64}/g) ?? []).join('\n')}\n-----END CERTIFICATE-----\n`);
    for (const vcek of [snp('snp_virtee_milan_vcek.der'), pemPath]) {
      const io = capture();
      expect(await run([snp('snp_virtee_milan_report.bin'), '--platform', 'sev-snp', '--vcek', vcek, '--at', '2024-06-01T00:00:00Z', '--inspect'], io), io.stderr.join('\n')).toBe(0);
    }
    for (const [name, bytes, why] of [
      ['garbage.bin', Buffer.from('not a certificate at all'), /neither DER X\.509 nor PEM/],
      ['truncated.der', der.subarray(0, 100), /DER length does not match the file size/],
      ['bad.pem', Buffer.from('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'), /certificate 1 is not valid X\.509/],
    ] as const) {
      const p = join(tmp, name);
      await writeFile(p, bytes);
      const io = capture();
      expect(await run([snp('snp_virtee_milan_report.bin'), '--platform', 'sev-snp', '--vcek', p, '--at', '2024-06-01T00:00:00Z'], io)).toBe(1);
      expect(io.stderr.join('\n')).toContain(`VCEK file ${p}`);
      expect(io.stderr.join('\n')).toMatch(why);
    }
  });

  it('sev-snp: the debug report fails a policy file with DEBUG_MODE and exits 1', async () => {
    const policy = await policyFile('snp-policy.json', {
      version: 1,
      platforms: { 'sev-snp': { measurements: ['b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01'] } },
    });
    const io = capture();
    const code = await run(
      [snp('snp_gosevguest_milan_report.bin'), '--platform', 'sev-snp', '--vcek', snp('snp_gosevguest_milan_vcek.der'), '--at', '2024-06-01T00:00:00Z', '--policy', policy],
      io,
    );
    expect(code).toBe(1);
    expect(io.stderr.join('\n')).toMatch(/DEBUG_MODE at step policy/);
    expect(io.stdout.join('\n')).toMatch(/MEASUREMENT/);
  });

  it('sev-snp: without a policy the debug report is still refused (DEBUG_MODE), the production one is not', async () => {
    const io = capture();
    const code = await run([snp('snp_gosevguest_milan_report.bin'), '--platform', 'sev-snp', '--vcek', snp('snp_gosevguest_milan_vcek.der'), '--at', '2024-06-01T00:00:00Z'], io);
    expect(code).toBe(1);
    expect(io.stderr.join('\n')).toMatch(/DEBUG_MODE at step policy/);
    const inspectDebug = capture();
    expect(await run([snp('snp_gosevguest_milan_report.bin'), '--platform', 'sev-snp', '--vcek', snp('snp_gosevguest_milan_vcek.der'), '--at', '2024-06-01T00:00:00Z', '--inspect'], inspectDebug)).toBe(1);
    const ok = capture();
    expect(await run([snp('snp_virtee_milan_report.bin'), '--platform', 'sev-snp', '--vcek', snp('snp_virtee_milan_vcek.der'), '--at', '2024-06-01T00:00:00Z', '--inspect'], ok)).toBe(0);
    // Without --inspect, the unchecked policy and binding make it exit 1.
    const incomplete = capture();
    expect(await run([snp('snp_virtee_milan_report.bin'), '--platform', 'sev-snp', '--vcek', snp('snp_virtee_milan_vcek.der'), '--at', '2024-06-01T00:00:00Z'], incomplete)).toBe(1);
    expect(incomplete.stderr.join('\n')).toMatch(/VERIFICATION_INCOMPLETE: .*policy: .*binding: /);
  });

  it('sev-snp: a wrong --report-data fails the binding with BINDING_MISMATCH', async () => {
    const io = capture();
    const code = await run(
      [snp('snp_virtee_milan_report.bin'), '--platform', 'sev-snp', '--vcek', snp('snp_virtee_milan_vcek.der'), '--at', '2024-06-01T00:00:00Z', '--report-data', '00'.repeat(64)],
      io,
    );
    expect(code).toBe(1);
    expect(io.stderr.join('\n')).toMatch(/BINDING_MISMATCH at step binding/);
  });

  it('sev-snp: without a VCEK the chain step fails', async () => {
    const io = capture();
    const code = await run([snp('snp_virtee_milan_report.bin'), '--platform', 'sev-snp', '--at', '2024-06-01T00:00:00Z'], io);
    expect(code).toBe(1);
    expect(io.stderr.join('\n')).toMatch(/CERT_CHAIN_INVALID at step endorsement-key/);
  });

  it('tdx: v4 quote with collateral an hour before now_used (the PCK CRL expires before it) prints MRTD, RTMRs, status and exits 0', async () => {
    const io = capture();
    const argv = [tdx('tdx_phala_v4_quote.bin'), '--platform', 'tdx', '--collateral', tdx('tdx_phala_v4_collateral.json'), '--at', '2025-07-19T09:16:02Z'];
    const code = await run([...argv, '--inspect'], io);
    expect(code).toBe(0);
    const verified = capture();
    expect(await run([...argv, '--policy', examplePolicy('tdx'), '--report-data', TDX_PHALA_V4_REPORT_DATA], verified), verified.stderr.join('\n')).toBe(0);
    expect(verified.stdout.join('\n')).toMatch(/^VERIFIED {2}platform tdx/);
    const text = io.stdout.join('\n');
    expect(text).toMatch(/MRTD\s+91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7/);
    expect(text).toMatch(/RTMR0/);
    expect(text).toMatch(/UpToDate/);
  });

  it('tdx: the outdated quote fails with TCB_STATUS_REJECTED; nearai is OutOfDate unless the policy names it', async () => {
    const io = capture();
    expect(await run([tdx('tdx_phala_outdated_quote.bin'), '--platform', 'tdx', '--collateral', tdx('tdx_phala_outdated_collateral.json'), '--at', '2026-03-20T09:42:14Z'], io)).toBe(1);
    expect(io.stderr.join('\n')).toMatch(/TCB_STATUS_REJECTED at step quote/);

    const io2 = capture();
    const args = [tdx('tdx_nearai_quote.bin'), '--platform', 'tdx', '--collateral', tdx('tdx_phala_outdated_collateral.json'), '--at', '2026-03-20T09:42:14Z', '--json'];
    expect(await run(args, io2)).toBe(1);
    const out = JSON.parse(io2.stdout.join('\n')) as { claims: { details: { tcbStatus: string; advisoryIds: string[] } } };
    expect(out.claims.details.tcbStatus).toBe('OutOfDate');
    expect(out.claims.details.advisoryIds).toContain('INTEL-SA-01111');

    const policy = await policyFile('tdx-policy.json', {
      version: 1,
      platforms: {
        tdx: {
          mrTd: ['924f8a6140332b2c487f74ff171f6d78b9fff6b2166a5247b6781a4d157c0bcb12d671fb950310024f34691fe1416d65'],
          rtmr0: ['cd44acf047ac18e69780944d46f1f23073c2f080ae12fc42554a5525ba73c695f3a05313083b12439bb00301527b119f'],
          rtmr1: ['c3fee3c9f55c475d57988a6d6ab2537d5ef7cecd6bdab174f2bdb7f7fd278b40f2151262dc8bd4c27c0e8b13c87f4d7f'],
          rtmr2: ['76014f36347d09b7cc01d38e609a13953f76295c75835073b8aca4efed82f3638d6631c1f720f5aefd57653e30f09fba'],
          acceptedTcbStatuses: ['UpToDate', 'OutOfDate'],
        },
      },
    });
    const io3 = capture();
    expect(await run([...args, '--policy', policy, '--inspect'], io3)).toBe(0);
  });

  it('tdx: --collateral is required', async () => {
    const io = capture();
    expect(await run([tdx('tdx_phala_v4_quote.bin'), '--platform', 'tdx'], io)).not.toBe(0);
  });
});
