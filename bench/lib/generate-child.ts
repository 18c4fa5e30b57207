/**
 * Child-process entry of bench:generate (compiled bench only): the server and its generation
 * engine in their own process, as in a deployment, so the SDK (the client, in the parent)
 * does not take turns on the server's event loop. onnxruntime-node runs each model step
 * synchronously on the calling (main) thread, so a client in the same process would add its
 * decrypting and parsing to every step. Both arms of the comparison use this one engine:
 * - in-process: the parent asks for a closed loop of GenerationEngine.generate() calls run
 *   here (one IPC message per measurement, none per token);
 * - sealed: the parent's SDK through this server.
 * CPU accounting: process.cpuUsage() of this process, read before and after each measurement.
 */
import { createSimulatedAttester } from '../../src/attester/simulated/attester.js';
import { developmentPolicy } from '../../src/client/dev-policy.js';
import { GenerationEngine } from '../../src/inference/generation/engine.js';
import type { GenerationEngineOptions } from '../../src/inference/generation/engine.js';
import { CloisterServer } from '../../src/server/server.js';
import { closedLoop } from './load.js';

export interface GenerateChildStart {
  readonly type: 'start';
  readonly engine: GenerationEngineOptions;
}

export interface GenerateChildLoop {
  readonly type: 'loop';
  readonly id: number;
  readonly model: string;
  readonly prompt: string;
  readonly maxTokens: number;
  readonly concurrency: number;
  readonly durationMs: number;
}

export interface SerializedMeasurement {
  readonly ops: number;
  readonly elapsedMs: number;
  readonly units?: number;
  readonly latenciesMs: number[];
  readonly ttftMs: number[];
}

export type GenerateChildReply =
  | { readonly type: 'ready'; readonly wsUrl: string; readonly policy: string; readonly rootDer: string }
  | { readonly type: 'measured'; readonly id: number; readonly m: SerializedMeasurement }
  | { readonly type: 'cpu'; readonly id: number; readonly cpuMicros: number; readonly steps: number; readonly peakRss: number }
  | { readonly type: 'error'; readonly message: string };

let engine: GenerationEngine | undefined;
let server: CloisterServer | undefined;
let peakRss = process.memoryUsage().rss;
const sampler = setInterval(() => {
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
}, 100);

function send(m: GenerateChildReply): void {
  process.send?.(m);
}

function failed(err: unknown): void {
  send({ type: 'error', message: err instanceof Error ? `${err.name}: ${err.message}` : 'failed' });
}

async function start(options: GenerationEngineOptions): Promise<void> {
  engine = new GenerationEngine(options);
  await engine.start();
  const attester = await createSimulatedAttester();
  server = new CloisterServer({ engines: [engine], attester, limits: { requestTimeoutMs: 600_000 } });
  const address = await server.listen({ host: '127.0.0.1', port: 0 });
  const policy = developmentPolicy({ pcrs: attester.pcrs, rootSha256Hex: attester.rootSha256Hex, models: server.router.models() });
  send({ type: 'ready', wsUrl: address.wsUrl, policy: JSON.stringify(policy), rootDer: Buffer.from(attester.rootDer).toString('base64') });
}

async function loop(m: GenerateChildLoop): Promise<void> {
  const e = engine;
  if (e === undefined) throw new Error('not started');
  const request = { op: 'completion' as const, prompt: m.prompt, maxTokens: m.maxTokens, temperature: 0, topP: undefined, topK: undefined, seed: undefined, stop: [], presencePenalty: 0, frequencyPenalty: 0, includeUsage: true };
  const r = await closedLoop(m.concurrency, m.durationMs, async () => {
    const s0 = performance.now();
    let ttft = Number.NaN;
    let tokens = 0;
    for await (const ev of e.generate(m.model, request, new AbortController().signal)) {
      if (ev.kind === 'text' && Number.isNaN(ttft)) ttft = performance.now() - s0;
      if (ev.kind === 'end') tokens = ev.completionTokens;
    }
    return { units: tokens, samples: { ttftMs: ttft } };
  });
  send({
    type: 'measured',
    id: m.id,
    m: { ops: r.ops, elapsedMs: r.elapsedMs, ...(r.units === undefined ? {} : { units: r.units }), latenciesMs: [...(r.latenciesMs ?? [])], ttftMs: [...(r.samples?.['ttftMs'] ?? [])] },
  });
}

process.on('message', (m: GenerateChildStart | GenerateChildLoop | { type: 'cpu'; id: number } | { type: 'close' }) => {
  if (m.type === 'start') start(m.engine).catch(failed);
  else if (m.type === 'loop') loop(m).catch(failed);
  else if (m.type === 'cpu') {
    const u = process.cpuUsage();
    send({ type: 'cpu', id: m.id, cpuMicros: u.user + u.system, steps: engine?.stats().steps ?? 0, peakRss });
  } else if (m.type === 'close') {
    clearInterval(sampler);
    void Promise.all([server?.close(), engine?.close()]).finally(() => process.exit(0));
  }
});
process.on('disconnect', () => process.exit(0));
