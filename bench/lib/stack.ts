/**
 * The server side of the end-to-end benchmarks: a real CloisterServer on the simulated
 * platform (the one `npm start` runs), with either the demo ONNX models or an upstream
 * engine in front of the bench token engine, plus the plaintext baseline server on the
 * same engine.
 *
 * `startStack` runs it in a child process when the compiled bench is running (as a real
 * deployment would: the server has its own process and event loop, the load generator
 * another), and in this process otherwise (vitest runs the TypeScript sources directly, and
 * a child cannot load them); `isolated` says which.
 */
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createSimulatedAttester } from '../../src/attester/simulated/attester.js';
import { developmentPolicy } from '../../src/client/dev-policy.js';
import { OnnxEngine } from '../../src/inference/onnx/engine.js';
import { UpstreamEngine } from '../../src/inference/upstream/engine.js';
import type { Engine } from '../../src/inference/types.js';
import { CloisterServer } from '../../src/server/server.js';
import { ensureDemoModels } from './demo.js';
import { startPlainServer } from './plain.js';
import type { PlainServer } from './plain.js';
import { startTokenEngine } from './token-engine.js';
import type { TokenEngine } from './token-engine.js';

export interface StackOptions {
  readonly repoRoot: string;
  readonly kind: 'onnx' | 'upstream';
  /** Tokens per streamed answer (upstream). */
  readonly tokens?: number;
  /**
   * A token engine already running elsewhere (its own process, as vLLM is in a deployment),
   * for `kind: 'upstream'`; without it the token engine runs in the server's process.
   */
  readonly engine?: { readonly baseUrl: string; readonly model: string };
}

export interface StackInfo {
  readonly wsUrl: string;
  readonly httpUrl: string;
  /** Plaintext baseline (onnx only). */
  readonly plainUrl?: string;
  /** The development policy for this run's simulated server (JSON object). */
  readonly policy: Record<string, unknown>;
  readonly rootDerHex: string;
  readonly model: string;
  /** Token engine, for the direct arm (upstream only). */
  readonly upstreamBaseUrl?: string;
  readonly upstreamModel?: string;
}

/** Longest text the bench engine accepts: the e2e scenario sends 64 KiB. */
export const BENCH_MAX_INPUT_CHARS = 70_000;

/**
 * Server limits for the benchmark. The replay window keeps every request id for its window
 * (60 s); at the default 100 000 entries a server sustaining more than ~1 700 requests/s
 * would answer OVERLOADED, so the bench allows more entries (a capacity setting; the
 * window and its checks are unchanged).
 */
const BENCH_LIMITS = { maxReplayEntries: 2_000_000 } as const;

export interface LocalStack {
  readonly info: StackInfo;
  readonly onnx?: OnnxEngine;
  close(): Promise<void>;
}

export async function createLocalStack(options: StackOptions): Promise<LocalStack> {
  let engine: Engine;
  let onnx: OnnxEngine | undefined;
  let tokenEngine: TokenEngine | undefined;
  let model: string;
  if (options.kind === 'onnx') {
    const dirs = await ensureDemoModels(options.repoRoot);
    model = 'demo-classifier';
    onnx = new OnnxEngine({ models: [{ name: model, dir: dirs.classifierDir }], maxInputChars: BENCH_MAX_INPUT_CHARS });
    engine = onnx;
  } else {
    if (options.engine === undefined) tokenEngine = await startTokenEngine({ tokens: options.tokens ?? 256 });
    const upstream = options.engine ?? { baseUrl: tokenEngine?.baseUrl ?? '', model: tokenEngine?.model ?? '' };
    model = upstream.model;
    engine = new UpstreamEngine({ baseUrl: upstream.baseUrl, model, maxConcurrency: 64 });
  }
  await engine.start();
  const attester = await createSimulatedAttester();
  // guardPolicy allow: these benches measure the relay token by token; the guard's own cost
  // (redact holds text back and rewrites events) is measured by bench:rag (docs/GUARD.md).
  const server = new CloisterServer({ engines: [engine], attester, limits: BENCH_LIMITS, guardPolicy: 'allow' });
  const address = await server.listen({ host: '127.0.0.1', port: 0 });
  let plain: PlainServer | undefined;
  if (options.kind === 'onnx') plain = await startPlainServer(engine);
  const policy = developmentPolicy({ pcrs: attester.pcrs, rootSha256Hex: attester.rootSha256Hex, models: server.router.models() });
  const info: StackInfo = {
    wsUrl: address.wsUrl,
    httpUrl: address.httpUrl ?? '',
    ...(plain === undefined ? {} : { plainUrl: plain.url }),
    policy,
    rootDerHex: Buffer.from(attester.rootDer).toString('hex'),
    model,
    ...(options.kind === 'upstream' ? { upstreamBaseUrl: options.engine?.baseUrl ?? tokenEngine?.baseUrl ?? '', upstreamModel: model } : {}),
  };
  return {
    info,
    ...(onnx === undefined ? {} : { onnx }),
    async close() {
      await plain?.close();
      await server.close();
      await engine.close();
      await tokenEngine?.close();
    },
  };
}

