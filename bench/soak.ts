/**
 * `npm run soak`: many clients for a long time against a real deployment shape, with faults
 * injected and the attacks of the hardening issue running alongside. Everything runs on
 * loopback and Unix sockets:
 *
 *   clients (SDK, WebSocket and HTTP) --TCP--> cloister relay --Unix socket--> cloister serve
 *                                                                  (simulated platform, demo
 *                                                                   ONNX models, upstream ->
 *                                                                   stand-in OpenAI engine)
 *
 * Faults: the engine is killed (SIGKILL) and restarted, the relay is killed and restarted,
 * keys rotate every minute (`--key-rotation-minutes 1`). Attacks through the relay: silent
 * connections, trickled request bodies, bursts of nonce evidence requests, junk WebSocket
 * frames. Every answer is compared with a baseline taken before the faults start.
 *
 * Report: requests answered correctly, coded errors by code, wrong answers (must be 0), lost
 * requests (neither an answer nor a coded error; must be 0), latency p50/p99, the server's
 * RSS at the start, peak and end (after warm-up), and the server's open sockets at the end.
 * Exit 1 when a wrong or lost request was seen.
 *
 *   npm run soak                                   64 clients, 10 minutes
 *   npm run soak -- --duration-s 120 --clients 16 --json soak.json [--no-attacks]
 */
import { fork, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { createConnection } from 'node:net';
import type { Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { WebSocket } from 'ws';
import { CloisterError } from '../src/errors.js';
import { connect } from '../src/client/client.js';
import type { CloisterClient } from '../src/client/client.js';
import { parsePolicy } from '../src/verifier/policy.js';
import { ensureDemoModels } from './lib/demo.js';
import { freePort, repoRoot, sleep } from './lib/procs.js';

interface Options {
  readonly durationS: number;
  readonly clients: number;
  readonly attacks: boolean;
  readonly warmupS: number;
  readonly json?: string;
}

function usage(msg: string): never {
  process.stderr.write(`soak: ${msg}\nusage: npm run soak -- [--duration-s N] [--clients N] [--warmup-s N] [--no-attacks] [--json FILE]\n`);
  process.exit(2);
}

function parseOptions(argv: readonly string[]): Options {
  let durationS = 600;
  let clients = 64;
  let warmupS = 30;
  let attacks = true;
  let json: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--no-attacks') {
      attacks = false;
      continue;
    }
    const v = argv[++i];
    if (v === undefined) usage(`${a ?? ''} needs a value`);
    const n = Number(v);
    switch (a) {
      case '--duration-s':
        if (!Number.isInteger(n) || n < 10) usage('--duration-s must be an integer >= 10');
        durationS = n;
        break;
      case '--clients':
        if (!Number.isInteger(n) || n < 1 || n > 1024) usage('--clients must be an integer from 1 to 1024');
        clients = n;
        break;
      case '--warmup-s':
        if (!Number.isInteger(n) || n < 0) usage('--warmup-s must be a non-negative integer');
        warmupS = n;
        break;
      case '--json':
        json = v;
        break;
      default:
        usage(`unknown option ${a ?? ''}`);
    }
  }
  if (warmupS >= durationS) usage('--warmup-s must be below --duration-s');
  return { durationS, clients, attacks, warmupS, ...(json === undefined ? {} : { json }) };
}


/** Waits until `line` appears on the child's stdout or stderr (bounded). */
function waitForOutput(child: ChildProcess, pattern: RegExp, timeoutMs: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not start within ${timeoutMs} ms: ${seen.slice(-400)}`)), timeoutMs);
    const on = (d: Buffer): void => {
      seen += d.toString('utf8');
      if (pattern.test(seen)) {
        clearTimeout(timer);
        child.stdout?.off('data', on);
        child.stderr?.off('data', on);
        resolve();
      }
    };
    child.stdout?.on('data', on);
    child.stderr?.on('data', on);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code ?? 'signal'}): ${seen.slice(-400)}`));
    });
  });
}

// --- the deployment ------------------------------------------------------------------------

class Deployment {
  engine?: ChildProcess;
  server?: ChildProcess;
  relay?: ChildProcess;

