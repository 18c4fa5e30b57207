/**
 * bench:generate - CPU text generation (issue 12): tokens/s for 1 and 4 concurrent streams,
 * time to first token and peak RSS, in process (GenerationEngine.generate) against sealed
 * (the SDK's stream through the server, every token sealed as its own chunk), on two models:
 * - demo-lm (models/demo/lm, built if missing);
 * - a llama-architecture model with random weights in SmolLM2-135M's shape, built by the
 *   bench (bench/lib/random-llama.ts; random weights cost what trained ones do).
 * Target: sealed / in-process tokens/s >= 0.97. The arms are interleaved round by round.
 * The server runs in this process (the engine is in-process either way; the sealed arm adds
 * the SDK, the WebSocket transport, sealing and the server's handler on the same cores).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { createSimulatedAttester } from '../../src/attester/simulated/attester.js';
import { connect } from '../../src/client/client.js';
import type { CloisterClient } from '../../src/client/client.js';
import { developmentPolicy } from '../../src/client/dev-policy.js';
import { GenerationEngine } from '../../src/inference/generation/engine.js';
import { CloisterServer } from '../../src/server/server.js';
import { compare, ratio, target } from '../lib/harness.js';
import type { Arm } from '../lib/harness.js';
import { closedLoop } from '../lib/load.js';
import { ensureDemoModels } from '../lib/demo.js';
import { SMOLLM2_135M, type LlamaShape, writeRandomLlama } from '../lib/random-llama.js';
import { ResultBuilder } from '../lib/scenario.js';
import type { Scenario, ScenarioContext, ScenarioResult } from '../lib/scenario.js';

const SMOKE_SHAPE: LlamaShape = { hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 128, vocab: 1000, maxPositions: 1024 };

interface Target {
  readonly model: string;
  readonly label: string;
  readonly prompt: string;
  readonly tokens: number;
}

export const scenario: Scenario = {
  name: 'generate',
  title: 'CPU text generation: sealed (SDK through the server) vs in process, 1 and 4 streams',
  async run(ctx: ScenarioContext): Promise<ScenarioResult> {
    const out = new ResultBuilder();
    const tmp = await mkdtemp(join(tmpdir(), 'cloister-bench-generate-'));
    const demo = await ensureDemoModels(ctx.repoRoot);
    const lmDir = demo.lmDir;
    const shape = ctx.smoke ? SMOKE_SHAPE : SMOLLM2_135M;
    const randomDir = join(tmp, 'random-llama');
    const t0 = performance.now();
    await writeRandomLlama(randomDir, shape);
    out.metrics.push({ label: `random llama (${shape.layers} layers, hidden ${shape.hidden}, vocab ${shape.vocab}) built in`, value: (performance.now() - t0) / 1000, unit: 's' });
    const rssBefore = process.memoryUsage().rss;
    const engine = new GenerationEngine({
      models: [
        { name: 'demo-lm', dir: lmDir },
        { name: 'random-llama', dir: randomDir },
      ],
      maxActiveGenerations: 4,
    });
    await engine.start();
    const attester = await createSimulatedAttester();
    const server = new CloisterServer({ engines: [engine], attester, limits: { requestTimeoutMs: 600_000 } });
    let client: CloisterClient | undefined;
    let peakRss = process.memoryUsage().rss;
    const sampler = setInterval(() => {
      peakRss = Math.max(peakRss, process.memoryUsage().rss);
    }, 50);
    try {
      const address = await server.listen({ host: '127.0.0.1', port: 0 });
      const policy = developmentPolicy({ pcrs: attester.pcrs, rootSha256Hex: attester.rootSha256Hex, models: server.router.models() });
      client = await connect(address.wsUrl, { policy: JSON.stringify(policy), trustedRoots: { simulated: [attester.rootDer] } });
      const sdk = client;
      const randomPrompt = Array.from({ length: 32 }, (_, i) => `w${(i * 37) % 900}`).join(' ');
      const targets: Target[] = [
        { model: 'demo-lm', label: 'demo-lm', prompt: 'chest pain radiating to the left arm', tokens: ctx.smoke ? 16 : 128 },
        { model: 'random-llama', label: `random llama ${shape === SMOLLM2_135M ? 'SmolLM2-135M shape' : 'smoke shape'} fp32`, prompt: randomPrompt, tokens: ctx.smoke ? 8 : 32 },
      ];
      const concurrencies = ctx.smoke ? [1] : [1, 4];
      ctx.progress.plan(targets.length * concurrencies.length * ctx.timing.rounds * 2);
      for (const tg of targets) {
        const body = { prompt: tg.prompt, max_tokens: tg.tokens, temperature: 0, stream: true, stream_options: { include_usage: true } };
        for (const c of concurrencies) {
          // Each round runs long enough for a few whole answers per stream.
          const roundMs = Math.max(ctx.timing.roundMs, ctx.smoke ? 200 : 4_000);
          const arms: Arm[] = [
            {
              name: 'in-process',
              measure: (ms) =>
                closedLoop(c, ms, async () => {
                  const s0 = performance.now();
                  let ttft = Number.NaN;
                  let tokens = 0;
                  for await (const e of engine.generate(tg.model, { op: 'completion', prompt: tg.prompt, maxTokens: tg.tokens, temperature: 0, topP: undefined, topK: undefined, seed: undefined, stop: [], presencePenalty: 0, frequencyPenalty: 0, includeUsage: true }, new AbortController().signal)) {
                    if (e.kind === 'text' && Number.isNaN(ttft)) ttft = performance.now() - s0;
                    if (e.kind === 'end') tokens = e.completionTokens;
                  }
                  return { units: tokens, samples: { ttftMs: ttft } };
                }),
            },
            {
              name: 'sealed',
              measure: (ms) =>
                closedLoop(c, ms, async () => {
                  const s0 = performance.now();
                  let ttft = Number.NaN;
                  let tokens = 0;
                  for await (const chunk of sdk.request({ op: 'completion', model: tg.model, input: body, stream: true })) {
                    const ch = chunk as { choices?: { text?: string }[]; usage?: { completion_tokens: number } };
                    if (Number.isNaN(ttft) && (ch.choices?.[0]?.text ?? '') !== '') ttft = performance.now() - s0;
                    if (ch.usage !== undefined) tokens = ch.usage.completion_tokens;
                  }
                  return { units: tokens, samples: { ttftMs: ttft } };
                }),
            },
          ];
          const cmp = await compare('generate', { model: tg.label, streams: c }, arms, { ...ctx.timing, roundMs, unit: 'tokens/s' }, ctx.progress);
          out.comparisons.push(cmp);
          const r = ratio(cmp, 'sealed', 'in-process');
          out.ratios.push({ ...r, target: { kind: 'min', threshold: 0.97 } });
          out.targets.push(target(`${tg.label}: sealed/in-process tokens/s, ${c} stream(s)`, r.median, 'min', 0.97, 'x'));
        }
      }
      out.metrics.push({ label: 'RSS before loading the models', value: rssBefore / 2 ** 20, unit: 'MiB' });
      out.metrics.push({ label: 'peak RSS (models loaded, all runs; server, SDK and engine in one process)', value: peakRss / 2 ** 20, unit: 'MiB' });
      out.notes.push('one process: the load generator, the SDK, the server and the engine share the cores; steps of concurrent streams take turns (docs/GENERATION.md), so 4 streams share the single-stream token rate');
      out.notes.push('not measured here: q8/q4 variants, a 0.5B+ model (needs external-data weights), the node-llama-cpp anchor, the image size');
    } finally {
      clearInterval(sampler);
      await client?.close();
      await server.close();
      await engine.close();
      await rm(tmp, { recursive: true, force: true });
    }
    return out.result();
  },
};
