/**
 * Clients that heal (issue 11, section 1): the SDK over WebSocket keeps working across the
 * server's idle timeout, a server restart (new key, same measurements), and refuses a server
 * that comes back with a different measurement; a request in flight when the connection dies
 * fails once with a coded error and is not resent. Real server, loopback, simulated platform.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import type { ClientEvent, CloisterClient } from '../../src/client/client.js';
import { CloisterServer } from '../../src/server/server.js';
import type { CloisterServerOptions } from '../../src/server/server.js';
import type { ModelInfo } from '../../src/inference/types.js';
import { codeOfAsync } from '../helpers/errors.js';
import { FakeEngine } from '../helpers/engines.js';
import { startTestServer } from '../helpers/test-server.js';
import { until } from '../helpers/until.js';
import type { TestServer } from '../helpers/test-server.js';

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close().catch(() => undefined);
});

async function server(options: Partial<CloisterServerOptions> = {}): Promise<TestServer> {
  const t = await startTestServer(options);
  open.push(t);
  return t;
}

async function client(t: TestServer, extra: Partial<Parameters<typeof connect>[1]> = {}): Promise<{ c: CloisterClient; events: ClientEvent[] }> {
  const events: ClientEvent[] = [];
  const c = await connect(t.wsUrl, {
    policy: t.policy,
    trustedRoots: t.trustedRoots,
    reconnect: { maxAttempts: 5, initialDelayMs: 20, maxDelayMs: 200 },
    onEvent: (e) => events.push(e),
    ...extra,
  });
  open.push(c);
  return { c, events };
}

/** A second server on the same port with the same attester (same root and measurements): a restart with a new key. */
async function restart(t: TestServer, engine = t.engine, port = t.urls.port ?? 0): Promise<CloisterServer> {
  await t.server.close();
  const s = new CloisterServer({ engines: [engine], attester: t.attester, limits: { idleTimeoutMs: 60_000 } });
  await s.listen({ host: '127.0.0.1', port });
  open.push(s);
  return s;
}

/** The fake engine's models with other digests: what a changed model looks like to a client. */
class ChangedEngine extends FakeEngine {
  override models(): readonly ModelInfo[] {
    return super.models().map((m) => ({ ...m, digest: new Uint8Array(32).fill(0xee) }));
  }
}

describe('WebSocket client across idle timeouts', () => {
  it('keepalive pings keep the connection past the server idle timeout', async () => {
    const t = await server({ limits: { idleTimeoutMs: 500 } });
    const { c, events } = await client(t, { transport: { keepAliveIntervalMs: 50 } });
    expect(await c.classify('chest pain')).toHaveLength(2);
    const total = t.server.stats.connectionsTotal;
    await new Promise((r) => setTimeout(r, 1600)); // more than three idle timeouts
    expect(events.filter((e) => e.type === 'disconnected')).toEqual([]);
    expect(await c.classify('chest pain again')).toHaveLength(2);
    expect(t.server.stats.connectionsTotal).toBe(total); // the same connection served both
  });

  it('without keepalive the server closes the idle connection; the next request reconnects, re-verifies and works', async () => {
    const t = await server({ limits: { idleTimeoutMs: 200 } });
    const { c, events } = await client(t, { transport: { keepAliveIntervalMs: 0 } });
    expect(await c.classify('first')).toHaveLength(2);
    const evidenceBefore = t.server.stats.evidenceServed;
    await until(() => events.some((e) => e.type === 'disconnected'));
    expect(await c.classify('second')).toHaveLength(2);
    const re = events.find((e) => e.type === 'reconnected');
    expect(re).toMatchObject({ type: 'reconnected', keyChanged: false, platform: 'simulated' });
    // Fresh evidence was fetched (and verified) before the request went out.
    expect(t.server.stats.evidenceServed).toBe(evidenceBefore + 1);
  });
});

describe('WebSocket client across server restarts', () => {
  it('a restarted server (new key, same measurements) serves the next request', async () => {
    const t = await server();
    const { c, events } = await client(t);
    const before = c.keyConfig.hpkePublicKey;
    expect(await c.classify('before restart')).toHaveLength(2);
    await restart(t);
    await until(() => events.some((e) => e.type === 'disconnected'));
    expect(await c.classify('after restart')).toHaveLength(2);
    expect(Buffer.from(c.keyConfig.hpkePublicKey).equals(Buffer.from(before))).toBe(false);
    expect(events.find((e) => e.type === 'reconnected')).toMatchObject({ keyChanged: true });
  });

  it('a server that comes back with a different measurement is refused (POLICY_MISMATCH), nothing sent', async () => {
    const t = await server();
    const { c, events } = await client(t);
    expect(await c.classify('before')).toHaveLength(2);
    const changed = new ChangedEngine();
    const s2 = await restart(t, changed);
    await until(() => events.some((e) => e.type === 'disconnected'));
    expect(await codeOfAsync(c.classify('after'))).toBe('POLICY_MISMATCH');
    expect(s2.stats.sealedRequestsReceived).toBe(0);
    expect(changed.controls.running).toBe(0);
    expect(events.find((e) => e.type === 'reconnect-failed')).toMatchObject({ code: 'POLICY_MISMATCH' });
    // Still refused on the next try: fail closed, every time.
    expect(await codeOfAsync(c.classify('again'))).toBe('POLICY_MISMATCH');
    expect(s2.stats.sealedRequestsReceived).toBe(0);
  });

  it('a server that stays down fails the request with CONNECTION_FAILED naming host:port after bounded attempts', async () => {
    const t = await server();
    const { c, events } = await client(t);
    await t.server.close();
    await until(() => events.some((e) => e.type === 'disconnected'));
    let err: unknown;
    await c.classify('x').catch((e: unknown) => {
      err = e;
    });
    expect(err).toMatchObject({ code: 'CONNECTION_FAILED' });
    expect(String((err as Error).message)).toContain(`127.0.0.1:${t.urls.port ?? 0}`);
    expect(String((err as Error).message)).toMatch(/refused/);
    expect(events.filter((e) => e.type === 'reconnecting')).toHaveLength(4); // 5 attempts, 4 waits
  });

  it('a request in flight when the connection dies fails once with CONNECTION_FAILED and is not resent', async () => {
    const t = await server();
    const { c } = await client(t);
    const pending = codeOfAsync(async () => {
      for await (const chunk of c.request({ op: 'generate', model: 'fake-gen', input: 'block' })) void chunk;
    });
    await until(() => t.engine.controls.running === 1);
    const s2 = await restart(t);
    expect(await pending).toBe('CONNECTION_FAILED');
    // Not resent to the restarted server ...
    expect(s2.stats.sealedRequestsReceived).toBe(0);
    // ... which serves the next request.
    expect(await c.classify('next')).toHaveLength(2);
    expect(s2.stats.sealedRequestsReceived).toBe(1);
  });
});