  constructor(
    readonly root: string,
    readonly tmp: string,
    readonly enginePort: number,
    readonly relayPort: number,
    readonly dirs: { classifierDir: string; embedderDir: string },
  ) {}

  get socketPath(): string {
    return path.join(this.tmp, 'cloister.sock');
  }
  get stateDir(): string {
    return path.join(this.tmp, 'state');
  }
  get cli(): string {
    return path.join(this.root, 'dist', 'cli', 'main.js');
  }

  async startEngine(): Promise<void> {
    const child = fork(path.join(this.root, 'build', 'bench', 'bench', 'lib', 'stack-child.js'), [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    this.engine = child;
    await new Promise<void>((resolve, reject) => {
      child.once('message', (m: { type: string; message?: string }) => (m.type === 'engine-ready' ? resolve() : reject(new Error(`engine: ${m.message ?? m.type}`))));
      child.send({ type: 'engine', tokens: 16, port: this.enginePort });
    });
  }

  async startServer(): Promise<void> {
    const child = spawn(
      process.execPath,
      [
        this.cli, 'serve', '--platform', 'simulated', '--socket', this.socketPath, '--state-dir', this.stateDir,
        '--model', `classifier=${this.dirs.classifierDir}`, '--embedder', `embedder=${this.dirs.embedderDir}`,
        '--upstream', `http://127.0.0.1:${this.enginePort}/v1`, '--upstream-model', 'bench-llm', '--upstream-name', 'llm',
        '--upstream-ready-timeout-s', '30', '--key-rotation-minutes', '1', '--log-level', 'error',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.server = child;
    await waitForOutput(child, /websocket:/, 60_000, 'cloister serve');
    child.stdout?.resume();
    child.stderr?.resume();
  }

  async startRelay(): Promise<void> {
    const child = spawn(process.execPath, [this.cli, 'relay', '--listen', `127.0.0.1:${this.relayPort}`, '--unix', this.socketPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.relay = child;
    for (let i = 0; i < 200; i++) {
      if (child.exitCode !== null) throw new Error(`relay exited (${child.exitCode})`);
      const ok = await new Promise<boolean>((resolve) => {
        const s = createConnection({ host: '127.0.0.1', port: this.relayPort });
        s.once('connect', () => {
          s.destroy();
          resolve(true);
        });
        s.once('error', () => resolve(false));
      });
      if (ok) break;
      await sleep(50);
    }
    child.stdout?.resume();
    child.stderr?.resume();
  }

  async restartEngine(): Promise<void> {
    await kill(this.engine, 'SIGKILL');
    await sleep(3000);
    await this.startEngine();
  }

  async restartRelay(): Promise<void> {
    await kill(this.relay, 'SIGKILL');
    await this.startRelay();
  }

  async stop(): Promise<void> {
    await kill(this.relay, 'SIGTERM');
    await kill(this.server, 'SIGTERM');
    await kill(this.engine, 'SIGKILL');
  }
}

async function kill(child: ChildProcess | undefined, signal: NodeJS.Signals): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill(signal);
  const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(t);
}

// --- the workload --------------------------------------------------------------------------

const TEXTS = [
  'chest pain radiating to the left arm with sweating',
  'severe headache with blurred vision and numbness in the right hand',
  'abdominal pain after meals with bloating and reflux',
  'shortness of breath on exertion and ankle swelling',
  'persistent cough with wheezing at night',
  'joint pain and morning stiffness in both hands',
  'itchy rash on the forearms after a new detergent',
  'frequent urination and burning sensation',
];

type Op = 'classify' | 'embed' | 'chat' | 'chat-stream';
const OPS: readonly Op[] = ['classify', 'embed', 'chat', 'chat-stream'];

interface Baseline {
  readonly labels: readonly string[];
  readonly scores: readonly number[];
  readonly vectors: readonly (readonly number[])[];
  readonly chat: string;
}

class Tally {
  correct = 0;
  wrong = 0;
  lost = 0;
  readonly codes = new Map<string, number>();
  readonly latencies: number[] = [];
  readonly byOp = new Map<Op, number>();
  outstanding = 0;

  code(c: string): void {
    this.codes.set(c, (this.codes.get(c) ?? 0) + 1);
  }
}

async function runOp(client: CloisterClient, op: Op, i: number, signal: AbortSignal): Promise<unknown> {
  const text = TEXTS[i % TEXTS.length] ?? '';
  switch (op) {
    case 'classify':
      return client.classify(text, { model: 'classifier', signal });
    case 'embed':
      return client.embed([text], { model: 'embedder', signal });
    case 'chat':
    case 'chat-stream': {
      const out: unknown[] = [];
      for await (const r of client.request({ op: 'chat', model: 'llm', input: { messages: [{ role: 'user', content: text }], max_tokens: 8 }, stream: op === 'chat-stream', signal })) out.push(r);
      return out;
    }
  }
}

function chatText(op: Op, out: unknown): string {
  const items = Array.isArray(out) ? out : [];
  let text = '';
  for (const item of items) {
    const choice = (item as { choices?: { message?: { content?: string }; delta?: { content?: string } }[] }).choices?.[0];
    text += op === 'chat' ? (choice?.message?.content ?? '') : (choice?.delta?.content ?? '');
  }
  return text;
}

function check(op: Op, i: number, out: unknown, base: Baseline): boolean {
  const k = i % TEXTS.length;
  switch (op) {
    case 'classify': {
      const top = (out as { label: string; score: number }[])[0];
      return top !== undefined && top.label === base.labels[k] && Math.abs(top.score - (base.scores[k] ?? 0)) < 1e-4;
    }
    case 'embed': {
      const v = (out as number[][])[0] ?? [];
      const b = base.vectors[k] ?? [];
      return v.length === b.length && v.every((x, j) => Math.abs(x - (b[j] ?? 0)) < 1e-5);
    }
    case 'chat':
    case 'chat-stream':
      return chatText(op, out) === base.chat;
  }
}

async function baseline(url: string, policyJson: string): Promise<Baseline> {
  const client = await connect(url, { policy: parsePolicy(policyJson) });
  try {
    const labels: string[] = [];
    const scores: number[] = [];
    const vectors: number[][] = [];
    for (const t of TEXTS) {
      const top = (await client.classify(t, { model: 'classifier' }))[0];
      labels.push(top?.label ?? '');
      scores.push(top?.score ?? 0);
      vectors.push((await client.embed([t], { model: 'embedder' }))[0] ?? []);
    }
    const out: unknown[] = [];
    for await (const r of client.request({ op: 'chat', model: 'llm', input: { messages: [{ role: 'user', content: 'x' }], max_tokens: 8 }, stream: false })) out.push(r);
    return { labels, scores, vectors, chat: chatText('chat', out) };
  } finally {
    await client.close();
  }
}

async function clientLoop(id: number, base: Baseline, urls: { ws: string; http: string }, policyJson: string, until: number, tally: Tally): Promise<void> {
  const url = id % 2 === 0 ? urls.ws : urls.http;
  let client: CloisterClient | undefined;
  let n = id;
  while (Date.now() < until) {
    if (client === undefined) {
      try {
        client = await connect(url, { policy: parsePolicy(policyJson), requestTimeoutMs: 30_000 });
      } catch (err) {
        tally.code(err instanceof CloisterError ? `connect:${err.code}` : 'connect:uncoded');
        await sleep(500);
        continue;
      }
    }
    const op = OPS[n % OPS.length] ?? 'classify';
    const i = n++;
    const started = performance.now();
    tally.outstanding++;
    tally.byOp.set(op, (tally.byOp.get(op) ?? 0) + 1);
    try {
      const out = await runOp(client, op, i, AbortSignal.timeout(60_000));
      if (check(op, i, out, base)) {
        tally.correct++;
        tally.latencies.push(performance.now() - started);
      } else {
        tally.wrong++;
      }
    } catch (err) {
      if (err instanceof CloisterError) {
        tally.code(err.code);
        // A client whose server is gone for good (e.g. refused after the relay restarted) starts over.
        if (err.code === 'CONNECTION_FAILED' && url === urls.ws) {
          await client.close().catch(() => undefined);
          client = undefined;
          await sleep(200);
        }
      } else {
        tally.lost++;
      }
    } finally {
      tally.outstanding--;
    }
  }
  await client?.close().catch(() => undefined);
}

// --- attacks --------------------------------------------------------------------------------

async function silentSockets(port: number, count: number, holdMs: number): Promise<void> {
  const sockets: Socket[] = [];
  for (let i = 0; i < count; i++) {
    const s = createConnection({ host: '127.0.0.1', port });
    s.on('error', () => undefined);
    sockets.push(s);
  }
  await sleep(holdMs);
  for (const s of sockets) s.destroy();
}

async function slowPosts(port: number, count: number, holdMs: number): Promise<void> {
  const reqs = [];
  for (let i = 0; i < count; i++) {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/v1/sealed', method: 'POST', headers: { 'content-length': '100000' }, agent: false });
    req.on('error', () => undefined);
    req.on('response', (r) => r.resume());
    req.write(Buffer.alloc(1));
    reqs.push(req);
  }
  for (let t = 0; t < holdMs; t += 2000) {
    await sleep(2000);
    for (const r of reqs) if (!r.destroyed) r.write(Buffer.alloc(1));
  }
  for (const r of reqs) r.destroy();
}

async function evidenceBurst(port: number, count: number): Promise<void> {
  await Promise.all(
    Array.from({ length: count }, (_, i) =>
      new Promise<void>((resolve) => {
        const req = httpRequest({ host: '127.0.0.1', port, path: `/v1/evidence?nonce=${Buffer.alloc(32, i % 256).toString('hex')}`, agent: false }, (r) => {
          r.resume();
          r.on('end', resolve);
        });
        req.on('error', () => resolve());
        req.end();
      }),
    ),
  );
}

async function junkFrames(port: number, count: number): Promise<void> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
  ws.on('error', () => undefined);
  await new Promise<void>((resolve) => {
    ws.once('open', () => resolve());
    ws.once('error', () => resolve());
    ws.once('close', () => resolve());
  });
  for (let i = 0; i < count && ws.readyState === WebSocket.OPEN; i++) ws.send(Buffer.alloc(64, i));
  await sleep(1000);
  ws.terminate();
}

// --- measurements -------------------------------------------------------------------------

async function rssOf(pid: number | undefined): Promise<number | undefined> {
  if (pid === undefined) return undefined;
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
    return kb === undefined ? undefined : Number(kb) * 1024;
  } catch {
    return undefined;
  }
}

async function openSockets(pid: number | undefined): Promise<number | undefined> {
  if (pid === undefined) return undefined;
  try {
    let n = 0;
    for (const fd of await readdir(`/proc/${pid}/fd`)) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      if (target.startsWith('socket:')) n++;
    }
    return n;
  } catch {
    return undefined;
  }
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

// --- main ----------------------------------------------------------------------------------

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  const root = repoRoot();
  if (!existsSync(path.join(root, 'dist', 'cli', 'main.js'))) usage('dist/ is missing: run `npm run build` (npm run soak does)');
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'cloister-soak-'));
  const dirs = await ensureDemoModels(root);
  const d = new Deployment(root, tmp, await freePort(), await freePort(), dirs);
  const log = (s: string): void => void process.stdout.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`);
  const machine = `${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
  log(`soak: ${o.clients} clients, ${o.durationS} s, attacks ${o.attacks ? 'on' : 'off'}; ${machine}`);
  const tally = new Tally();
  const faults: Record<string, number> = { engineRestarts: 0, relayRestarts: 0, attackRounds: 0 };
  const rss: { at: number; bytes: number }[] = [];
  let exitCode = 0;
  try {
    await d.startEngine();
    await d.startServer();
    await d.startRelay();
    const policyJson = await readFile(path.join(d.stateDir, 'policy.json'), 'utf8');
    const urls = { ws: `ws://127.0.0.1:${d.relayPort}/`, http: `http://127.0.0.1:${d.relayPort}` };
    const base = await baseline(urls.ws, policyJson);
    log(`baseline: ${base.labels.join(', ')}; chat '${base.chat.trim().slice(0, 20)}'`);

    const started = Date.now();
    const until = started + o.durationS * 1000;
    let stopping = false;
    const sampler = setInterval(() => {
      void rssOf(d.server?.pid).then((b) => {
        if (b !== undefined) rss.push({ at: (Date.now() - started) / 1000, bytes: b });
      });
    }, 2000);
    // Faults and attacks on a schedule, each awaited before its next round.
    // Sleeps that end early once the clients are done.
    const pause = async (ms: number): Promise<void> => {
      for (const end = Date.now() + ms; !stopping && Date.now() < end; ) await sleep(Math.min(500, end - Date.now()));
    };
    const schedule = async (firstMs: number, everyMs: number, fn: () => Promise<void>): Promise<void> => {
      await pause(firstMs);
      while (!stopping && Date.now() < until - 5000) {
        await fn().catch((err: unknown) => log(`fault step failed: ${String(err)}`));
        await pause(everyMs);
      }
    };
    const background = [
      schedule(45_000, 90_000, async () => {
        log('fault: engine killed (SIGKILL), restarted in 3 s');
        await d.restartEngine();
        faults['engineRestarts'] = (faults['engineRestarts'] ?? 0) + 1;
      }),
      schedule(75_000, 120_000, async () => {
        log('fault: relay killed (SIGKILL) and restarted');
        await d.restartRelay();
        faults['relayRestarts'] = (faults['relayRestarts'] ?? 0) + 1;
      }),
      ...(o.attacks
        ? [
            schedule(20_000, 60_000, async () => {
              log('attack: 300 silent sockets, 60 slow bodies, 200 nonce evidence requests, junk frames');
              faults['attackRounds'] = (faults['attackRounds'] ?? 0) + 1;
              await Promise.all([silentSockets(d.relayPort, 300, 20_000), slowPosts(d.relayPort, 60, 20_000), evidenceBurst(d.relayPort, 200), junkFrames(d.relayPort, 40)]);
            }),
          ]
        : []),
    ];
    const loops = Array.from({ length: o.clients }, (_, i) => clientLoop(i, base, urls, policyJson, until, tally));
    const progress = setInterval(() => log(`correct ${tally.correct}, coded ${[...tally.codes.values()].reduce((a, b) => a + b, 0)}, wrong ${tally.wrong}, lost ${tally.lost}`), 30_000);
    await Promise.all(loops);
    stopping = true;
    clearInterval(progress);
    await Promise.all(background);
    clearInterval(sampler);
    // Whatever is still open after the clients closed and the attacks stopped: the server's
    // own timers (head timeout, keep-alive, idle) must bring it down to its listener and the
    // engine pool.
    await sleep(15_000);
    const sockets = await openSockets(d.server?.pid);
    const after = rss.filter((r) => r.at >= o.warmupS);
    const lat = [...tally.latencies].sort((a, b) => a - b);
    const report = {
      date: new Date().toISOString(),
      machine,
      command: `npm run soak -- ${process.argv.slice(2).join(' ')}`.trim(),
      options: o,
      requests: Object.fromEntries(tally.byOp),
      correct: tally.correct,
      wrong: tally.wrong,
      lost: tally.lost + tally.outstanding,
      codedErrors: Object.fromEntries([...tally.codes].sort(([a], [b]) => (a < b ? -1 : 1))),
      latencyMs: { p50: Math.round(percentile(lat, 50) * 10) / 10, p99: Math.round(percentile(lat, 99) * 10) / 10 },
      serverRssMiB: {
        start: Math.round(((after[0]?.bytes ?? Number.NaN) / 2 ** 20) * 10) / 10,
        peak: Math.round((Math.max(...after.map((r) => r.bytes)) / 2 ** 20) * 10) / 10,
        end: Math.round(((after[after.length - 1]?.bytes ?? Number.NaN) / 2 ** 20) * 10) / 10,
      },
      serverOpenSocketsAtEnd: sockets ?? null,
      faults,
    };
    log(JSON.stringify(report, null, 2));
    if (o.json !== undefined) await writeFile(o.json, `${JSON.stringify(report, null, 2)}\n`);
    if (report.wrong > 0 || report.lost > 0) {
      log(`FAILED: ${report.wrong} wrong answers, ${report.lost} lost requests`);
      exitCode = 1;
    }
  } finally {
    await d.stop();
    await rm(tmp, { recursive: true, force: true });
  }
  process.exitCode = exitCode;
}

await main();
