// @ts-check
/**
 * The Cloister SDK: verify a server against a policy, then classify and embed through the
 * sealed channel. Nothing is sent before the evidence verified.
 *
 *   npm start                                   # in another terminal (demo models, simulated platform)
 *   node examples/sdk-classify.mjs [url] [policy.json]
 *
 * In an application: `npm install /path/to/cloister-<version>.tgz` (README "Client SDK").
 */
import { readFileSync } from 'node:fs';
import { CloisterError, connect } from 'cloister/client';

const url = process.argv[2] ?? 'ws://127.0.0.1:8443/';
const policyPath = process.argv[3] ?? '.cloister/policy.json';

try {
  // The policy names the measurements the server must have (for `npm start`, the development
  // policy it wrote; for a real TEE, the one the image build produced).
  const client = await connect(url, { policy: readFileSync(policyPath, 'utf8') });
  try {
    const labels = await client.classify('chest pain radiating to the left arm', { model: 'classifier', topK: 2 });
    for (const { label, score } of labels) console.log(`${label}\t${score.toFixed(3)}`);
    const [vector] = await client.embed(['shortness of breath on exertion'], { model: 'embedder' });
    console.log(`embedding: ${vector?.length ?? 0} dimensions`);
  } finally {
    await client.close();
  }
} catch (err) {
  // Every failure has a stable code: POLICY_MISMATCH, CONNECTION_FAILED, ...
  console.error(err instanceof CloisterError ? `${err.code}: ${err.message}` : err);
  process.exitCode = 1;
}
