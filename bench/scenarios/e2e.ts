/**
 * bench:e2e - the demo classification model end to end over WebSocket, three arms measured
 * interleaved in the same run:
 * - sealed:     the SDK (`connect()`: evidence verified, then every request sealed, its
 *               response opened and its receipt verified) against the real CloisterServer,
 *               with its default protocol v2 session (one HPKE open, then symmetric keys);
 * - sealed-v1:  the same with `sessions: false` (one HPKE exchange per request);
 * - plaintext:  the same engine behind the same transport minus sealing (bench/lib/plain.ts);
 * - in-process: the engine called directly in the load generator's process.
 * Concurrency 1, 8, 32 (requests in flight; one connection per 8 of them, as the server
 * allows 16 in flight per connection) and request texts of 256 B, 4 KiB and 64 KiB.
 * Targets at c=8, 4 KiB: sealed/plaintext throughput >= 0.95, added p50 <= 0.3 ms.
 */
import { connect } from '../../src/client/client.js';
import type { CloisterClient } from '../../src/client/client.js';
import { OnnxEngine } from '../../src/inference/onnx/engine.js';
import { armOf, compare, ratio, target } from '../lib/harness.js';
import type { Arm } from '../lib/harness.js';
import { closedLoop } from '../lib/load.js';
import { ensureDemoModels, syntheticText } from '../lib/demo.js';
import { fmtBytes } from '../lib/format.js';
import { PlainClient } from '../lib/plain.js';
import { ResultBuilder } from '../lib/scenario.js';
import type { Scenario, ScenarioContext, ScenarioResult } from '../lib/scenario.js';
import { BENCH_MAX_INPUT_CHARS, startStack } from '../lib/stack.js';
import { drain } from './batch.js';

const PER_CONNECTION = 8;
const VARIANTS = 8;

