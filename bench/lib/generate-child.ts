/**
 * Child-process entry of bench:generate (compiled bench only): the server and its generation
 * engine (./generate-host.ts) in their own process, as in a deployment, so the SDK (the
 * client, in the parent) does not take turns on the server's event loop. onnxruntime-node
 * runs each model step synchronously on the calling (main) thread, so a client in the same
 * process would add its decrypting and parsing to every step. Both arms of the comparison use
 * this one engine:
 * - in-process: the parent asks for a closed loop of GenerationEngine.generate() calls run
 *   here (one IPC message per measurement, none per token);
 * - sealed: the parent's SDK through this server.
 * CPU accounting: process.cpuUsage() of this process, read before and after each measurement.
 */
import type { GenerationEngineOptions } from '../../src/inference/generation/engine.js';
import { startGenerateHost } from './generate-host.js';
import type { GenerateHost } from './generate-host.js';

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

type Request =
  | { readonly type: 'start'; readonly engine: GenerationEngineOptions }
  | { readonly type: 'loop'; readonly id: number; readonly model: string; readonly prompt: string; readonly maxTokens: number; readonly concurrency: number; readonly durationMs: number }
  | { readonly type: 'cpu'; readonly id: number }
  | { readonly type: 'close' };

let host: GenerateHost | undefined;

function send(m: GenerateChildReply): void {
  process.send?.(m);
}

function failed(err: unknown): void {
  send({ type: 'error', message: err instanceof Error ? `${err.name}: ${err.message}` : 'failed' });
}

async function handle(m: Request): Promise<void> {
  if (m.type === 'start') {
    host = await startGenerateHost(m.engine);
    send({ type: 'ready', wsUrl: host.wsUrl, policy: host.policy, rootDer: Buffer.from(host.rootDer).toString('base64') });
    return;
  }
  if (m.type === 'close') {
    await host?.close();
    process.exit(0);
  }
  if (host === undefined) throw new Error('not started');
  if (m.type === 'loop') {
    const r = await host.loop(m.model, m.prompt, m.maxTokens, m.concurrency, m.durationMs);
    send({
      type: 'measured',
      id: m.id,
      m: { ops: r.ops, elapsedMs: r.elapsedMs, ...(r.units === undefined ? {} : { units: r.units }), latenciesMs: [...(r.latenciesMs ?? [])], ttftMs: [...(r.samples?.['ttftMs'] ?? [])] },
    });
  } else {
    const c = await host.cpu();
    send({ type: 'cpu', id: m.id, ...c });
  }
}

process.on('message', (m: Request) => {
  handle(m).catch(failed);
});
process.on('disconnect', () => process.exit(0));
