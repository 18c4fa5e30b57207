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

import { fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { connect } from '../../src/client/client.js';
import type { CloisterClient } from '../../src/client/client.js';
import { GenerationEngine } from '../../src/inference/generation/engine.js';
import type { GenerationEngineOptions } from '../../src/inference/generation/engine.js';
import type { GenerateChildReply } from '../lib/generate-child.js';
import { startGenerateHost } from '../lib/generate-host.js';
import type { GenerateHost } from '../lib/generate-host.js';
import { compare, ratio, target } from '../lib/harness.js';
import type { Arm } from '../lib/harness.js';
import { closedLoop } from '../lib/load.js';
import { ensureDemoModels } from '../lib/demo.js';
import { SMOLLM2_135M, type LlamaShape, writeRandomLlama } from '../lib/random-llama.js';
import { writeRandomLlamaGguf } from '../lib/random-llama-gguf.js';
import { SPECIAL_TOKENS, CLS_ID, SEP_ID } from '../../tools/demo-model/tokenizer.js';
import { ResultBuilder } from '../lib/scenario.js';
import type { Scenario, ScenarioContext, ScenarioResult } from '../lib/scenario.js';
import type { Llama, Token } from 'node-llama-cpp';

const SMOKE_SHAPE: LlamaShape = { hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 128, vocab: 1000, maxPositions: 1024 };

/** Rounds and round length of each comparison: the whole scenario stays within about 6 minutes. */
const ROUNDS = (ctx: ScenarioContext): number => Math.min(ctx.timing.rounds, 4);
const ROUND_MS = 3_000;
const RANDOM_PROMPT = Array.from({ length: 32 }, (_, i) => `w${(i * 37) % 900}`).join(' ');

interface Target {
  readonly model: string;
  readonly label: string;
  readonly prompt: string;
  readonly tokens: number;
}

/** The server and engine host: a child process (bench/lib/generate-child.ts) in the compiled bench. */
type GenerateChild = GenerateHost;

async function startGenerateChild(engine: GenerationEngineOptions): Promise<GenerateChild> {
  const self = fileURLToPath(import.meta.url);
  const entry = fileURLToPath(new URL('../lib/generate-child.js', import.meta.url));
  // Run from sources (vitest's bench smoke test): no compiled child entry, so the host runs here.
  if (!self.endsWith('.js') || !existsSync(entry)) return startGenerateHost(engine);
  const child = fork(entry, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let nextId = 0;
  const waiting = new Map<number, (r: GenerateChildReply) => void>();
  let fail: ((err: Error) => void) | undefined;
  let failure: Error | undefined;
  const failAll = (err: Error): void => {
    failure = err;
    fail?.(err);
    for (const w of waiting.values()) w({ type: 'error', message: err.message });
    waiting.clear();
  };
  child.on('exit', (code) => failAll(new Error(`bench:generate child exited (${code ?? 'signal'})`)));
  const ready = new Promise<GenerateChildReply>((resolve, reject) => {
    fail = reject;
    child.on('message', (m: GenerateChildReply) => {
      if (m.type === 'ready') resolve(m);
      else if (m.type === 'error') failAll(new Error(`bench:generate child failed: ${m.message}`));
      else {
        const w = waiting.get(m.id);
        waiting.delete(m.id);
        w?.(m);
      }
    });
  });
  const ask = (msg: Record<string, unknown>): Promise<GenerateChildReply> =>
    new Promise((resolve, reject) => {
      if (failure !== undefined) {
        reject(failure);
        return;
      }
      const id = nextId++;
      waiting.set(id, (r) => (r.type === 'error' ? reject(new Error(r.message)) : resolve(r)));
      child.send({ ...msg, id });
    });
  child.send({ type: 'start', engine });
  let r: GenerateChildReply;
  try {
    r = await ready;
  } catch (err) {
    if (child.exitCode === null) child.kill('SIGKILL');
    throw err;
  }
  fail = undefined;
  if (r.type !== 'ready') throw new Error('unexpected reply');
  return {
    wsUrl: r.wsUrl,
    policy: r.policy,
    rootDer: Buffer.from(r.rootDer, 'base64'),
    async loop(model, prompt, maxTokens, concurrency, durationMs) {
      const reply = await ask({ type: 'loop', model, prompt, maxTokens, concurrency, durationMs });
      if (reply.type !== 'measured') throw new Error('unexpected reply');
      const m = reply.m;
      return { ops: m.ops, elapsedMs: m.elapsedMs, ...(m.units === undefined ? {} : { units: m.units }), latenciesMs: Float64Array.from(m.latenciesMs), samples: { ttftMs: Float64Array.from(m.ttftMs) } };
    },
    async cpu() {
      const reply = await ask({ type: 'cpu' });
      if (reply.type !== 'cpu') throw new Error('unexpected reply');
      return { cpuMicros: reply.cpuMicros, steps: reply.steps, peakRss: reply.peakRss };
    },
    async close() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.send({ type: 'close' });
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 10_000).unref())]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

/** CPU time per generated token of one arm, summed over its measurements (warm-up included). */
interface CpuTally {
  serverMicros: number;
  clientMicros: number;
  tokens: number;
  steps: number;
}

/** Wraps an arm: the child's and this process's CPU time around each measurement. */
function accounted(arm: Arm, child: GenerateChild, tally: CpuTally): Arm {
  return {
    name: arm.name,
    async measure(ms) {
      const c0 = await child.cpu();
      const p0 = process.cpuUsage();
      const m = await arm.measure(ms);
      const p = process.cpuUsage(p0);
      const c1 = await child.cpu();
      tally.serverMicros += c1.cpuMicros - c0.cpuMicros;
      tally.clientMicros += p.user + p.system;
      tally.tokens += m.units ?? 0;
      tally.steps += c1.steps - c0.steps;
      return m;
    },
  };
}

export const scenario: Scenario = {
  name: 'generate',
  title: 'CPU text generation: sealed (SDK through the server) vs in process, 1 and 4 streams; ONNX vs llama.cpp at fp32 and q8',
  async run(ctx: ScenarioContext): Promise<ScenarioResult> {
    const out = new ResultBuilder();
    const tmp = await mkdtemp(join(tmpdir(), 'cloister-bench-generate-'));
    const demo = await ensureDemoModels(ctx.repoRoot);
    const lmDir = demo.lmDir;
    const shape = ctx.smoke ? SMOKE_SHAPE : SMOLLM2_135M;
    const shapeName = shape === SMOLLM2_135M ? 'SmolLM2-135M shape' : 'smoke shape';
    const randomDir = join(tmp, 'random-llama');
    const t0 = performance.now();
    await writeRandomLlama(randomDir, shape, 0.02, ['fp32', 'q8']);
    out.metrics.push({ label: `random llama (${shape.layers} layers, hidden ${shape.hidden}, vocab ${shape.vocab}) built in`, value: (performance.now() - t0) / 1000, unit: 's' });
    const child = await startGenerateChild({
      models: [
        { name: 'demo-lm', dir: lmDir },
        { name: 'random-llama', dir: randomDir },
      ],
      maxActiveGenerations: 4,
    });
    let client: CloisterClient | undefined;
    try {
      client = await connect(child.wsUrl, { policy: child.policy, trustedRoots: { simulated: [child.rootDer] } });
      const sdk = client;
      const targets: Target[] = [
        { model: 'demo-lm', label: 'demo-lm', prompt: 'chest pain radiating to the left arm', tokens: ctx.smoke ? 16 : 128 },
        { model: 'random-llama', label: `random llama ${shapeName} fp32`, prompt: RANDOM_PROMPT, tokens: ctx.smoke ? 8 : 32 },
      ];
      const concurrencies = ctx.smoke ? [1] : [1, 4];
      // + the llama.cpp anchors (fp32 and q8): one comparison of two arms each.
      ctx.progress.plan((targets.length * concurrencies.length + 2) * ROUNDS(ctx) * 2);
      for (const tg of targets) {
        const body = { prompt: tg.prompt, max_tokens: tg.tokens, temperature: 0, stream: true, stream_options: { include_usage: true } };
        for (const c of concurrencies) {
          // Each round runs long enough for a few whole answers per stream.
          const roundMs = Math.max(ctx.timing.roundMs, ctx.smoke ? 200 : ROUND_MS);
          const tallies = { 'in-process': { serverMicros: 0, clientMicros: 0, tokens: 0, steps: 0 }, sealed: { serverMicros: 0, clientMicros: 0, tokens: 0, steps: 0 } };
          const arms: Arm[] = [
            accounted({ name: 'in-process', measure: (ms) => child.loop(tg.model, tg.prompt, tg.tokens, c, ms) }, child, tallies['in-process']),
            accounted(
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
              child,
              tallies.sealed,
            ),
          ];
          const cmp = await compare('generate', { model: tg.label, streams: c }, arms, { ...ctx.timing, rounds: ROUNDS(ctx), roundMs, unit: 'tokens/s' }, ctx.progress);
          out.comparisons.push(cmp);
          const r = ratio(cmp, 'sealed', 'in-process');
          out.ratios.push({ ...r, target: { kind: 'min', threshold: 0.97 } });
          out.targets.push(target(`${tg.label}: sealed/in-process tokens/s, ${c} stream(s)`, r.median, 'min', 0.97, 'x'));
          const ip = tallies['in-process'];
          const se = tallies.sealed;
          if (ip.tokens > 0 && se.tokens > 0) {
            // What the tokens/s ratio would be if CPU time were all that counted (load-independent).
            out.metrics.push({ label: `${tg.label}, ${c} stream(s): CPU per token in process / sealed (server + client process)`, value: ip.serverMicros / ip.tokens / ((se.serverMicros + se.clientMicros) / se.tokens), unit: 'x' });
          }
          for (const [arm, t] of Object.entries(tallies)) {
            if (t.tokens === 0) continue;
            out.metrics.push({ label: `${tg.label}, ${c} stream(s), ${arm}: CPU per token, server process (engine${arm === 'sealed' ? ', server, sealing' : ''})`, value: t.serverMicros / 1000 / t.tokens, unit: 'ms' });
            if (arm === 'sealed') out.metrics.push({ label: `${tg.label}, ${c} stream(s), sealed: CPU per token, client process (SDK)`, value: t.clientMicros / 1000 / t.tokens, unit: 'ms' });
          }
        }
      }
      const peak = await child.cpu();
      out.metrics.push({ label: 'peak RSS of the server process (demo-lm and the random llama loaded, all runs)', value: peak.peakRss / 2 ** 20, unit: 'MiB' });
      out.notes.push('the server and its engine run in a child process (as in a deployment); the SDK and the load generator in the parent. Both arms use that one engine: in-process runs GenerationEngine.generate() in the child, sealed goes through the SDK, WebSocket, sealing and the server handler');
      out.notes.push('onnxruntime-node runs each model step synchronously on the main thread; steps of concurrent streams take turns (docs/GENERATION.md), so 4 streams share the single-stream token rate');
      out.notes.push('the server runs the default guard policy (redact), which holds streamed text back 64-96 characters (docs/GUARD.md): the sealed time to first token includes that hold-back, the in-process arm has no guard');
      out.notes.push('CPU per token: process.cpuUsage() of each process over all rounds of an arm (warm-up included), divided by the tokens generated; on a shared machine this is steadier than tokens/s');
    } finally {
      await client?.close();
      await child.close();
    }
    try {
      await llamaCppAnchor(ctx, randomDir, shape, tmp, out);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
    return out.result();
  },
};

/**
 * Compute threads of each engine in the anchor. One each: on a machine whose cores are shared
 * (the bench's is), llama.cpp's spinning thread barrier stalls for seconds per token when one
 * of its threads is descheduled, which would measure the neighbours, not the engines.
 */
const ANCHOR_THREADS = 1;

/** The anchor's pairs: the ONNX variant and the GGUF type of the same weights. */
const ANCHOR_VARIANTS = [
  { dtype: 'fp32', gguf: 'f32' },
  { dtype: 'q8', gguf: 'q8_0' },
] as const;

/**
 * The llama.cpp anchor (node-llama-cpp, prebuilt CPU binary): the same random llama as a GGUF
 * (the same weights; f32, and Q8_0 against the ONNX q8 file), 1 stream, greedy, the same
 * prompt ids and token count, against the ONNX engine in this process (its own instance, same
 * thread count), interleaved in the same run. Also checks that both produce the same greedy
 * tokens (the GGUF really is the same model; quantized, the two schemes may part ways).
 */
async function llamaCppAnchor(ctx: ScenarioContext, randomDir: string, shape: LlamaShape, tmp: string, out: ResultBuilder): Promise<void> {
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  const llama = await getLlama({ gpu: false, build: 'never', progressLogs: false, logLevel: LlamaLogLevel.error });
  try {
    for (const v of ANCHOR_VARIANTS) await anchorVariant(ctx, llama, v, randomDir, shape, tmp, out);
  } finally {
    await llama.dispose();
  }
}

async function anchorVariant(
  ctx: ScenarioContext,
  llama: Llama,
  v: (typeof ANCHOR_VARIANTS)[number],
  randomDir: string,
  shape: LlamaShape,
  tmp: string,
  out: ResultBuilder,
): Promise<void> {
  const prompt = RANDOM_PROMPT;
  const gguf = join(tmp, `random-llama-${v.gguf}.gguf`);
  await writeRandomLlamaGguf(gguf, shape, 1, 0.02, v.gguf);
  const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
  const context = await model.createContext({ contextSize: 512, sequences: 1, threads: ANCHOR_THREADS });
  const engine = new GenerationEngine({ models: [{ name: 'random-llama', dir: randomDir, dtype: v.dtype }], intraOpNumThreads: ANCHOR_THREADS });
  const seq = context.getSequence();
  const words = prompt.split(' ');
  const ids = [CLS_ID, ...words.map((w) => SPECIAL_TOKENS.length + Number(w.slice(1))), SEP_ID] as Token[];
  const tokens = ctx.smoke ? 8 : 32;
  const request = { op: 'completion' as const, prompt, maxTokens: tokens, temperature: 0, topP: undefined, topK: undefined, seed: undefined, stop: [], presencePenalty: 0, frequencyPenalty: 0, includeUsage: true };
  const llamaRun = async (n: number, onToken?: (id: number) => void): Promise<number> => {
    await seq.clearHistory();
    let got = 0;
    for await (const t of seq.evaluate(ids, { temperature: 0 })) {
      onToken?.(t);
      if (t === SEP_ID || ++got >= n) break;
    }
    return got;
  };
  const label = `random llama ${shape === SMOLLM2_135M ? 'SmolLM2-135M shape' : 'smoke shape'} ${v.dtype} (GGUF ${v.gguf.toUpperCase()})`;
  try {
    await engine.start();
    // Same model? Greedy continuations compared word by word.
    const onnxWords: string[] = [];
    for await (const e of engine.generate('random-llama', request, new AbortController().signal)) if (e.kind === 'text') onnxWords.push(...e.text.split(/\s+/).filter((w) => w !== ''));
    const llamaWords: string[] = [];
    await llamaRun(tokens, (id) => llamaWords.push(id >= SPECIAL_TOKENS.length ? `w${id - SPECIAL_TOKENS.length}` : `<${id}>`));
    let agree = 0;
    while (agree < Math.min(onnxWords.length, llamaWords.length) && onnxWords[agree] === llamaWords[agree]) agree++;
    out.notes.push(`llama.cpp anchor, ${v.dtype}: node-llama-cpp ${llama.buildType} CPU binary, GGUF ${v.gguf.toUpperCase()} against ONNX ${v.dtype}${v.dtype === 'q8' ? ' (quantize_dynamic form: per-tensor int8 weights, MatMulInteger)' : ''}; ${ANCHOR_THREADS} compute thread(s) each (llama.cpp threads, ONNX Runtime intraOpNumThreads); greedy continuation of the same prompt ids: the first ${agree} of ${tokens} tokens equal the ONNX engine's`);
    const arms: Arm[] = [
      {
        name: 'onnx',
        measure: (ms) =>
          closedLoop(1, ms, async () => {
            let n = 0;
            for await (const e of engine.generate('random-llama', request, new AbortController().signal)) if (e.kind === 'end') n = e.completionTokens;
            return { units: n };
          }),
      },
      { name: 'llama.cpp', measure: (ms) => closedLoop(1, ms, async () => ({ units: await llamaRun(tokens) })) },
    ];
    const roundMs = Math.max(ctx.timing.roundMs, ctx.smoke ? 200 : ROUND_MS);
    const cmp = await compare('generate-anchor', { model: label, streams: 1 }, arms, { ...ctx.timing, rounds: ROUNDS(ctx), roundMs, unit: 'tokens/s' }, ctx.progress);
    out.comparisons.push(cmp);
    // Above 1 the ONNX path is slower per token (time per token ONNX / llama.cpp).
    const r = ratio(cmp, 'llama.cpp', 'onnx', `ONNX / llama.cpp time per token, ${v.dtype}`);
    out.ratios.push({ ...r, target: { kind: 'max', threshold: 1.5 } });
    out.targets.push(target(`random llama ${v.dtype}, 1 stream: ONNX / llama.cpp (${v.gguf.toUpperCase()}) time per token (issue 12: above 1.5 asks for a GGUF engine)`, r.median, 'max', 1.5, 'x'));
  } finally {
    await engine.close();
    await context.dispose();
    await model.dispose();
    await rm(gguf, { force: true });
  }
}