export interface Stack {
  readonly info: StackInfo;
  /** True when the server runs in its own process. */
  readonly isolated: boolean;
  /** Resident set size of the server process, bytes. */
  rss(): Promise<number>;
  /**
   * CPU time (user + system, microseconds) the server process has used so far, all its
   * threads (onnxruntime's included); null when the server shares this process (not isolated).
   */
  cpuUs(): Promise<number | null>;
  close(): Promise<void>;
}

type ChildReply =
  | { readonly type: 'ready'; readonly info: StackInfo }
  | { readonly type: 'engine-ready'; readonly baseUrl: string; readonly model: string }
  | { readonly type: 'rss'; readonly rss: number }
  | { readonly type: 'cpu'; readonly us: number }
  | { readonly type: 'error'; readonly message: string };

function childEntry(): string | undefined {
  const self = fileURLToPath(import.meta.url);
  if (!self.endsWith('.js')) return undefined;
  const entry = self.replace(/stack\.js$/, 'stack-child.js');
  return existsSync(entry) ? entry : undefined;
}

function nextReply(child: ChildProcess, type: ChildReply['type']): Promise<ChildReply> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: ChildReply): void => {
      if (m.type === 'error') {
        cleanup();
        reject(new Error(`bench server failed: ${m.message}`));
      } else if (m.type === type) {
        cleanup();
        resolve(m);
      }
    };
    const onExit = (code: number | null): void => {
      cleanup();
      reject(new Error(`bench server exited (${code ?? 'signal'})`));
    };
    const cleanup = (): void => {
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    child.on('message', onMessage);
    child.on('exit', onExit);
  });
}

export async function startStack(options: StackOptions): Promise<Stack> {
  const entry = childEntry();
  if (entry === undefined) {
    const local = await createLocalStack(options);
    return {
      info: local.info,
      isolated: false,
      rss: () => Promise.resolve(process.memoryUsage().rss),
      cpuUs: () => Promise.resolve(null),
      close: () => local.close(),
    };
  }
  // The token engine stands in for vLLM, which is a separate process in a deployment: it gets
  // its own process here too, so its writes do not take turns on the server's event loop.
  let engineChild: ChildProcess | undefined;
  let serverOptions = options;
  if (options.kind === 'upstream' && options.engine === undefined) {
    engineChild = fork(entry, [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    const engineReady = nextReply(engineChild, 'engine-ready');
    engineChild.send({ type: 'engine', tokens: options.tokens ?? 256 });
    const e = await engineReady;
    if (e.type !== 'engine-ready') throw new Error('unexpected reply');
    serverOptions = { ...options, engine: { baseUrl: e.baseUrl, model: e.model } };
  }
  const child = fork(entry, [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const ready = nextReply(child, 'ready');
  child.send({ type: 'start', options: serverOptions });
  let reply: ChildReply;
  try {
    reply = await ready;
  } catch (err) {
    if (engineChild !== undefined) await stopChild(engineChild);
    throw err;
  }
  if (reply.type !== 'ready') throw new Error('unexpected reply');
  return {
    info: reply.info,
    isolated: true,
    async rss() {
      const r = nextReply(child, 'rss');
      child.send({ type: 'rss' });
      const m = await r;
      return m.type === 'rss' ? m.rss : Number.NaN;
    },
    async cpuUs() {
      const r = nextReply(child, 'cpu');
      child.send({ type: 'cpu' });
      const m = await r;
      return m.type === 'cpu' ? m.us : null;
    },
    async close() {
      await stopChild(child);
      if (engineChild !== undefined) await stopChild(engineChild);
    },
  };
}

async function stopChild(child: ChildProcess): Promise<void> {
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.send({ type: 'close' });
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}
