/**
 * `cloister verify <report> --platform nvidia-gpu --chain ... --rim ... --rim ... --at ...` on
 * NVIDIA's real evidence (test/vectors/nvidia): exit 0 with the measurements printed; a flipped
 * byte in the report, the chain or a RIM exits 1 naming the failed step.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { run, type CliIo } from '../../src/cli/commands/verify.js';
import { describeWithVectors, vectorPath } from '../helpers/vectors.js';

const v = (f: string): string => vectorPath(`nvidia/${f}`);
const REPORT = v('nvidia_h100_attestation_report.hex');
const CHAIN = v('nvidia_h100_ak_cert_chain.pem');
const DRIVER_RIM = v('nvtrust-samples/Driver_RIM_test_no_gpu.swidtag');
const VBIOS_RIM = v('nvtrust-samples/1010_0200_882_96005E0001_test_no_gpu.swidtag');
const NONCE = '4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e';
const AT = '2024-06-01T00:00:00Z';

function capture(): CliIo & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (t) => stdout.push(t), err: (t) => stderr.push(t) };
}

let tmp: string;
let policy: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'cloister-cli-gpu-'));
  policy = join(tmp, 'policy.json');
  await writeFile(
    policy,
    JSON.stringify({
      version: 1,
      platforms: { nitro: { pcrs: { '0': 'ab'.repeat(48) } } },
      gpus: { required: true, allowedDriverVersions: ['545.00'], allowedVbiosVersions: ['96.00.5e.00.01'] },
    }),
  );
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const args = (report = REPORT, chain = CHAIN, driver = DRIVER_RIM, vbios = VBIOS_RIM): string[] => [
  report,
  '--platform',
  'nvidia-gpu',
  '--chain',
  chain,
  '--rim',
  vbios,
  '--rim',
  driver,
  '--at',
  AT,
];

async function flipped(path: string, name: string, at: (text: string) => number): Promise<string> {
  const bytes = await readFile(path);
  const text = bytes.toString('latin1');
  const i = at(text);
  const c = text[i] ?? '0';
  const replacement = c === '0' ? '1' : c === 'A' ? 'B' : c === 'a' ? 'b' : '0';
  const out = join(tmp, name);
  await writeFile(out, Buffer.from(text.slice(0, i) + replacement + text.slice(i + 1), 'latin1'));
  return out;
}

describeWithVectors(['nvidia'], 'cloister verify --platform nvidia-gpu', () => {
  it('with --nonce and a gpus policy: exit 0, every step ok, the measurements printed', async () => {
    const io = capture();
    const code = await run([...args(), '--nonce', NONCE, '--policy', policy], io);
    expect(code, io.stderr.join('\n')).toBe(0);
    const out = io.stdout.join('\n');
    expect(out).toMatch(/^VERIFIED {2}platform nvidia-gpu/);
    expect(out).toMatch(/ok {3}measurements +32 active measurements match/);
    expect(out).toMatch(/driver {6}545\.00/);
    expect(out.match(/^block \d\d {4}[0-9a-f]{96}$/gm)).toHaveLength(64);
    expect(out.indexOf('block 01 ')).toBeLessThan(out.indexOf('block 64 '));
  });

  it('without --nonce or --policy: VERIFICATION_INCOMPLETE (exit 1); with --inspect exit 0', async () => {
    const io = capture();
    expect(await run(args(), io)).toBe(1);
    expect(io.stderr.join('\n')).toMatch(/VERIFICATION_INCOMPLETE.*nonce.*policy/);
    const io2 = capture();
    expect(await run([...args(), '--inspect'], io2)).toBe(0);
    expect(io2.stdout.join('\n')).toMatch(/^INSPECTED/);
  });

  it('--json carries the steps and measurements', async () => {
    const io = capture();
    expect(await run([...args(), '--nonce', NONCE, '--policy', policy, '--json'], io)).toBe(0);
    const j = JSON.parse(io.stdout.join('\n')) as { ok: boolean; steps: { step: string }[]; claims: { measurements: Record<string, string> } };
    expect(j.ok).toBe(true);
    expect(j.steps.map((s) => s.step)).toContain('measurements');
    expect(Object.keys(j.claims.measurements)).toHaveLength(64);
  });

  it.each([
    ['report nonce', 'report', () => 8 + 4, 'signature'],
    ['report header', 'report', () => 1, 'decode'],
    ['report measurement', 'report', (t: string) => t.length - 400, 'signature'],
    ['report signature', 'report', (t: string) => t.length - 10, 'signature'],
    ['chain leaf', 'chain', (t: string) => t.indexOf('\n', 40) + 30, 'device-chain'],
    ['chain intermediate', 'chain', (t: string) => t.indexOf('-----BEGIN', 50) + 200, 'device-chain'],
    ['driver RIM golden value', 'driver', (t: string) => t.indexOf('active="True"') + 40, 'driver-rim'],
    ['VBIOS RIM signature', 'vbios', (t: string) => t.indexOf('<ds:SignatureValue>') + 25, 'vbios-rim'],
  ])('a flipped byte in the %s (%s file) exits 1 at the named step', async (name, which, at, step) => {
    const path = await flipped(which === 'report' ? REPORT : which === 'chain' ? CHAIN : which === 'driver' ? DRIVER_RIM : VBIOS_RIM, name.replace(/ /g, '-'), at);
    const io = capture();
    const a = which === 'report' ? args(path) : which === 'chain' ? args(REPORT, path) : which === 'driver' ? args(REPORT, CHAIN, path) : args(REPORT, CHAIN, DRIVER_RIM, path);
    expect(await run([...a, '--nonce', NONCE, '--policy', policy], io)).toBe(1);
    expect(io.stderr.join('\n')).toMatch(new RegExp(`at step ${step}:`));
  });

  it('a wrong --nonce exits 1 at step nonce; missing --chain or one --rim is a usage error (2)', async () => {
    const io = capture();
    expect(await run([...args(), '--nonce', '00'.repeat(32), '--policy', policy], io)).toBe(1);
    expect(io.stderr.join('\n')).toMatch(/BINDING_MISMATCH at step nonce/);
    expect(await run([REPORT, '--platform', 'nvidia-gpu', '--rim', DRIVER_RIM, '--rim', VBIOS_RIM], capture())).toBe(2);
    expect(await run([REPORT, '--platform', 'nvidia-gpu', '--chain', CHAIN, '--rim', DRIVER_RIM], capture())).toBe(2);
  });
});
