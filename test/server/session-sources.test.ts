/**
 * maxSessionsPerSource (src/server/sessions.ts): one network source cannot fill maxSessions.
 * Through the real handler (sealed session opens, real bytes): a source at its cap is refused
 * OVERLOADED while another source still opens; a session that ends gives its slot back; the
 * Unix-socket source (LOCAL_SOURCE) is not limited per source. Over loopback, the SDK of a
 * source at its cap still gets its answers (one-shot).
 */
import { describe, expect, it } from 'vitest';
import { handleSessionOpen } from '../../src/server/handler.js';
import type { HandlerDeps } from '../../src/server/handler.js';
import { KeyManager } from '../../src/server/keys.js';
import { ReplayWindow } from '../../src/server/replay.js';
import { EngineRouter } from '../../src/server/router.js';
import { ServerStats } from '../../src/server/stats.js';
import { SessionTable } from '../../src/server/sessions.js';
import { LOCAL_SOURCE } from '../../src/server/sources.js';
import { resolveLimits } from '../../src/server/options.js';
import { DEFAULT_LIMITS } from '../../src/server/options.js';
import { silentLogger } from '../../src/server/log.js';
import { SessionOpening } from '../../src/protocol/session.js';
import { decodeKeyConfig, sealTargetFromKeyConfig } from '../../src/protocol/key-config.js';
import { connect } from '../../src/client/client.js';
import type { ClientEvent } from '../../src/client/client.js';
import { FakeEngine, fakeClassify } from '../helpers/engines.js';
import { fakeResponseOut } from '../helpers/response-out.js';
import { startTestServer } from '../helpers/test-server.js';

function setup(maxSessionsPerSource: number, maxSessions = 100): { deps: HandlerDeps; keys: KeyManager; table: SessionTable; clock: { now: number } } {
  const engine = new FakeEngine();
  const clock = { now: Date.now() };
  const keys = new KeyManager({ platform: 'simulated', models: engine.models(), configDigest: new Uint8Array(32).fill(7) });
  const limits = resolveLimits({ maxSessionsPerSource, maxSessions, sessionIdleTimeoutMs: 60_000 });
  const table = new SessionTable(limits, keys, () => clock.now);
  const deps: HandlerDeps = {
    keys,
    replay: new ReplayWindow(),
    router: new EngineRouter([engine]),
    logger: silentLogger,
    stats: new ServerStats(),
    requestTimeoutMs: 60_000,
    maxRequestBytes: 1024 * 1024,
    sessions: table,
  };
  return { deps, keys, table, clock };
}

/** One sealed session open from `source`: 'open' when the server answered with a session, else its plaintext code. */
async function open(deps: HandlerDeps, keys: KeyManager, source: string): Promise<string> {
  const opening = new SessionOpening(sealTargetFromKeyConfig(decodeKeyConfig(keys.current().keyConfigV2)));
  const out = fakeResponseOut({ mode: 'eager' });
  await handleSessionOpen(deps, opening.bytes, out, { conn: 1, source, signal: new AbortController().signal });
  if (out.failed.length > 0) return out.failed.join(',');
  for (const b of out.bytes) opening.push(b);
  opening.finish(Date.now());
  return 'open';
}

describe('maxSessionsPerSource', () => {
  it('has a default (64, below maxSessions) and is a named limit', () => {
    expect(DEFAULT_LIMITS.maxSessionsPerSource).toBe(64);
    expect(DEFAULT_LIMITS.maxSessionsPerSource).toBeLessThan(DEFAULT_LIMITS.maxSessions);
    expect(() => resolveLimits({ maxSessionsPerSource: 0 })).toThrow(/maxSessionsPerSource/);
  });

  it('a source at its cap is refused OVERLOADED while another source still opens; an ended session gives its slot back', async () => {
    const { deps, keys, table, clock } = setup(3);
    for (let i = 0; i < 3; i++) expect(await open(deps, keys, '192.0.2.1')).toBe('open');
    expect(await open(deps, keys, '192.0.2.1')).toBe('OVERLOADED');
    expect(table.heldBy('192.0.2.1')).toBe(3);
    // Another client is not affected.
    expect(await open(deps, keys, '192.0.2.2')).toBe('open');
    expect(await open(deps, keys, '2001:db8::7')).toBe('open');
    expect(table.size).toBe(5);
    // The first source's sessions go idle and are forgotten: it may open again.
    clock.now += 61_000;
    expect(await open(deps, keys, '192.0.2.1')).toBe('open');
    expect(table.heldBy('192.0.2.1')).toBe(1);
  });

  it('LOCAL_SOURCE (a Unix-socket peer) is limited by maxSessions only', async () => {
    const { deps, keys } = setup(2, 4);
    for (let i = 0; i < 4; i++) expect(await open(deps, keys, LOCAL_SOURCE)).toBe('open');
    expect(await open(deps, keys, LOCAL_SOURCE)).toBe('OVERLOADED');
  });

  it('over loopback: the SDK of a source at its cap gets its answers one-shot', async () => {
    const t = await startTestServer({ limits: { maxSessionsPerSource: 1 } });
    const events: ClientEvent[] = [];
    const a = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots, onEvent: (e) => events.push(e) });
    const b = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots, onEvent: (e) => events.push(e) });
    try {
      expect(await a.classify('first', { model: 'fake-cls' })).toEqual(fakeClassify('first'));
      expect(events.filter((e) => e.type === 'session-opened')).toHaveLength(1);
      // 127.0.0.1 holds its one session: b's open is refused, its request still answered.
      expect(await b.classify('second', { model: 'fake-cls' })).toEqual(fakeClassify('second'));
      expect(events.filter((e) => e.type === 'session-opened')).toHaveLength(1);
    } finally {
      await a.close();
      await b.close();
      await t.close();
    }
  });
});
