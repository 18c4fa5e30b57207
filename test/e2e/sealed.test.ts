import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CloisterServer } from '../../src/server/server.js';
import { connect } from '../../src/client/client.js';
import { policyFromJson } from '../../src/verifier/policy.js';
import { codeOf, fakeClassify, fakeEmbed, startTestServer } from './helpers.js';
import type { TestServer } from './helpers.js';

describe('sealed channel end to end (fake engine)', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(async () => {
    await t.close();
  });

  for (const kind of ['ws', 'http'] as const) {
    it(`classify and embed over ${kind} match the engine in-process`, async () => {
      const c = await connect(kind === 'ws' ? t.wsUrl : t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
      try {
        expect(c.simulated).toBe(true);
        expect(await c.classify('chest pain radiating', { model: 'fake-cls' })).toEqual(fakeClassify('chest pain radiating'));
        expect(await c.embed(['alpha', 'beta gamma'])).toEqual([fakeEmbed('alpha'), fakeEmbed('beta gamma')]);
        const chunks: unknown[] = [];
        for await (const ch of c.request({ op: 'generate', model: 'fake-gen', input: 'x', params: { n: 5, size: 3 }, stream: true })) chunks.push(ch);
        expect(chunks).toEqual([0, 1, 2, 3, 4].map((i) => ({ i, text: String(i).repeat(3) })));
      } finally {
        await c.close();
      }
    });
  }

  it('unknown model and operation come back as coded errors inside the sealed response', async () => {
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
    try {
      expect(await codeOf(c.classify('x', { model: 'nope' }))).toBe('UNKNOWN_MODEL');
      expect(await codeOf(c.classify('x', { model: 'fake-emb' }))).toBe('UNKNOWN_OPERATION');
      // the connection keeps working
      expect(await c.classify('ok', { model: 'fake-cls' })).toEqual(fakeClassify('ok'));
    } finally {
      await c.close();
    }
  });

  it('a policy that does not match: connect refuses and the server receives no sealed request', async () => {
    const before = t.server.stats.sealedRequestsReceived;
    const bad = structuredClone(t.policyJson) as { platforms: { simulated: { pcrs: Record<string, string> } } };
    bad.platforms.simulated.pcrs['0'] = 'ab'.repeat(48);
    expect(await codeOf(connect(t.wsUrl, { policy: policyFromJson(bad), trustedRoots: t.trustedRoots }))).toBe('POLICY_MISMATCH');
    const badModel = { ...t.policyJson, models: { 'fake-cls': '00'.repeat(32) } };
    expect(await codeOf(connect(t.httpUrl, { policy: policyFromJson(badModel), trustedRoots: t.trustedRoots }))).toBe('POLICY_MISMATCH');
    // no root given and no root pin in the policy: nothing trusts the simulated root
    const unpinned = structuredClone(t.policyJson) as { platforms: { simulated: Record<string, unknown> } };
    delete unpinned.platforms.simulated['rootSha256'];
    expect(await codeOf(connect(t.wsUrl, { policy: policyFromJson(unpinned) }))).toBe('ROOT_UNTRUSTED');
    // a pin naming another root: refused, with or without a given root
    const otherPin = structuredClone(t.policyJson) as { platforms: { simulated: Record<string, unknown> } };
    otherPin.platforms.simulated['rootSha256'] = 'cd'.repeat(32);
    expect(await codeOf(connect(t.wsUrl, { policy: policyFromJson(otherPin) }))).toBe('ROOT_UNTRUSTED');
    expect(await codeOf(connect(t.httpUrl, { policy: policyFromJson(otherPin), trustedRoots: t.trustedRoots }))).toBe('ROOT_UNTRUSTED');
    expect(t.server.stats.sealedRequestsReceived).toBe(before);
  });

  it("the development policy's root pin is explicit trust: no trustedRoots needed", async () => {
    for (const url of [t.wsUrl, t.httpUrl]) {
      const c = await connect(url, { policy: t.policy });
      try {
        expect(c.simulated).toBe(true);
        expect(await c.classify('pinned', { model: 'fake-cls' })).toEqual(fakeClassify('pinned'));
      } finally {
        await c.close();
      }
    }
  });

  it('32 concurrent clients, several requests each, all correct', async () => {
    const clients = await Promise.all(
      Array.from({ length: 32 }, (_, i) => connect(i % 2 === 0 ? t.wsUrl : t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots })),
    );
    try {
      await Promise.all(
        clients.map(async (c, i) => {
          for (let j = 0; j < 4; j++) {
            const text = `note ${i} ${j} ${'x'.repeat(i + j)}`;
            const [cls, emb] = await Promise.all([c.classify(text, { model: 'fake-cls' }), c.embed([text])]);
            expect(cls).toEqual(fakeClassify(text));
            expect(emb).toEqual([fakeEmbed(text)]);
          }
        }),
      );
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  });
});

describe('Unix socket listener', () => {
  it('serves WebSocket clients on a socket path (ws+unix:)', async () => {
    const t = await startTestServer();
    const dir = await mkdtemp(join(tmpdir(), 'cloister-sock-'));
    const s = new CloisterServer({ engines: [t.engine], attester: t.attester });
    try {
      const addr = await s.listen({ path: join(dir, 's.sock') });
      expect(addr.wsUrl).toBe(`ws+unix:${join(dir, 's.sock')}:/`);
      const c = await connect(addr.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
      expect(await c.classify('over a socket', { model: 'fake-cls' })).toEqual(fakeClassify('over a socket'));
      await c.close();
    } finally {
      await s.close();
      await t.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
