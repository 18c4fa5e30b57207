/**
 * bench:memory - resident memory of the server process (CloisterServer + demo classifier on
 * the simulated platform): idle after start-up, during sealed load (c=32, 4 KiB texts, over
 * four connections) and idle again after the load. Samples every 100 ms; reports the median
 * while idle and the peak under load.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { connect } from '../../src/client/client.js';
import type { CloisterClient } from '../../src/client/client.js';
import { compare } from '../lib/harness.js';
import { closedLoop } from '../lib/load.js';
import { syntheticText } from '../lib/demo.js';
import { ResultBuilder } from '../lib/scenario.js';
import type { Scenario, ScenarioContext, ScenarioResult } from '../lib/scenario.js';
import { startStack } from '../lib/stack.js';
import type { Stack } from '../lib/stack.js';
import { median } from '../lib/stats.js';

const MIB = 1024 * 1024;
const CONCURRENCY = 32;
const CONNECTIONS = 4;

async function sampleIdle(stack: Stack, ms: number): Promise<number[]> {
  const out: number[] = [];
  const end = Date.now() + ms;
  while (Date.now() < end) {
    out.push(await stack.rss());
    await sleep(100);
  }
  return out;
}

export const scenario: Scenario = {
  name: 'memory',
  title: 'server RSS idle and under sealed load (demo classifier)',
  async run(ctx: ScenarioContext): Promise<ScenarioResult> {
    const out = new ResultBuilder();
    const stack = await startStack({ repoRoot: ctx.repoRoot, kind: 'onnx' });
    const clients: CloisterClient[] = [];
    try {
      const idleMs = ctx.smoke ? 200 : 2000;
      const loadRounds = ctx.smoke ? 1 : 4;
      const idle = await sampleIdle(stack, idleMs);
      for (let i = 0; i < CONNECTIONS; i++) {
        clients.push(
          await connect(stack.info.wsUrl, {
            policy: JSON.stringify(stack.info.policy),
            trustedRoots: { simulated: [new Uint8Array(Buffer.from(stack.info.rootDerHex, 'hex'))] },
          }),
        );
      }
      const texts = Array.from({ length: 8 }, (_, i) => syntheticText(4096, i + 21));
      let n = 0;
      const loaded: number[] = [];
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          loaded.push(await stack.rss());
          await sleep(100);
        }
      })();
      ctx.progress.plan(loadRounds);
      const cmp = await compare(
        'memory-load',
        { c: CONCURRENCY, size: '4KiB' },
        [
          {
            name: 'sealed',
            measure: (ms) =>
              closedLoop(CONCURRENCY, ms, async (w) => {
                const client = clients[w % CONNECTIONS];
                if (client === undefined) throw new Error('no client');
                await client.classify(texts[n++ % texts.length] ?? '');
              }),
          },
        ],
        { rounds: loadRounds, warmupMs: ctx.timing.warmupMs, roundMs: ctx.smoke ? ctx.timing.roundMs : 1500, unit: 'req/s' },
        ctx.progress,
      );
      sampling = false;
      await sampler;
      for (const c of clients) await c.close();
      clients.length = 0;
      await sleep(ctx.smoke ? 100 : 1000);
      const after = await sampleIdle(stack, idleMs);
      out.comparisons.push(cmp);
      out.metrics.push({ label: 'server RSS idle (median)', value: median(idle) / MIB, unit: 'MiB' });
      out.metrics.push({ label: 'server RSS under load (peak)', value: Math.max(...loaded) / MIB, unit: 'MiB' });
      out.metrics.push({ label: 'server RSS under load (median)', value: median(loaded) / MIB, unit: 'MiB' });
      out.metrics.push({ label: 'server RSS idle after load (median)', value: median(after) / MIB, unit: 'MiB' });
      out.notes.push(
        stack.isolated
          ? 'RSS of the server process alone (it runs in its own process)'
          : 'smoke/vitest mode: the server shares this process, so RSS includes the load generator and test runner',
      );
    } finally {
      for (const c of clients) await c.close();
      await stack.close();
    }
    return out.result();
  },
};
