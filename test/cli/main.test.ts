/**
 * The `cloister` command as a user runs it (compiled dist/): help, version, exit codes
 * (0 ok, 1 failure, 2 usage) for every command, a closed stdout (EPIPE), file errors.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const cli = resolve(repoRoot, 'dist', 'cli', 'main.js');
const haveDist = existsSync(cli);
if (!haveDist) console.warn('test/cli/main.test.ts skipped: dist/cli/main.js missing (run `npm run build`)');

const COMMANDS = ['attest', 'audit', 'eif', 'gateway', 'infer', 'keys', 'model', 'policy', 'receipt', 'relay', 'serve', 'verify'];

function runCli(args: string[], options: { env?: Record<string, string>; closeStdout?: boolean } = {}): Promise<{ code: number; out: string; err: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [cli, ...args], { cwd: repoRoot, env: { ...process.env, ...options.env } });
    let out = '';
    let err = '';
    // The reader goes away before the command writes: its writes fail with EPIPE.
    if (options.closeStdout === true) child.stdout.destroy();
    else child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => done({ code: code ?? -1, out, err }));
  });
}

describe.skipIf(!haveDist)('cloister (top level)', () => {
  let dir = '';
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cloister-main-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('--help lists every command with a one-line summary, exit 0', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
    for (const c of COMMANDS) expect(r.out).toMatch(new RegExp(`^  ${c} +\\S.+$`, 'm'));
    expect(r.out).toContain('2 usage error');
  });

  it('--version prints the package version, exit 0', async () => {
    const pkg = JSON.parse(readFileSync(resolve(repoRoot, 'package.json'), 'utf8')) as { version: string };
    expect(await runCli(['--version'])).toMatchObject({ code: 0, out: `${pkg.version}\n` });
    expect((await runCli(['-V'])).out).toBe(`${pkg.version}\n`);
  });

  it('no command and an unknown command are usage errors (2)', async () => {
    expect((await runCli([])).code).toBe(2);
    const r = await runCli(['nosuch']);
    expect(r.code).toBe(2);
    expect(r.err).toContain("unknown command 'nosuch'");
  });

  it.each(COMMANDS)('%s: an unknown option exits 2 with one clear message, no stack trace', async (c) => {
    const r = await runCli([c, '--no-such-option']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/unknown option/i);
    expect(r.err).not.toMatch(/^\s+at /m);
    expect(r.err).not.toContain('INTERNAL');
  });

  it.each(COMMANDS)('%s --help exits 0', async (c) => {
    const r = await runCli([c, '--help']);
    expect(r.code).toBe(0);
    expect(r.out + r.err).toMatch(/usage/i);
  });

  it('a reader that closes stdout early (| head) does not kill the command with EPIPE', async () => {
    const r = await runCli(['--help'], { closeStdout: true });
    expect(r.err).not.toMatch(/EPIPE|Error/);
    expect(r.code).toBe(0);
    const v = await runCli(['verify', join(dir, 'missing.cbor'), '--platform', 'simulated'], { closeStdout: true });
    expect(v.err).not.toMatch(/EPIPE/);
    expect(v.code).toBe(1);
  });

  it('a missing file names its path (exit 1); malformed policy JSON names the file and the position', async () => {
    const missing = join(dir, 'no-such-policy.json');
    const r = await runCli(['infer', '--url', 'http://127.0.0.1:9', '--policy', missing, '--text', 'x']);
    expect(r.code).toBe(1);
    expect(r.err).toContain(missing);
    const bad = join(dir, 'bad-policy.json');
    await writeFile(bad, '{\n  "version": 1,\n  "platforms": {,}\n}\n');
    const b = await runCli(['infer', '--url', 'http://127.0.0.1:9', '--policy', bad, '--text', 'x']);
    expect(b.code).toBe(1);
    expect(b.err).toContain(`policy '${bad}': invalid JSON at line 3, column 17 (offset 34): expected a double-quoted property name`);
  });

  it('serve: an invalid CLOISTER_* variable is a usage error naming the variable', async () => {
    const r = await runCli(['serve', '--model', join(dir, 'm')], { env: { CLOISTER_REQUEST_TIMEOUT_S: 'soon' } });
    expect(r.code).toBe(2);
    expect(r.err).toContain('CLOISTER_REQUEST_TIMEOUT_S (environment) must be an integer from 1 to 86400');
  });
});
