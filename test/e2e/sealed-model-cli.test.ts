/**
 * Issue 13's "done when", as a user runs it (compiled dist/, child processes):
 * `cloister keys serve`, `keys dev-policy`, `model seal` (no 4 KiB plaintext block in the
 * sealed directory), `serve --model name=<sealed> --key-broker` and `infer` giving the same
 * label as the plaintext model; a broker policy pinning another measurement makes serve exit
 * non-zero with POLICY_MISMATCH; the audit shows both decisions. Then the broker is killed
 * (SIGKILL) while admin writes are in flight: every acknowledged key is there after restart.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePolicy } from '../../src/verifier/policy.js';
import { connect } from '../../src/client/client.js';
import { buildDemoModels } from '../../tools/demo-model/build.js';
import { readSecretFile } from '../../src/keys/admin-auth.js';
import { BrokerAdminClient } from '../../src/keys/client.js';
import { until } from '../helpers/until.js';
import { CLI as cli, HAVE_DIST, REPO_ROOT as repoRoot, startCli, stopCli } from '../helpers/cli-process.js';
import type { CliProc } from '../helpers/cli-process.js';

const haveDist = HAVE_DIST;
if (!haveDist) console.warn('test/e2e/sealed-model-cli.test.ts skipped: dist/cli/main.js missing (run `npm run build`)');
const TEXT = 'chest pain radiating to the left arm';

function runCli(args: string[], timeoutMs = 60_000): Promise<{ code: number; out: string; err: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [cli, ...args], { cwd: repoRoot });
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => {
      clearTimeout(timer);
      done({ code: code ?? 1, out, err });
    });
  });
}

type Proc = CliProc;
const start = startCli;

const stop = stopCli;

async function startBroker(store: string, extra: string[] = []): Promise<{ proc: Proc; url: string }> {
  const proc = start(['keys', 'serve', '--listen', '127.0.0.1:0', '--store', store, ...extra]);
  await until(() => /key broker: (http:\/\/\S+)/.test(proc.out()), 2000);
  return { proc, url: /key broker: (http:\/\/\S+)/.exec(proc.out())?.[1] ?? '' };
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) out.push(join(e.parentPath, e.name));
  return out;
}

describe.skipIf(!haveDist)('sealed model through the key broker (child processes)', () => {
  let dir: string;
  let broker: { proc: Proc; url: string };
  let server: Proc | undefined;
  let MODEL: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cloister-sealed-cli-'));
    // The demo classifier, built here (a fresh clone has no models/demo until npm start).
    MODEL = (await buildDemoModels({ outDir: join(dir, 'models') })).classifierDir;
    broker = await startBroker(join(dir, 'store'));
  });
  afterAll(async () => {
    await stop(server);
    await stop(broker.proc);
    await rm(dir, { recursive: true, force: true });
  });

  it('seals, serves from the broker, answers as the plaintext model; another measurement is refused; the audit shows both', async () => {
    const state = join(dir, 'state');
    const admin = join(dir, 'store', 'admin.key');
    const pol = await runCli(['keys', 'dev-policy', '--state-dir', state]);
    expect(pol.code).toBe(0);
    await writeFile(join(dir, 'policy.json'), pol.out);
    const seal = await runCli(['model', 'seal', MODEL, '--out', join(dir, 'sealed'), '--key-broker', broker.url, '--admin-key-file', admin, '--policy', join(dir, 'policy.json')]);
    expect(seal.err).toBe('');
    expect(seal.code).toBe(0);

    // No 4 KiB block of any plaintext model file appears in any sealed file.
    const sealedBytes = await Promise.all((await filesUnder(join(dir, 'sealed'))).map((f) => readFile(f)));
    for (const f of await filesUnder(MODEL)) {
      const plain = await readFile(f);
      for (let off = 0; off + 4096 <= plain.length; off += 4096) for (const s of sealedBytes) expect(s.includes(plain.subarray(off, off + 4096))).toBe(false);
    }

    server = start(['serve', '--model', `classifier=${join(dir, 'sealed')}`, '--key-broker', broker.url, '--platform', 'simulated', '--state-dir', state, '--listen', '127.0.0.1:0']);
    await until(() => /http:\s+(http:\/\/\S+)/.test(server?.out() ?? '') || server?.child.exitCode !== null, 6000);
    const httpUrl = /http:\s+(http:\/\/\S+)/.exec(server.out())?.[1];
    expect(server.out()).toContain('sealed: unsealed in memory');
    expect(httpUrl).toBeDefined();
    const sealedAnswer = await runCli(['infer', '--url', httpUrl ?? '', '--policy', join(state, 'policy.json'), '--text', TEXT]);
    expect(sealedAnswer.code).toBe(0);
    await stop(server);

    // The same text through the plaintext model.
    const plainState = join(dir, 'plain-state');
    server = start(['serve', '--model', `classifier=${MODEL}`, '--platform', 'simulated', '--state-dir', plainState, '--listen', '127.0.0.1:0']);
    await until(() => /http:\s+(http:\/\/\S+)/.test(server?.out() ?? ''), 6000);
    const plainUrl = /http:\s+(http:\/\/\S+)/.exec(server.out())?.[1] ?? '';
    const plainAnswer = await runCli(['infer', '--url', plainUrl, '--policy', join(plainState, 'policy.json'), '--text', TEXT]);
    await stop(server);
    const label = (s: string): string => s.split('\n')[0]?.split('\t')[0] ?? '';
    expect(label(sealedAnswer.out)).toBe(label(plainAnswer.out));
    expect(label(sealedAnswer.out)).not.toBe('');

    // A policy that pins another measurement: serve exits non-zero with a coded error.
    const other = pol.out.replace(/"0": "([0-9a-f])/, (_m, c: string) => `"0": "${c === '0' ? '1' : '0'}`);
    expect(other).not.toBe(pol.out);
    await writeFile(join(dir, 'other.json'), other);
    const seal2 = await runCli(['model', 'seal', MODEL, '--out', join(dir, 'sealed-other'), '--key-name', 'other', '--key-broker', broker.url, '--admin-key-file', admin, '--policy', join(dir, 'other.json')]);
    expect(seal2.code).toBe(0);
    const refused = await runCli(['serve', '--model', `classifier=${join(dir, 'sealed-other')}`, '--key-broker', broker.url, '--platform', 'simulated', '--state-dir', state, '--listen', '127.0.0.1:0']);
    expect(refused.code).toBe(1);
    expect(refused.err).toContain('POLICY_MISMATCH');
    expect(refused.out).not.toContain('websocket:');

    const audit = await runCli(['keys', 'audit', '--broker', broker.url, '--admin-key-file', admin]);
    const releases = audit.out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((r) => r['event'] === 'release');
    expect(releases.map((r) => [r['key'], r['allowed'], r['code']])).toEqual([
      ['classifier', true, undefined],
      ['other', false, 'POLICY_MISMATCH'],
    ]);
  }, 240_000);

  it('serve --fleet-key: two servers publish the same key config from the broker', async () => {
    const state = join(dir, 'state');
    const admin = join(dir, 'store', 'admin.key');
    const reg = await runCli(['keys', 'register', 'fleet', '--kind', 'fleet', '--policy', join(dir, 'policy.json'), '--broker', broker.url, '--admin-key-file', admin]);
    expect(reg.code).toBe(0);
    const a = start(['serve', '--model', `classifier=${MODEL}`, '--fleet-key', 'fleet', '--key-broker', broker.url, '--platform', 'simulated', '--state-dir', state, '--listen', '127.0.0.1:0']);
    const b = start(['serve', '--model', `classifier=${MODEL}`, '--fleet-key', 'fleet', '--key-broker', broker.url, '--platform', 'simulated', '--state-dir', state, '--listen', '127.0.0.1:0']);
    try {
      const url = (p: Proc): string | undefined => /http:\s+(http:\/\/\S+)/.exec(p.out())?.[1];
      await until(() => (url(a) !== undefined && url(b) !== undefined) || a.child.exitCode !== null || b.child.exitCode !== null, 6000);
      expect(a.out()).toContain('fleet key:  fleet');
      const policy = parsePolicy(await readFile(join(state, 'policy.json')));
      const keyConfigOf = async (p: Proc): Promise<string> => {
        const c = await connect(url(p) ?? '', { policy });
        try {
          expect((await c.classify(TEXT))[0]?.label).toBe('cardiology');
          return JSON.stringify(c.keyConfig, (_k, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v));
        } finally {
          await c.close();
        }
      };
      expect(await keyConfigOf(b)).toBe(await keyConfigOf(a));

      // Per-replica receipts through the CLI: `infer --audit` keeps each answer's v1 receipt (a
      // fleet offers no receipts v2) naming the replica; `receipt verify` checks it offline and
      // names that replica; its statement verifies as evidence against the same policy.
      const replicaOf = async (p: Proc, n: number): Promise<{ key: string; receipt: string; evidence: string }> => {
        const auditDir = join(dir, `audit-${n}`);
        const inf = await runCli(['infer', '--url', url(p) ?? '', '--policy', join(state, 'policy.json'), '--text', TEXT, '--audit', auditDir]);
        expect(inf.code, inf.err).toBe(0);
        const files = await readdir(auditDir);
        const receipt = files.find((f) => f.endsWith('.receipt.json'));
        const evidence = files.find((f) => f.startsWith('evidence-'));
        if (receipt === undefined || evidence === undefined) throw new Error(`audit dir holds ${files.join(', ')}`);
        const statement = join(dir, `statement-${n}.cbor`);
        const ver = await runCli(['receipt', 'verify', '--evidence', join(auditDir, evidence), '--receipt', join(auditDir, receipt), '--statement-out', statement]);
        expect(ver.code, ver.err).toBe(0);
        const key = /signed by replica ([0-9a-f]{64})/.exec(ver.out)?.[1];
        if (key === undefined) throw new Error(`receipt verify printed: ${ver.out}`);
        const stmt = await runCli(['verify', statement, '--policy', join(state, 'policy.json')]);
        expect(stmt.code, stmt.out + stmt.err).toBe(0);
        expect(stmt.out).toContain(key);
        return { key, receipt: join(auditDir, receipt), evidence: join(auditDir, evidence) };
      };
      const ra = await replicaOf(a, 1);
      const rb = await replicaOf(b, 2);
      expect(ra.key).not.toBe(rb.key);
      // B's receipt presented as signed by A's key: refused (exit 1, RECEIPT_INVALID).
      const forged = JSON.parse(await readFile(rb.receipt, 'utf8')) as { replica: { receiptKey: string } };
      forged.replica.receiptKey = ra.key;
      await writeFile(join(dir, 'forged.json'), JSON.stringify(forged));
      // The audit directory keeps the statement apart (statement-<sha256>.cbor): given explicitly here.
      const statementOf = (await readdir(join(dir, 'audit-2'))).find((f) => f.startsWith('statement-')) ?? '';
      const bad = await runCli(['receipt', 'verify', '--evidence', rb.evidence, '--receipt', join(dir, 'forged.json'), '--statement', join(dir, 'audit-2', statementOf)]);
      expect(bad.code).toBe(1);
      expect(bad.err).toContain('RECEIPT_INVALID');

      // One audit directory for several runs (A, B, A again, in the same second): the auditor
      // checks them all at once and counts the answers per replica.
      const all = join(dir, 'audit-all');
      for (const p of [a, b, a]) {
        const inf = await runCli(['infer', '--url', url(p) ?? '', '--policy', join(state, 'policy.json'), '--text', TEXT, '--audit', all]);
        expect(inf.code, inf.err).toBe(0);
      }
      const sum = await runCli(['receipt', 'verify', '--dir', all, '--policy', join(state, 'policy.json')]);
      expect(sum.code, sum.err).toBe(0);
      expect(sum.out).toContain('RECEIPTS VERIFIED: 3 receipt(s)');
      expect(sum.out).toMatch(new RegExp(`replica ${ra.key} \\(simulated, [^)]*\\): 2 receipt\\(s\\)`));
      expect(sum.out).toMatch(new RegExp(`replica ${rb.key} \\(simulated, [^)]*\\): 1 receipt\\(s\\)`));
      // One receipt's signature bit flipped: exit 1, naming that file.
      const victim = (await readdir(all)).find((f) => f.endsWith('.receipt.json')) ?? '';
      const j = JSON.parse(await readFile(join(all, victim), 'utf8')) as { signature: string };
      j.signature = (j.signature.startsWith('0') ? '1' : '0') + j.signature.slice(1);
      await writeFile(join(all, victim), JSON.stringify(j));
      const tampered = await runCli(['receipt', 'verify', '--dir', all]);
      expect(tampered.code).toBe(1);
      expect(tampered.err).toContain('RECEIPT_INVALID');
      expect(tampered.err).toContain(victim);
    } finally {
      await stop(a);
      await stop(b);
    }
  }, 120_000);

  it('a broker killed (SIGKILL) during admin writes keeps every acknowledged key and restarts', async () => {
    const store = join(dir, 'crash-store');
    // No per-source limit in the way: the writers must still be writing when the kill lands.
    const b = await startBroker(store, ['--requests-per-minute', '1000000']);
    const client = new BrokerAdminClient(b.url, await readSecretFile(join(store, 'admin.key'), 'admin secret'));
    const policy = { version: 1, platforms: { simulated: { pcrs: { '0': 'ab'.repeat(48) } } } };
    const acked: string[] = [];
    let n = 0;
    const writers = [0, 1, 2, 3].map(async () => {
      for (;;) {
        const name = `k${n++}`;
        try {
          await client.register(name, 'fleet', policy);
          acked.push(name);
        } catch {
          return;
        }
      }
    });
    await until(() => acked.length >= 20, 3000);
    b.proc.child.kill('SIGKILL');
    await Promise.all(writers);
    const again = await startBroker(store);
    try {
      const client2 = new BrokerAdminClient(again.url, await readSecretFile(join(store, 'admin.key'), 'admin secret'));
      const listed = (await client2.list()) as { keys: { name: string }[] };
      const names = new Set(listed.keys.map((k) => k.name));
      for (const a of acked) expect(names.has(a)).toBe(true);
      // Still writable after the recovery.
      await client2.register('after-crash', 'fleet', policy);
    } finally {
      await stop(again.proc);
    }
  }, 120_000);
});
