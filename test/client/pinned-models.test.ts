/**
 * A policy that pins models limits the client to those models: verifyEvidence checked only
 * their digests, so any other model the server serves is refused (POLICY_MISMATCH) before
 * anything is sealed, and the default model is chosen among the pinned ones.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import type { CloisterClient } from '../../src/client/client.js';
import { developmentPolicy } from '../../src/client/dev-policy.js';
import { policyFromJson } from '../../src/verifier/policy.js';
import type { EngineRequest } from '../../src/inference/types.js';
import { FakeEngine, codeOf, startTestServer } from '../e2e/helpers.js';
import type { TestServer } from '../e2e/helpers.js';

/** Labels its classify answers with the model name, so a test sees which model ran. */
class TaggingEngine extends FakeEngine {
  override run(request: EngineRequest): AsyncIterable<unknown> {
    return (async function* () {
      yield [{ label: `model:${request.model}`, score: 1 }];
    })();
  }
}

describe('a policy that pins models', () => {
  let t: TestServer;
  let c: CloisterClient;
  beforeAll(async () => {
    // two classification models: 'fake-cls' (listed first) and 'fake-cls-b'; the policy pins only the second
    t = await startTestServer({ engines: [new TaggingEngine(), new TaggingEngine('-b')] });
    const pinned = t.server.router.models().filter((m) => m.name === 'fake-cls-b');
    expect(pinned).toHaveLength(1);
    const pcrs = t.attester.policySection().pcrs;
    const policy = policyFromJson(developmentPolicy({ pcrs, rootSha256Hex: t.attester.rootSha256Hex, models: pinned }));
    c = await connect(t.wsUrl, { policy, trustedRoots: t.trustedRoots });
  });
  afterAll(async () => {
    await c.close();
    await t.close();
  });

  it('the server lists both, the key config verifies, but only the pinned one is offered', () => {
    expect(c.keyConfig.models.map((m) => m.name)).toEqual(expect.arrayContaining(['fake-cls', 'fake-cls-b']));
    expect(c.keyConfig.models[0]?.task).toBe('text-classification');
    expect(c.models()).toEqual([{ name: 'fake-cls-b', task: 'text-classification' }]);
  });

  it('the default model is the pinned one', async () => {
    expect(await c.classify('hello')).toEqual([{ label: 'model:fake-cls-b', score: 1 }]);
  });

  it('an explicit pinned model works', async () => {
    expect(await c.classify('hello', { model: 'fake-cls-b' })).toEqual([{ label: 'model:fake-cls-b', score: 1 }]);
  });

  it('an unpinned model is refused with POLICY_MISMATCH and nothing is sent', async () => {
    const before = t.server.stats.sealedRequestsReceived;
    expect(await codeOf(c.classify('hello', { model: 'fake-cls' }))).toBe('POLICY_MISMATCH');
    expect(await codeOf(async () => {
      for await (const x of c.request({ op: 'generate', model: 'fake-gen', input: 'x' })) expect(x).toBeUndefined();
    })).toBe('POLICY_MISMATCH');
    expect(t.server.stats.sealedRequestsReceived).toBe(before);
  });

  it('a name the server does not list at all is the server\'s UNKNOWN_MODEL (no digest to trust, nothing runs)', async () => {
    const before = t.server.stats.sealedRequestsReceived;
    expect(await codeOf(c.classify('hello', { model: 'nope' }))).toBe('UNKNOWN_MODEL');
    expect(t.server.stats.sealedRequestsReceived).toBe(before + 1);
  });

  it('no pinned model for a task: the default is refused (POLICY_MISMATCH), not an unpinned one', async () => {
    const before = t.server.stats.sealedRequestsReceived;
    expect(await codeOf(c.embed(['x']))).toBe('POLICY_MISMATCH');
    expect(t.server.stats.sealedRequestsReceived).toBe(before);
  });
});