export const scenario: Scenario = {
  name: 'e2e',
  title: 'demo classifier over WebSocket: sealed vs plaintext frames vs in-process',
  async run(ctx: ScenarioContext): Promise<ScenarioResult> {
    const out = new ResultBuilder();
    const concurrencies = ctx.smoke ? [8] : [1, 8, 32];
    const sizes = ctx.smoke ? [4096] : [256, 4096, 65536];
    const stack = await startStack({ repoRoot: ctx.repoRoot, kind: 'onnx' });
    const dirs = await ensureDemoModels(ctx.repoRoot);
    const local = new OnnxEngine({ models: [{ name: stack.info.model, dir: dirs.classifierDir }], maxInputChars: BENCH_MAX_INPUT_CHARS });
    await local.start();
    const sealed: CloisterClient[] = [];
    const sealedV1: CloisterClient[] = [];
    const plain: PlainClient[] = [];
    try {
      const plainUrl = stack.info.plainUrl;
      if (plainUrl === undefined) throw new Error('stack has no plaintext server');
      const maxConn = Math.ceil(Math.max(...concurrencies) / PER_CONNECTION);
      for (let i = 0; i < maxConn; i++) {
        for (const sessions of [true, false]) {
          (sessions ? sealed : sealedV1).push(
            await connect(stack.info.wsUrl, {
              policy: JSON.stringify(stack.info.policy),
              trustedRoots: { simulated: [new Uint8Array(Buffer.from(stack.info.rootDerHex, 'hex'))] },
              sessions,
            }),
          );
        }
        plain.push(await PlainClient.connect(plainUrl));
      }
      const model = stack.info.model;
      ctx.progress.plan(concurrencies.length * sizes.length * ctx.timing.rounds * 4);
      for (const size of sizes) {
        const texts = Array.from({ length: VARIANTS }, (_, i) => syntheticText(size, i + 11));
        for (const c of concurrencies) {
          const conns = Math.ceil(c / PER_CONNECTION);
          let n = 0;
          const text = (): string => texts[n++ % VARIANTS] ?? '';
          const cpu = new Map<string, { client: number; server: number; ops: number }>();
          // CPU per request of each arm, both processes (bench/lib/stack.ts cpuUs): what the
          // protection costs when the cores, not the wall clock, are the limit.
          const withCpu = (arm: Arm): Arm => ({
            name: arm.name,
            measure: async (ms) => {
              const c0 = process.cpuUsage();
              const s0 = await stack.cpuUs();
              const m = await arm.measure(ms);
              const c1 = process.cpuUsage(c0);
              const s1 = await stack.cpuUs();
              const acc = cpu.get(arm.name) ?? { client: 0, server: 0, ops: 0 };
              acc.client += c1.user + c1.system;
              acc.server += s0 === null || s1 === null || arm.name === 'in-process' ? 0 : s1 - s0;
              acc.ops += m.ops;
              cpu.set(arm.name, acc);
              return m;
            },
          });
          const arms: Arm[] = [
            {
              name: 'sealed',
              measure: (ms) =>
                closedLoop(c, ms, async (w) => {
                  const client = sealed[w % conns];
                  if (client === undefined) throw new Error('no client');
                  const r = await client.classify(text());
                  if (r.length === 0) throw new Error('empty classification');
                }),
            },
            {
              name: 'sealed-v1',
              measure: (ms) =>
                closedLoop(c, ms, async (w) => {
                  const client = sealedV1[w % conns];
                  if (client === undefined) throw new Error('no client');
                  const r = await client.classify(text());
                  if (r.length === 0) throw new Error('empty classification');
                }),
            },
            {
              name: 'plaintext',
              measure: (ms) =>
                closedLoop(c, ms, async (w) => {
                  const client = plain[w % conns];
                  if (client === undefined) throw new Error('no client');
                  const r = await client.request('classify', model, text());
                  if (r.length !== 1) throw new Error('expected one result chunk');
                }),
            },
            {
              name: 'in-process',
              measure: (ms) =>
                closedLoop(c, ms, async () => {
                  await drain(local, { op: 'classify', model, input: text(), params: {}, stream: false }, new AbortController().signal);
                }),
            },
          ];
          const cmp = await compare('e2e', { c, size: fmtBytes(size) }, arms.map(withCpu), { ...ctx.timing, unit: 'req/s' }, ctx.progress);
          if (stack.isolated) {
            for (const [arm, a] of cpu) {
              if (a.ops === 0) continue;
              out.metrics.push({ label: `CPU per request c=${c} ${fmtBytes(size)} ${arm}: load generator + SDK`, value: a.client / a.ops, unit: 'us' });
              if (arm !== 'in-process') out.metrics.push({ label: `CPU per request c=${c} ${fmtBytes(size)} ${arm}: server`, value: a.server / a.ops, unit: 'us' });
            }
            const s = cpu.get('sealed');
            const p = cpu.get('plaintext');
            if (s !== undefined && p !== undefined && s.ops > 0 && p.ops > 0) {
              out.metrics.push({ label: `added CPU per request c=${c} ${fmtBytes(size)} (sealed - plaintext): SDK side`, value: s.client / s.ops - p.client / p.ops, unit: 'us' });
              out.metrics.push({ label: `added CPU per request c=${c} ${fmtBytes(size)} (sealed - plaintext): server side`, value: s.server / s.ops - p.server / p.ops, unit: 'us' });
            }
          }
          out.comparisons.push(cmp);
          const r = ratio(cmp, 'sealed', 'plaintext');
          const isTarget = c === 8 && size === 4096;
          out.ratios.push(isTarget ? { ...r, target: { kind: 'min', threshold: 0.95 } } : r);
          out.ratios.push(ratio(cmp, 'sealed-v1', 'plaintext'));
          out.ratios.push(ratio(cmp, 'plaintext', 'in-process'));
          if (isTarget) {
            out.targets.push(target('sealed/plaintext throughput at c=8, 4 KiB', r.median, 'min', 0.95, 'x'));
            const added = (armOf(cmp, 'sealed').latencyMs?.p50 ?? Number.NaN) - (armOf(cmp, 'plaintext').latencyMs?.p50 ?? Number.NaN);
            out.targets.push(target('added p50 latency at c=8, 4 KiB (sealed - plaintext)', added, 'max', 0.3, ' ms'));
          }
        }
      }
      out.notes.push(
        stack.isolated
          ? 'server (sealed and plaintext) runs in its own process; load generator, SDK and the in-process engine in this one'
          : 'server runs in the load generator process (smoke/vitest mode): numbers are not representative',
      );
      out.notes.push('plaintext baseline = same ws transport, wire framing, message codecs and engine, without HPKE, receipts or replay window (bench/lib/plain.ts)');
    } finally {
      for (const c of [...sealed, ...sealedV1]) await c.close();
      for (const p of plain) p.close();
      await local.close();
      await stack.close();
    }
    return out.result();
  },
};
