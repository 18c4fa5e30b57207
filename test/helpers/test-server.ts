/** Test-only: a simulated Cloister server on loopback with a fake engine, and its policy. Not a test file itself. */
import { createSimulatedAttester } from '../../src/attester/simulated/index.js';
import type { SimulatedAttester } from '../../src/attester/simulated/index.js';
import { policyFromJson } from '../../src/verifier/policy.js';
import type { Policy } from '../../src/verifier/policy.js';
import { developmentPolicy } from '../../src/client/dev-policy.js';
import { CloisterServer, serverConfigDigest } from '../../src/server/server.js';
import type { CloisterServerOptions, ServerAddress } from '../../src/server/server.js';
import type { Logger } from '../../src/server/log.js';
import { FakeEngine } from './engines.js';

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
