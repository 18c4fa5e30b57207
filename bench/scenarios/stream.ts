/**
 * bench:stream - token streaming from a stand-in OpenAI-compatible engine that emits tokens
 * as fast as the socket takes them (bench/lib/token-engine.ts), three arms interleaved:
 * - direct:   an SSE client straight to the engine (what an app would do without Cloister);
 * - cloister: the SDK's sealed stream through the server's upstream engine (the events of one
 *             upstream read relayed as their JSON text in one sealed `json` chunk);
 * - gateway:  the same SSE client against the local OpenAI-compatible gateway, which seals
 *             and forwards through the SDK.
 * Tokens/s over all streams and TTFT (request sent to first content token) per stream.
 * Targets: cloister >= 0.9 of direct tokens/s, >= 50 000 tokens/s, TTFT added <= 1 ms.
 */
import { connect } from '../../src/client/client.js';
import type { CloisterClient } from '../../src/client/client.js';
import { startGateway } from '../../src/client/gateway/gateway.js';
import type { Gateway } from '../../src/client/gateway/gateway.js';
import { armOf, compare, ratio, target } from '../lib/harness.js';
import type { Arm } from '../lib/harness.js';
import { closedLoop } from '../lib/load.js';
import { keepAliveAgent, streamChat } from '../lib/sse-client.js';
import { ResultBuilder } from '../lib/scenario.js';
import type { Scenario, ScenarioContext, ScenarioResult } from '../lib/scenario.js';
import { startStack } from '../lib/stack.js';
import { performance } from 'node:perf_hooks';

const TOKENS = 256;

function contentOf(chunk: unknown): boolean {
  if (typeof chunk !== 'object' || chunk === null) return false;
  const choices = (chunk as { choices?: unknown }).choices;
  if (!Array.isArray(choices)) return false;
  const first: unknown = choices[0];
  if (typeof first !== 'object' || first === null) return false;
  const delta = (first as { delta?: { content?: unknown } }).delta;
  return typeof delta?.content === 'string' && delta.content.length > 0;
}

export const scenario: Scenario = {
  name: 'stream',
  title: `token streaming (${TOKENS} tokens per answer): direct vs through Cloister (sealed chunks) vs through the local gateway`,
  async run(ctx: ScenarioContext): Promise<ScenarioResult> {
    const out = new ResultBuilder();
    const concurrencies = ctx.smoke ? [1] : [1, 8];
    const stack = await startStack({ repoRoot: ctx.repoRoot, kind: 'upstream', tokens: TOKENS });
    let client: CloisterClient | undefined;
    let gateway: Gateway | undefined;
    const agent = keepAliveAgent(16);
    try {
      const base = stack.info.upstreamBaseUrl;
      const upstreamModel = stack.info.upstreamModel;
      if (base === undefined || upstreamModel === undefined) throw new Error('stack has no token engine');
      const model = stack.info.model;
      client = await connect(stack.info.wsUrl, {
        policy: JSON.stringify(stack.info.policy),
        trustedRoots: { simulated: [new Uint8Array(Buffer.from(stack.info.rootDerHex, 'hex'))] },
      });
      const sdk = client;
      gateway = await startGateway({ client: sdk, model });
      const gatewayBase = `${gateway.url}/v1`;
      ctx.progress.plan(concurrencies.length * ctx.timing.rounds * 3);
      for (const c of concurrencies) {
        const arms: Arm[] = [
          {
            name: 'direct',
            measure: (ms) =>
              closedLoop(c, ms, async () => {
                const r = await streamChat(agent, base, upstreamModel, TOKENS);
                if (r.tokens !== TOKENS) throw new Error(`direct: ${r.tokens} tokens`);
                return { units: r.tokens, samples: { ttftMs: r.ttftMs } };
              }),
          },
          {
            name: 'cloister',
            measure: (ms) =>
              closedLoop(c, ms, async () => {
                const t0 = performance.now();
                let tokens = 0;
                let ttft = Number.NaN;
                for await (const chunk of sdk.request({
                  op: 'chat',
                  model,
                  input: { messages: [{ role: 'user', content: 'bench' }], max_tokens: TOKENS, stream: true },
                  stream: true,
                })) {
                  if (contentOf(chunk)) {
                    if (tokens === 0) ttft = performance.now() - t0;
                    tokens++;
                  }
                }
                if (tokens !== TOKENS) throw new Error(`cloister: ${tokens} tokens`);
                return { units: tokens, samples: { ttftMs: ttft } };
              }),
          },
          {
            name: 'gateway',
            measure: (ms) =>
              closedLoop(c, ms, async () => {
                const r = await streamChat(agent, gatewayBase, model, TOKENS);
                if (r.tokens !== TOKENS) throw new Error(`gateway: ${r.tokens} tokens`);
                return { units: r.tokens, samples: { ttftMs: r.ttftMs } };
              }),
          },
        ];
        const cmp = await compare('stream', { c, tokens: TOKENS }, arms, { ...ctx.timing, unit: 'tokens/s' }, ctx.progress);
        out.comparisons.push(cmp);
        const r = ratio(cmp, 'cloister', 'direct');
        out.ratios.push({ ...r, target: { kind: 'min', threshold: 0.9 } });
        out.ratios.push(ratio(cmp, 'gateway', 'direct'));
        const ttft = (name: string): number => armOf(cmp, name).samples?.['ttftMs']?.p50 ?? Number.NaN;
        out.targets.push(target(`cloister/direct tokens/s at c=${c}`, r.median, 'min', 0.9, 'x'));
        out.targets.push(target(`cloister tokens/s at c=${c}`, armOf(cmp, 'cloister').throughput.median, 'min', 50_000, '/s'));
        if (c === 1) out.targets.push(target('TTFT added at c=1 (cloister p50 - direct p50)', ttft('cloister') - ttft('direct'), 'max', 1, ' ms'));
      }
      out.notes.push(stack.isolated
        ? 'token engine (the stand-in for vLLM) and server each run in their own process; SDK, gateway and load generator in this one'
        : 'server and token engine run in the load generator process (smoke/vitest mode): numbers are not representative');
    } finally {
      await gateway?.close();
      await client?.close();
      agent.destroy();
      await stack.close();
    }
    return out.result();
  },
};
