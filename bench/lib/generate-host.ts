/**
 * The server side of bench:generate: a generation engine and a CloisterServer on loopback,
 * plus the in-process arm's closed loop on that engine. Runs in a child process
 * (./generate-child.ts) in the compiled bench, in the calling process otherwise (vitest).
 */
import { performance } from 'node:perf_hooks';

import { createSimulatedAttester } from '../../src/attester/simulated/attester.js';
import { developmentPolicy } from '../../src/client/dev-policy.js';
import { GenerationEngine } from '../../src/inference/generation/engine.js';
import type { GenerationEngineOptions } from '../../src/inference/generation/engine.js';
import { CloisterServer } from '../../src/server/server.js';
import { closedLoop } from './load.js';
import type { Measurement } from './load.js';

export interface GenerateHost {
  readonly wsUrl: string;
  readonly policy: string;
  readonly rootDer: Uint8Array;
  /** The in-process arm: `concurrency` closed-loop streams of generate() for `durationMs`. */
  loop(model: string, prompt: string, maxTokens: number, concurrency: number, durationMs: number): Promise<Measurement>;
  /** Cumulative CPU time of the host's process (microseconds), the engine's steps and peak RSS. */
  cpu(): Promise<{ cpuMicros: number; steps: number; peakRss: number }>;
  close(): Promise<void>;
}

export async function startGenerateHost(options: GenerationEngineOptions): Promise<GenerateHost> {
  const engine = new GenerationEngine(options);
  await engine.start();
  let peakRss = process.memoryUsage().rss;
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  }, 100);
  const attester = await createSimulatedAttester();
  const server = new CloisterServer({ engines: [engine], attester, limits: { requestTimeoutMs: 600_000 } });
  try {
    const address = await server.listen({ host: '127.0.0.1', port: 0 });
    const policy = developmentPolicy({ pcrs: attester.pcrs, rootSha256Hex: attester.rootSha256Hex, models: server.router.models() });
    return {
      wsUrl: address.wsUrl,
      policy: JSON.stringify(policy),
      rootDer: attester.rootDer,
      loop(model, prompt, maxTokens, concurrency, durationMs) {
        const request = { op: 'completion' as const, prompt, maxTokens, temperature: 0, topP: undefined, topK: undefined, seed: undefined, stop: [], presencePenalty: 0, frequencyPenalty: 0, includeUsage: true };
        return closedLoop(concurrency, durationMs, async () => {
          const s0 = performance.now();
          let ttft = Number.NaN;
          let tokens = 0;
          for await (const ev of engine.generate(model, request, new AbortController().signal)) {
            if (ev.kind === 'text' && Number.isNaN(ttft)) ttft = performance.now() - s0;
            if (ev.kind === 'end') tokens = ev.completionTokens;
          }
          return { units: tokens, samples: { ttftMs: ttft } };
        });
      },
      cpu() {
        const u = process.cpuUsage();
        return Promise.resolve({ cpuMicros: u.user + u.system, steps: engine.stats().steps, peakRss: Math.max(peakRss, process.memoryUsage().rss) });
      },
      async close() {
        clearInterval(sampler);
        await server.close();
        await engine.close();
      },
    };
  } catch (err) {
    clearInterval(sampler);
    await server.close();
    await engine.close();
    throw err;
  }
}
