/** Shared fixtures for the end-to-end tests: a fake engine, a simulated server, a policy. */
import { CloisterError } from '../../src/errors.js';
import { JsonResults } from '../../src/protocol/messages.js';
import type { Engine, EngineRequest, ModelInfo, RunOptions } from '../../src/inference/types.js';
import { createSimulatedAttester } from '../../src/attester/simulated/index.js';
import type { SimulatedAttester } from '../../src/attester/simulated/index.js';
import { policyFromJson } from '../../src/verifier/policy.js';
import type { Policy } from '../../src/verifier/policy.js';
import { developmentPolicy } from '../../src/client/dev-policy.js';
import { CloisterServer, serverConfigDigest } from '../../src/server/server.js';
import type { CloisterServerOptions, ServerAddress } from '../../src/server/server.js';
import type { Logger } from '../../src/server/log.js';

const digest = (n: number): Uint8Array => new Uint8Array(32).fill(n);

/** Deterministic "model": classify scores from text length; embed = [length, vowels]. */
export function fakeClassify(text: string): { label: string; score: number }[] {
  const a = (text.length % 10) / 10;
  return [
    { label: a >= 0.5 ? 'cardiology' : 'oncology', score: Math.max(a, 1 - a) },
    { label: a >= 0.5 ? 'oncology' : 'cardiology', score: Math.min(a, 1 - a) },
  ];
}
export function fakeEmbed(text: string): number[] {
  return [text.length, (text.match(/[aeiou]/g) ?? []).length, 0.5];
}

export interface FakeEngineControls {
  /** Chunks pulled from `generate` streams so far. */
  pulled: number;
  /** Requests currently inside run(). */
  running: number;
  /** When set, `generate` with input 'block' waits on this until the signal aborts. */
  aborted: number;
  maxQueueDepth: number;
}

export class FakeEngine implements Engine {
  readonly kind = 'fake';
  readonly controls: FakeEngineControls = { pulled: 0, running: 0, aborted: 0, maxQueueDepth: 1000 };
  constructor(private readonly suffix = '') {}
  models(): readonly ModelInfo[] {
    return [
      { name: `fake-cls${this.suffix}`, task: 'text-classification', operations: ['classify'], digest: digest(1) },
      { name: `fake-emb${this.suffix}`, task: 'feature-extraction', operations: ['embed'], digest: digest(2) },
      { name: `fake-gen${this.suffix}`, task: 'text-generation', operations: ['generate'], digest: digest(3) },
    ];
  }
  async start(): Promise<void> {}
  async close(): Promise<void> {}
  run(request: EngineRequest, options: RunOptions): AsyncIterable<unknown> {
    return this.gen(request, options);
  }
  private async *gen(request: EngineRequest, { signal }: RunOptions): AsyncGenerator<unknown> {
    const c = this.controls;
    if (c.running >= c.maxQueueDepth) throw new CloisterError('OVERLOADED', 'fake queue full');
    c.running++;
    try {
      if (request.op === 'classify') {
        if (typeof request.input !== 'string') throw new CloisterError('INVALID_ARGUMENT');
        yield fakeClassify(request.input);
        return;
      }
      if (request.op === 'embed') {
        if (!Array.isArray(request.input)) throw new CloisterError('INVALID_ARGUMENT');
        yield request.input.map((t) => fakeEmbed(String(t)));
        return;
      }
      // generate: input 'block' waits for abort; {n, size} yields n chunks of `size` chars.
      if (request.input === 'block') {
        await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
        c.aborted++;
        throw new CloisterError('CANCELLED');
      }
      const p = request.params;
      const n = typeof p['n'] === 'number' ? p['n'] : 3;
      const size = typeof p['size'] === 'number' ? p['size'] : 8;
      // input 'json': n relayed batches (as an upstream engine yields), each of two JSON texts.
      if (request.input === 'json') {
        for (let i = 0; i < n; i++) {
          c.pulled++;
          yield new JsonResults([JSON.stringify({ i, part: 0, text: 'a'.repeat(size) }), JSON.stringify({ i, part: 1 })]);
        }
        return;
      }
      for (let i = 0; i < n; i++) {
        if (signal.aborted) {
          c.aborted++;
          throw new CloisterError('CANCELLED');
        }
        c.pulled++;
        yield { i, text: String(i % 10).repeat(size) };
      }
    } finally {
      c.running--;
    }
  }
}

export interface TestServer {
  readonly server: CloisterServer;
  readonly urls: ServerAddress;
  readonly wsUrl: string;
  readonly httpUrl: string;
  readonly attester: SimulatedAttester;
  readonly policy: Policy;
  readonly policyJson: Record<string, unknown>;
  readonly trustedRoots: { simulated: string[] };
  readonly engine: FakeEngine;
  close(): Promise<void>;
}

export async function startTestServer(
  options: Partial<Omit<CloisterServerOptions, 'attester'>> & { engine?: FakeEngine; logger?: Logger } = {},
): Promise<TestServer> {
  const engine = options.engine ?? new FakeEngine();
  const engines = options.engines ?? [engine];
  const configDigest = serverConfigDigest({ ...options, engines, platform: 'simulated' });
  const models = engines.flatMap((e) => [...e.models()]).sort((a, b) => (a.name < b.name ? -1 : 1));
  const attester = await createSimulatedAttester({ measurements: { configDigest, modelDigests: models.map((m) => m.digest) } });
  const server = new CloisterServer({ ...options, engines, attester });
  const urls = await server.listen({ host: '127.0.0.1', port: 0 });
  const policyJson = developmentPolicy({ pcrs: attester.policySection().pcrs, rootSha256Hex: attester.rootSha256Hex, models });
  return {
    server,
    urls,
    wsUrl: urls.wsUrl,
    httpUrl: urls.httpUrl ?? '',
    attester,
    policy: policyFromJson(policyJson),
    policyJson,
    trustedRoots: { simulated: [attester.rootPem] },
    engine,
    close: () => server.close(),
  };
}

/** Waits (bounded) until `cond` holds; throws after `tries` polls. Not a timing assertion. */
export async function until(cond: () => boolean, tries = 500, stepMs = 10): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  throw new Error('condition not reached');
}

/** The awaited CloisterError code (test/helpers/errors.ts codeOfAsync), for the e2e suites. */
export { codeOfAsync as codeOf } from '../helpers/errors.js';
