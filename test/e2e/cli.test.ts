/**
 * The product as a user runs it: `cloister serve` as a child process (compiled dist/), then
 * `cloister policy`, `infer` and `attest` against it. Every byte the server prints is
 * captured and checked for the canary sent in the requests.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeEvidenceFile } from '../../src/verifier/evidence-file.js';
import { buildDemoModels } from '../../tools/demo-model/build.js';
import { until } from '../helpers/until.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const cli = resolve(repoRoot, 'dist', 'cli', 'main.js');
const haveDist = existsSync(cli);
if (!haveDist) console.warn('test/e2e/cli.test.ts skipped: dist/cli/main.js missing (run `npm run build`)');

const CANARY = 'CANARY-cli-4d1e-Ottoline-Wexford';

function runCli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [cli, ...args], { cwd: repoRoot });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => done({ code: code ?? 1, out, err }));
  });
}

describe.skipIf(!haveDist)('cloister serve / policy / infer / attest (child processes)', () => {
  let dir: string;
  let server: ChildProcess;
  let serverOut = '';
  let wsUrl = '';
  let httpUrl = '';
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cloister-cli-'));
    const built = await buildDemoModels({ outDir: join(dir, 'models') });
    server = spawn(
      process.execPath,
      [cli, 'serve', '--model', `classifier=${built.classifierDir}`, '--embedder', `embedder=${built.embedderDir}`, '--listen', '127.0.0.1:0', '--platform', 'simulated', '--state-dir', join(dir, 'state'), '--log-level', 'debug'],
      { cwd: repoRoot },
    );
    server.stdout?.on('data', (d: Buffer) => (serverOut += d.toString()));
    server.stderr?.on('data', (d: Buffer) => (serverOut += d.toString()));
    await until(() => /http:\s+http:\/\/127\.0\.0\.1:\d+/.test(serverOut), 3000, 20);
    wsUrl = /websocket:\s+(ws:\/\/\S+)/.exec(serverOut)?.[1] ?? '';
    httpUrl = /http:\s+(http:\/\/127\.0\.0\.1:\d+)/.exec(serverOut)?.[1] ?? '';
  }, 120_000);
  afterAll(async () => {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
    await rm(dir, { recursive: true, force: true });
  });

  it('prints the URLs, the SIMULATED warning, the root and policy paths, and a try line without --root', () => {
    expect(wsUrl).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/$/);
    expect(serverOut).toContain('SIMULATED');
    expect(serverOut).toContain(join(dir, 'state', 'simulated-root.pem'));
    expect(serverOut).toContain(join(dir, 'state', 'policy.json'));
    const tryLine = /npx cloister infer (.*)/.exec(serverOut)?.[1] ?? '';
    expect(tryLine).toContain(`--url ${httpUrl} --policy ${join(dir, 'state', 'policy.json')} --text `);
    expect(tryLine).not.toContain('--root');
  });

  it('the printed try line works as printed: infer with the policy alone (its root pin is the trust)', async () => {
    const policy = join(dir, 'state', 'policy.json');
    const r = await runCli(['infer', '--url', httpUrl, '--policy', policy, '--text', 'chest pain radiating to the left arm']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^\S+\t\d\.\d{4}\n$/);
    expect(r.err).toContain('SIMULATED');
  });

  it('serve --platform sev-snp on a machine without it: PLATFORM_UNAVAILABLE, nothing listens', async () => {
    const r = await runCli(['serve', '--model', join(dir, 'models', 'nowhere'), '--listen', '127.0.0.1:0', '--platform', 'sev-snp', '--state-dir', join(dir, 'state2')]);
    expect(r.code).toBe(1);
    expect(r.err).toContain('PLATFORM_UNAVAILABLE');
    expect(r.err).toContain('--platform sev-snp was requested');
    expect(r.out).not.toContain('websocket:');
  });

  it('serve rejects a request timeout outside 1..86400 s before anything listens', async () => {
    for (const bad of ['0', '-5', '1.5', 'soon', '86401']) {
      // `--name=value`: node's parseArgs takes a separate value starting with '-' for a missing one.
      const r = await runCli(['serve', '--model', join(dir, 'models', 'nowhere'), '--listen', '127.0.0.1:0', `--request-timeout-s=${bad}`]);
      expect(r.code).toBe(2); // a usage error

      expect(r.err).toContain('--request-timeout-s must be an integer from 1 to 86400');
      expect(r.out).not.toContain('websocket:');
    }
  });

  it('serve on an address in use names the address (exit 1)', async () => {
    const port = /:(\d+)$/.exec(httpUrl)?.[1] ?? '';
    const r = await runCli(['serve', '--model', `classifier=${join(dir, 'models', 'classifier')}`, '--listen', `127.0.0.1:${port}`, '--platform', 'simulated', '--state-dir', join(dir, 'state2')]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`cannot listen on 127.0.0.1:${port}: address already in use (EADDRINUSE)`);
  });

  it('infer --audit writes an evidence file and a record; audit export and audit verify round-trip; any flipped byte fails', async () => {
    const policy = join(dir, 'state', 'policy.json');
    const root = join(dir, 'state', 'simulated-root.pem');
    const auditDir = join(dir, 'audit');
    const r = await runCli(['infer', '--url', wsUrl, '--policy', policy, '--text', `${CANARY}: chest pain`, '--audit', auditDir]);
    expect(r.code, r.err).toBe(0);
    const [, evidence = '', record = ''] = /audit: wrote (\S+) and (\S+)/.exec(r.err) ?? [];
    expect(evidence.startsWith(join(auditDir, 'evidence-'))).toBe(true);
    expect(record.endsWith('.record.cbor')).toBe(true);
    const bundle = join(dir, 'audit.bundle');
    const exp = await runCli(['audit', 'export', '--evidence', evidence, '--record', record, '--out', bundle]);
    expect(exp.code, exp.err).toBe(0);
    // Exported once: not overwritten (a usage error).
    expect((await runCli(['audit', 'export', '--evidence', evidence, '--record', record, '--out', bundle])).code).toBe(2);
    const ok = await runCli(['audit', 'verify', bundle, '--root', root, '--policy', policy]);
    expect(ok.code, ok.err).toBe(0);
    expect(ok.out).toContain('AUDIT VERIFIED');
    expect(ok.out).toContain('which model   classifier');
    expect(ok.out + ok.err).not.toContain(CANARY);
    // A flipped byte anywhere (sampled across the bundle: evidence, key config, leaf, proof, head) fails.
    const bytes = await readFile(bundle);
    const step = Math.max(1, Math.floor(bytes.byteLength / 12));
    for (let i = 0; i < bytes.byteLength; i += step) {
      const bad = Buffer.from(bytes);
      bad[i] = (bad[i] ?? 0) ^ 0x01;
      const path = join(dir, `audit-flip-${i}.bundle`);
      await writeFile(path, bad);
      const v = await runCli(['audit', 'verify', path, '--root', root, '--policy', policy]);
      expect(v.code, `byte ${i}`).toBe(1);
    }
  });

  it('infer over ws and http with the written policy; policy and attest commands; no canary in server output', async () => {
    const policy = join(dir, 'state', 'policy.json');
    const root = join(dir, 'state', 'simulated-root.pem');
    const text = `${CANARY}: crushing chest pain radiating to the left arm, troponin elevated`;
    const ws = await runCli(['infer', '--url', wsUrl, '--policy', policy, '--root', root, '--text', text]);
    expect(ws.code).toBe(0);
    expect(ws.out).toMatch(/^\S+\t\d\.\d{4}\n$/);
    const http = await runCli(['infer', '--url', httpUrl, '--policy', policy, '--root', root, '--text', text, '--json']);
    expect(http.code).toBe(0);
    const parsed = JSON.parse(http.out) as { platform: string; result: { label: string }[] };
    expect(parsed.platform).toBe('simulated');
    expect(parsed.result[0]?.label).toBe(ws.out.split('\t')[0]);
    const emb = await runCli(['infer', '--url', httpUrl, '--policy', policy, '--root', root, '--text', CANARY, '--op', 'embed', '--json']);
    expect(emb.code).toBe(0);

    // without the root, the policy's root pin is the trust
    const noRoot = await runCli(['infer', '--url', wsUrl, '--policy', policy, '--text', text]);
    expect(noRoot.code).toBe(0);
    expect(noRoot.out).toBe(ws.out);
    // with neither a root nor a pin: refused, nothing sent
    const unpinned = JSON.parse(await readFile(policy, 'utf8')) as { platforms: { simulated: Record<string, unknown> } };
    delete unpinned.platforms.simulated['rootSha256'];
    await writeFile(join(dir, 'unpinned.json'), JSON.stringify(unpinned));
    const refusedRoot = await runCli(['infer', '--url', wsUrl, '--policy', join(dir, 'unpinned.json'), '--text', CANARY]);
    expect(refusedRoot.code).toBe(1);
    expect(refusedRoot.err).toContain('ROOT_UNTRUSTED');

    // `cloister policy` reproduces the policy serve wrote
    const pol = await runCli(['policy', '--url', httpUrl]);
    expect(pol.code).toBe(0);
    expect(JSON.parse(pol.out)).toEqual(JSON.parse(await readFile(policy, 'utf8')));

    const out = join(dir, 'evidence.cbor');
    const att = await runCli(['attest', '--url', wsUrl, '--nonce', 'a1b2c3', '--out', out]);
    expect(att.code).toBe(0);
    const saved = decodeEvidenceFile(new Uint8Array(await readFile(out)));
    expect(saved.bundle.platform).toBe('simulated');
    expect(saved.nonce).toEqual(Uint8Array.of(0xa1, 0xb2, 0xc3));
    // the auditor's round trip: the saved file verifies offline, with its key config and nonce
    const verified = await runCli(['verify', out, '--platform', 'simulated', '--root', root, '--policy', policy]);
    expect(verified.err).not.toMatch(/FAIL/);
    expect(verified.code).toBe(0);
    expect(verified.out).toContain('key config (bound by the evidence above)');
    expect(verified.out).toMatch(/model +classifier \(text-classification\)/);
    const httpOut = join(dir, 'evidence-http.cbor');
    expect((await runCli(['attest', '--url', httpUrl, '--out', httpOut])).code).toBe(0);
    expect((await runCli(['verify', httpOut, '--platform', 'simulated', '--root', root, '--policy', policy])).code).toBe(0);
    // one flipped byte (in the key config, and in the evidence): exit 1
    const bytes = new Uint8Array(await readFile(out));
    for (const at of [bytes.byteLength - 40, Math.floor(bytes.byteLength / 2)]) {
      const bad = Uint8Array.from(bytes);
      bad[at] = (bad[at] ?? 0) ^ 0x01;
      const badPath = join(dir, `flipped-${at}.cbor`);
      await writeFile(badPath, bad);
      expect((await runCli(['verify', badPath, '--platform', 'simulated', '--root', root])).code).toBe(1);
    }

    // a tampered policy: refused with POLICY_MISMATCH
    const bad = JSON.parse(await readFile(policy, 'utf8')) as { models: Record<string, string> };
    bad.models['classifier'] = '00'.repeat(32);
    await writeFile(join(dir, 'bad.json'), JSON.stringify(bad));
    const refused = await runCli(['infer', '--url', wsUrl, '--policy', join(dir, 'bad.json'), '--root', root, '--text', CANARY]);
    expect(refused.code).toBe(1);
    expect(refused.err).toContain('POLICY_MISMATCH');

    await until(() => serverOut.includes('request.done'));
    expect(serverOut).not.toContain(CANARY);
    expect(serverOut).not.toContain('Ottoline');
    expect(serverOut).not.toContain('troponin');
  });
});
