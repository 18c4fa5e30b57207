/**
 * The WebSocket exchange the client's deadline cancels directly (no AbortController):
 * cancelled before its first step it sends nothing; cancelled while waiting it tells the
 * server (the engine sees the abort) and throws the given reason; a caller's signal still
 * cancels through `exchange(sealed, signal)`; and the client maps its deadline to TIMEOUT.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import { WsClientTransport } from '../../src/client/ws-transport.js';
import { CloisterError } from '../../src/errors.js';
import { sealChunkedRequest } from '../../src/protocol/chunked.js';
import { sealTargetFromKeyConfig } from '../../src/protocol/key-config.js';
import { encodeSealedRequest } from '../../src/protocol/messages.js';
import { codeOfAsync } from '../helpers/errors.js';
import { FakeEngine } from '../helpers/engines.js';
import { startTestServer } from '../helpers/test-server.js';
import { until } from '../helpers/until.js';
import type { TestServer } from '../helpers/test-server.js';

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close().catch(() => undefined);
});

async function server(engine = new FakeEngine()): Promise<TestServer> {
  const t = await startTestServer({ engine });
  open.push(t);
  return t;
}

async function drain(pieces: AsyncIterable<Uint8Array>): Promise<number> {
  let n = 0;
  for await (const p of pieces) n += p.byteLength;
  return n;
}

describe('WebSocket exchange cancelled by the client deadline', () => {
  it('cancelled before the first step: throws the reason and sends nothing', async () => {
    const t = await server();
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
    open.push(c);
    // A valid sealed request that would reach the engine, were it sent.
    const pt = encodeSealedRequest({ v: 1, op: 'generate', model: 'fake-gen', input: 'block', stream: false, ts: Date.now(), id: new Uint8Array(16).fill(3) });
    const sealed = sealChunkedRequest(sealTargetFromKeyConfig(c.keyConfig), pt).bytes;
    const tr = await WsClientTransport.connect(t.wsUrl);
    open.push(tr);
    const ex = tr.cancellableExchange(sealed);
    ex.cancel(new CloisterError('CANCELLED', 'deadline'));
    expect(await codeOfAsync(drain(ex.pieces))).toBe('CANCELLED');
    // The server handles a connection's frames in order: after this answer, a sent request
    // would have been opened (the stats count it synchronously on open).
    const opened = t.server.stats.requestsOpened;
    await tr.fetchEvidence(undefined);
    expect(t.server.stats.requestsOpened).toBe(opened);
    expect(t.engine.controls.running).toBe(0);
    // Positive control: the same kind of exchange, not cancelled, is opened by the server.
    const ex2 = tr.cancellableExchange(sealChunkedRequest(sealTargetFromKeyConfig(c.keyConfig), pt).bytes);
    const it2 = ex2.pieces[Symbol.asyncIterator]();
    const first = codeOfAsync(it2.next());
    await until(() => t.engine.controls.running === 1);
    expect(t.server.stats.requestsOpened).toBe(opened + 1);
    ex2.cancel(new CloisterError('CANCELLED', 'deadline'));
    await until(() => t.engine.controls.aborted === 1);
    expect(await first).toBe('CANCELLED');
  });

  it('client deadline over WebSocket: TIMEOUT, the engine sees the cancel, the client stays usable', async () => {
    const t = await server();
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots, requestTimeoutMs: 100 });
    open.push(c);
    const code = codeOfAsync(async () => {
      for await (const _ of c.request({ op: 'generate', model: 'fake-gen', input: 'block' })) void _;
    });
    expect(await code).toBe('TIMEOUT');
    await until(() => t.engine.controls.aborted === 1);
    // The connection and client stay usable after a deadline.
    expect(await c.classify('after', { model: 'fake-cls' })).toHaveLength(2);
  });

  it('a caller signal already aborted: CANCELLED, nothing sent', async () => {
    const t = await server();
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
    open.push(c);
    const ac = new AbortController();
    ac.abort();
    expect(await codeOfAsync(c.classify('x', { model: 'fake-cls', signal: ac.signal }))).toBe('CANCELLED');
    expect(t.engine.controls.running).toBe(0);
  });

  it('an invalid requestTimeoutMs is refused, not treated as no deadline', async () => {
    const t = await server();
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots, requestTimeoutMs: 0 });
    open.push(c);
    await expect(c.classify('x', { model: 'fake-cls' })).rejects.toThrow(RangeError);
  });
});
