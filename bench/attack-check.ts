/**
 * `npm run attack-check`: the hardening issue's acceptance check. A server started as
 * `npm start` starts it (simulated platform, demo models, 127.0.0.1 TCP), then, for each
 * attack, from this process and on loopback (so attacker and client share one address, the
 * hardest case for per-source limits):
 *
 *   silent   1 100 TCP connections that never send a byte
 *   slow     260 POST /v1/sealed whose bodies trickle one byte every 2 s (Content-Length 100 000)
 *   evidence 700 nonce evidence requests in one burst
 *
 * While the attack holds, `cloister infer` runs in another process, over HTTP and over
 * WebSocket, and must answer within 15 s. Prints one line per attack and transport with the
 * time taken; exit 1 if any failed.
 *
 *   npm run attack-check [-- --json FILE]
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import type { ClientRequest } from 'node:http';
import { createConnection } from 'node:net';
import type { Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ensureDemoModels } from './lib/demo.js';
import { freePort, repoRoot, sleep } from './lib/procs.js';

const DEADLINE_MS = 15_000;

interface Attack {
  readonly name: string;
  start(port: number): Promise<() => void>;
}

const ATTACKS: readonly Attack[] = [
  {
    name: 'silent: 1100 TCP connections that never send a byte',
    async start(port) {
      const sockets: Socket[] = [];
      for (let i = 0; i < 1100; i++) {
        const s = createConnection({ host: '127.0.0.1', port });
        s.on('error', () => undefined);
        sockets.push(s);
        if (i % 100 === 99) await sleep(10);
      }
      await sleep(500);
      return () => sockets.forEach((s) => s.destroy());
    },
  },
  {
    name: 'slow: 260 POST bodies trickling 1 byte / 2 s',
    async start(port) {
      const reqs: ClientRequest[] = [];
      for (let i = 0; i < 260; i++) {
        const req = httpRequest({ host: '127.0.0.1', port, path: '/v1/sealed', method: 'POST', headers: { 'content-length': '100000' }, agent: false });
        req.on('error', () => undefined);
        req.on('response', (r) => r.resume());
        req.write(Buffer.alloc(1));
        reqs.push(req);
      }
      const trickle = setInterval(() => reqs.forEach((r) => !r.destroyed && r.write(Buffer.alloc(1))), 2000);
      await sleep(1500);
      return () => {
        clearInterval(trickle);
        reqs.forEach((r) => r.destroy());
      };
    },
  },
  {
    name: 'evidence: 700 nonce evidence requests in one burst',
    async start(port) {
      await Promise.all(
        Array.from({ length: 700 }, (_, i) =>
          new Promise<void>((resolve) => {
            const req = httpRequest({ host: '127.0.0.1', port, path: `/v1/evidence?nonce=${Buffer.alloc(32, i % 256).toString('hex')}${i.toString(16).padStart(4, '0')}`, agent: false }, (r) => {
              r.resume();
              r.on('end', resolve);
            });
            req.on('error', () => resolve());
            req.end();
          }),
        ),
      );
      return () => undefined;
    },
  },
];

function run(cmd: string, args: readonly string[], timeoutMs: number): Promise<{ code: number | null; ms: number; out: string }> {
  return new Promise((resolve) => {
    const started = performance.now();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (out += d.toString('utf8')));
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, ms: Math.round(performance.now() - started), out: out.trim().split('\n').slice(-1)[0] ?? '' });
    });
  });
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const jsonAt = argv.indexOf('--json');
  const json = jsonAt >= 0 ? argv[jsonAt + 1] : undefined;
  const root = repoRoot();
  const cli = path.join(root, 'dist', 'cli', 'main.js');
  if (!existsSync(cli)) throw new Error('dist/ is missing: run `npm run build` (npm run attack-check does)');
  const dirs = await ensureDemoModels(root);
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'cloister-attack-'));
  const port = await freePort();
  const server: ChildProcess = spawn(
    process.execPath,
    [cli, 'serve', '--platform', 'simulated', '--listen', `127.0.0.1:${port}`, '--state-dir', tmp, '--model', `classifier=${dirs.classifierDir}`, '--embedder', `embedder=${dirs.embedderDir}`, '--log-level', 'error'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const results: { attack: string; transport: string; ok: boolean; ms: number; answer: string }[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      let seen = '';
      server.stdout?.on('data', (d: Buffer) => {
        seen += d.toString('utf8');
        if (seen.includes('websocket:')) resolve();
      });
      server.once('exit', (code) => reject(new Error(`serve exited (${code ?? 'signal'})`)));
    });
    const policy = path.join(tmp, 'policy.json');
    const machine = `${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, Node ${process.version}`;
    process.stdout.write(`attack-check: server on 127.0.0.1:${port} (simulated, demo models); ${machine}\n`);
    for (const attack of ATTACKS) {
      const stop = await attack.start(port);
      try {
        for (const [transport, url] of [['http', `http://127.0.0.1:${port}`], ['ws', `ws://127.0.0.1:${port}/`]] as const) {
          const r = await run(process.execPath, [cli, 'infer', '--url', url, '--policy', policy, '--text', 'chest pain radiating to the left arm'], DEADLINE_MS + 2000);
          const ok = r.code === 0 && r.ms <= DEADLINE_MS;
          results.push({ attack: attack.name, transport, ok, ms: r.ms, answer: ok ? r.out : `exit ${String(r.code)}: ${r.out}` });
          process.stdout.write(`${ok ? 'ok  ' : 'FAIL'} ${attack.name} | infer over ${transport}: ${r.ms} ms | ${ok ? r.out : `exit ${String(r.code)} ${r.out}`}\n`);
        }
      } finally {
        stop();
      }
      await sleep(1000);
    }
    if (json !== undefined) await writeFile(json, `${JSON.stringify({ date: new Date().toISOString(), machine, deadlineMs: DEADLINE_MS, results }, null, 2)}\n`);
  } finally {
    server.kill('SIGTERM');
    await new Promise<void>((r) => (server.exitCode !== null ? r() : server.once('exit', () => r())));
    await rm(tmp, { recursive: true, force: true });
  }
  process.exitCode = results.every((r) => r.ok) ? 0 : 1;
}

await main();
