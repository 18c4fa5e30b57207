/**
 * bench:fleet - what per-replica receipts cost (src/protocol/replica.ts). Two arms over sealed
 * HTTP one-shot requests (what a fleet serves behind a load balancer), measured interleaved:
 * - fleet:      a replica serving a fleet key: its final chunks name it, by the digest of its
 *               statement once the client verified it (the steady state); the receipt is
 *               checked under the replica's key;
 * - standalone: the same server with its own key (no replica statement), the same request
 *               mode (sessions off, version-1 receipts).
 * Both servers run in this process with a trivial engine, so the protocol is what is measured
 * (an upper bound of the relative cost). Also reported: the statement's size, and what its
 * first sighting costs a client (one evidence verification, cold and warm).
 */
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { connect } from '../../src/client/client.js';
import type { CloisterClient } from '../../src/client/client.js';
import { CloisterServer } from '../../src/server/server.js';
import type { FleetKey } from '../../src/server/keys.js';
import { createSimulatedAttester } from '../../src/attester/simulated/attester.js';
import type { Engine, EngineRequest, ModelInfo } from '../../src/inference/types.js';
import { policyFromJson } from '../../src/verifier/policy.js';
import { verifyEvidence } from '../../src/verifier/verify.js';
import { decodeEvidenceFile } from '../../src/verifier/evidence-file.js';
import { compare, ratio } from '../lib/harness.js';
import { closedLoop } from '../lib/load.js';
import { ResultBuilder } from '../lib/scenario.js';
import type { Scenario, ScenarioContext, ScenarioResult } from '../lib/scenario.js';

/** Answers every classify with one fixed label: the engine costs next to nothing. */
class EchoEngine implements Engine {
  readonly kind = 'echo';
  models(): readonly ModelInfo[] {
    return [{ name: 'echo', task: 'text-classification', operations: ['classify'], digest: new Uint8Array(32).fill(1) }];
  }
  async start(): Promise<void> {}
  async close(): Promise<void> {}
  async *run(request: EngineRequest): AsyncGenerator<unknown> {
    yield [{ label: typeof request.input === 'string' && request.input.length % 2 === 0 ? 'even' : 'odd', score: 1 }];
  }
}

export const scenario: Scenario = {
  name: 'fleet',
  title: 'per-replica receipts: a fleet replica vs a stand-alone server, sealed HTTP one-shot requests',
  async run(ctx: ScenarioContext): Promise<ScenarioResult> {
    const out = new ResultBuilder();
    const attester = await createSimulatedAttester();
    const section = attester.policySection();
    const policy = policyFromJson({ version: 1, platforms: { simulated: { pcrs: { '0': section.pcrs['0'] }, rootSha256: section.rootSha256 } } });
    const trustedRoots = { simulated: [attester.rootPem] };
    const now = Date.now();
    const fleetKey: FleetKey = { keyId: 3, hpkePrivateKey: new Uint8Array(randomBytes(32)), receiptSeed: new Uint8Array(randomBytes(32)), notBeforeMs: now - 1000, expiresAtMs: now + 24 * 3_600_000 };
    const fleet = new CloisterServer({ engines: [new EchoEngine()], attester, fleetKeys: [fleetKey] });
    const standalone = new CloisterServer({ engines: [new EchoEngine()], attester });
    const clients: CloisterClient[] = [];
    try {
      const fleetUrl = (await fleet.listen({ host: '127.0.0.1', port: 0 })).httpUrl ?? '';
      const soloUrl = (await standalone.listen({ host: '127.0.0.1', port: 0 })).httpUrl ?? '';
      const options = { policy, trustedRoots, sessions: false, receiptsV2: false } as const;
      const fleetClient = await connect(fleetUrl, options);
      const soloClient = await connect(soloUrl, options);
      clients.push(fleetClient, soloClient);

      // The first answer carries the statement; the client verifies it once.
      let statement: Uint8Array | undefined;
      const fresh = await connect(fleetUrl, { ...options, onReceipt: (r) => (statement = r.replica?.statement) });
      clients.push(fresh);
      const t0 = performance.now();
      await fresh.classify('first');
      out.metrics.push({ label: 'first fleet answer of a new client (statement sent and verified), wall', value: performance.now() - t0, unit: 'ms' });
      if (statement === undefined) throw new Error('the fleet answer named no replica');
      out.metrics.push({ label: 'replica statement (simulated evidence file) in the first final chunk', value: statement.byteLength, unit: 'B' });
      const bundle = decodeEvidenceFile(statement).bundle;
      const samples: number[] = [];
      for (let i = 0; i < 20; i++) {
        const t0 = performance.now();
        await verifyEvidence(bundle, { policy, trustedRoots });
        samples.push(performance.now() - t0);
      }
      samples.sort((a, b) => a - b);
      out.metrics.push({ label: 'statement verification (simulated evidence), warm p50', value: samples[10] ?? Number.NaN, unit: 'ms' });

      await fleetClient.classify('warm');
      await soloClient.classify('warm');
      const concurrencies = ctx.smoke ? [8] : [1, 8];
      ctx.progress.plan(concurrencies.length * ctx.timing.rounds * 2);
      for (const c of concurrencies) {
        let n = 0;
        const text = (): string => `note ${n++ % 64} ${'x'.repeat(200)}`;
        const cmp = await compare(
          'fleet',
          { c },
          [
            { name: 'fleet', measure: (ms) => closedLoop(c, ms, async () => void (await fleetClient.classify(text()))) },
            { name: 'standalone', measure: (ms) => closedLoop(c, ms, async () => void (await soloClient.classify(text()))) },
          ],
          { ...ctx.timing, unit: 'req/s' },
          ctx.progress,
        );
        out.comparisons.push(cmp);
        out.ratios.push(ratio(cmp, 'fleet', 'standalone'));
      }
      out.notes.push('both servers and the SDK in this process, trivial engine: the ratio bounds the protocol cost from above');
      out.notes.push('steady state: a listed statement is named by its 32-byte digest; a replica re-attests its statement every evidenceRefreshMs (60 s), which each client verifies once');
    } finally {
      for (const c of clients) await c.close();
      await fleet.close();
      await standalone.close();
    }
    return out.result();
  },
};
