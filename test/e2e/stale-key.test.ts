/**
 * A forged, plaintext KEY_STALE / UNKNOWN_KEY_ID `err` frame must not make the client run a
 * request twice: it resends only when the freshly attested key really changed, and then with
 * the same request id, so the server's replay window catches a copy that did run.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import type { ErrorCode } from '../../src/errors.js';
import { codeOf, fakeClassify, startTestServer } from './helpers.js';
import type { TestServer } from './helpers.js';
import { startRelay } from './relay.js';
import type { Relay, Tamper } from './relay.js';

describe('a host forging a stale-key error cannot make one request run twice', () => {
  let t: TestServer;
  let relay: Relay;
  beforeAll(async () => {
    t = await startTestServer();
    relay = await startRelay(t.wsUrl);
  });
  afterAll(async () => {
    await relay.close();
    await t.close();
  });

  const client = () => connect(relay.url, { policy: t.policy, trustedRoots: t.trustedRoots });

  /** Forwards requests (counting them), drops the first answer and replaces it with a forged `err`. */
  const forgeOnce = (code: ErrorCode, counter: { reqs: number }): Tamper => {
    let forged = false;
    return (m, dir) => {
      if (dir === 'up' && m.t === 'req') counter.reqs++;
      if (dir === 'down' && m.t === 'res') {
        if (forged) return [m];
        if (m.t === 'res' && m.fin === true) {
          forged = true;
          return [{ t: 'err', sid: m.sid, code }];
        }
        return [];
      }
      return [m];
    };
  };

  for (const code of ['KEY_STALE', 'UNKNOWN_KEY_ID'] as const) {
    it(`forged ${code} after the server answered: no resend, the caller gets ${code}`, async () => {
      const c = await client();
      const keyId = c.keyConfig.keyId;
      const counter = { reqs: 0 };
      relay.tamper = forgeOnce(code, counter);
      const before = t.server.stats.sealedRequestsReceived;
      expect(await codeOf(c.classify('run me once', { model: 'fake-cls' }))).toBe(code);
      expect(t.server.stats.sealedRequestsReceived).toBe(before + 1);
      expect(counter.reqs).toBe(1);
      // the client did refresh (and kept the same, still valid key) and goes on working
      expect(c.keyConfig.keyId).toBe(keyId);
      relay.tamper = (m) => [m];
      expect(await c.classify('after', { model: 'fake-cls' })).toEqual(fakeClassify('after'));
      await c.close();
    });
  }

  it('forged KEY_STALE while a real rotation happened: the retry reuses the request id and the server refuses it (REPLAY)', async () => {
    const c = await client();
    const keyId = c.keyConfig.keyId;
    // the old key stays valid in its grace period, so the first copy runs under it
    t.server.keys.rotate();
    const counter = { reqs: 0 };
    relay.tamper = forgeOnce('KEY_STALE', counter);
    const before = t.server.stats.sealedRequestsReceived;
    const replays = t.server.stats.errors.get('REPLAY') ?? 0;
    expect(await codeOf(c.classify('run me once', { model: 'fake-cls' }))).toBe('REPLAY');
    expect(c.keyConfig.keyId).not.toBe(keyId);
    expect(counter.reqs).toBe(2);
    expect(t.server.stats.sealedRequestsReceived).toBe(before + 2);
    expect(t.server.stats.errors.get('REPLAY')).toBe(replays + 1);
    relay.tamper = (m) => [m];
    await c.close();
  });

  it('a real retired key through the relay: refresh and one transparent retry', async () => {
    const c = await client();
    const keyId = c.keyConfig.keyId;
    t.server.keys.rotate();
    t.server.keys.rotate();
    const counter = { reqs: 0 };
    relay.tamper = (m, dir) => {
      if (dir === 'up' && m.t === 'req') counter.reqs++;
      return [m];
    };
    expect(await c.classify('rotated', { model: 'fake-cls' })).toEqual(fakeClassify('rotated'));
    expect(counter.reqs).toBe(2);
    expect(c.keyConfig.keyId).not.toBe(keyId);
    relay.tamper = (m) => [m];
    await c.close();
  });
});
