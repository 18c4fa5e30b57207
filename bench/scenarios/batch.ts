/**
 * bench:batch - ONNX engine throughput at concurrency 32 with request batching on vs off:
 * two OnnxEngine instances on the same demo classifier, called in-process (no transport,
 * no sealing), measured interleaved. Target: batching >= 2x.
 */
import { compare, ratio, target } from '../lib/harness.js';
import type { Arm } from '../lib/harness.js';
import { closedLoop } from '../lib/load.js';
import { ensureDemoModels, syntheticText } from '../lib/demo.js';
import { ResultBuilder } from '../lib/scenario.js';
import type { Scenario, ScenarioContext, ScenarioResult } from '../lib/scenario.js';
import { OnnxEngine } from '../../src/inference/onnx/engine.js';
import type { Engine, EngineRequest } from '../../src/inference/types.js';

const CONCURRENCY = 32;
/** A typical short clinical note. */
const TEXT_BYTES = 256;
const TEXTS = 64;

/** Runs a request to completion; the result is checked for shape and dropped, never stored. */
export async function drain(engine: Engine, request: EngineRequest, signal: AbortSignal): Promise<number> {
  let n = 0;
  for await (const chunk of engine.run(request, { signal })) {
    if (chunk === undefined || chunk === null) throw new Error('engine returned an empty chunk');
    n++;
  }
  if (n === 0) throw new Error('engine returned nothing');
  return n;
}

export const scenario: Scenario = {
  name: 'batch',
  title: 'ONNX engine throughput at concurrency 32, batching on vs off (demo classifier, in-process)',
  async run(ctx: ScenarioContext): Promise<ScenarioResult> {
    const out = new ResultBuilder();
    const dirs = await ensureDemoModels(ctx.repoRoot);
    if (dirs.builtMs !== undefined) out.notes.push(`demo models were built first (${(dirs.builtMs / 1000).toFixed(1)} s, not measured)`);
    const model = { name: 'demo-classifier', dir: dirs.classifierDir };
    const on = new OnnxEngine({ models: [model], batching: true, maxBatchSize: 32 });
    const off = new OnnxEngine({ models: [model], batching: false });
    await on.start();
    await off.start();
    try {
      const texts = Array.from({ length: TEXTS }, (_, i) => syntheticText(TEXT_BYTES, i + 1));
      const armFor = (name: string, engine: OnnxEngine): Arm => {
        let i = 0;
        return {
          name,
          measure: (ms) =>
            closedLoop(CONCURRENCY, ms, async () => {
              const input = texts[i++ % TEXTS] ?? '';
              await drain(engine, { op: 'classify', model: model.name, input, params: {}, stream: false }, new AbortController().signal);
            }),
        };
      };
      ctx.progress.plan(ctx.timing.rounds * 2);
      const c = await compare(
        'batch',
        { c: CONCURRENCY, text: `${TEXT_BYTES}B` },
        [armFor('batching-off', off), armFor('batching-on', on)],
        { ...ctx.timing, unit: 'req/s' },
        ctx.progress,
      );
      out.comparisons.push(c);
      const r = ratio(c, 'batching-on', 'batching-off');
      out.ratios.push({ ...r, target: { kind: 'min', threshold: 2 } });
      out.targets.push(target('batching on / off throughput at c=32', r.median, 'min', 2, 'x'));
      const s = on.stats();
      out.metrics.push({ label: 'largest batch seen (batching on)', value: s.largestBatch, unit: 'texts' });
      out.metrics.push({ label: 'mean batch (batching on)', value: s.pipelineCalls > 0 ? s.requests / s.pipelineCalls : 0, unit: 'texts' });
    } finally {
      await on.close();
      await off.close();
    }
    return out.result();
  },
};
