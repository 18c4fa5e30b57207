/**
 * The server's idle close (PROTOCOL.md section 5): once it decided to close an idle WebSocket
 * (close 1000, reason 'idle') it runs no request that arrives afterwards, so a client may send
 * such a request again over a new connection without it ever running twice. A client ping
 * counts as activity.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { connect } from '../../src/client/client.js';
import { sealChunkedRequest } from '../../src/protocol/chunked.js';
import { sealTargetFromKeyConfig } from '../../src/protocol/key-config.js';
import { encodeSealedRequest } from '../../src/protocol/messages.js';
import { encodeWireMessage, IDLE_CLOSE_REASON } from '../../src/protocol/wire.js';
import { createLogger } from '../../src/server/log.js';
import { startTestServer } from '../helpers/test-server.js';
import { until } from '../helpers/until.js';
import type { TestServer } from '../helpers/test-server.js';

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close().catch(() => undefined);
});

async function server(idleTimeoutMs: number, lines: string[]): Promise<TestServer> {
  const t = await startTestServer({ limits: { idleTimeoutMs }, logger: createLogger({ sink: (l) => void lines.push(l) }) });
  open.push(t);
  return t;
}

async function rawSocket(url: string): Promise<WebSocket> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  open.push({ close: async () => void ws.terminate() });
  return ws;
}

describe('WebSocket idle close', () => {
  it('a request that reaches the server after it decided the idle close is never run', async () => {
    const lines: string[] = [];
    const t = await server(100, lines);
    const c = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
    open.push(c);
    const ws = await rawSocket(t.wsUrl);
    // Stop reading: the server's close frame stays unread, so this side still sends.
    ws.pause();
    await until(() => lines.some((l) => l.includes('conn.idle-timeout')));
    const pt = encodeSealedRequest({ v: 1, op: 'classify', model: 'fake-cls', input: 'late', stream: false, ts: Date.now(), id: new Uint8Array(16).fill(5) });
    ws.send(encodeWireMessage({ t: 'req', sid: 1, body: sealChunkedRequest(sealTargetFromKeyConfig(c.keyConfig), pt).bytes }));
    const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString('utf8') })));
    ws.resume();
    expect(await closed).toEqual({ code: 1000, reason: IDLE_CLOSE_REASON });
    // The close handshake completed after the frame was sent: the server had it, and ran nothing.
    expect(t.server.stats.sealedRequestsReceived).toBe(0);
    expect(t.server.stats.requestsOpened).toBe(0);
  });

  it('pings keep an otherwise silent connection open past the idle timeout', async () => {
    const lines: string[] = [];
    const t = await server(300, lines);
    const ws = await rawSocket(t.wsUrl);
    const timer = setInterval(() => ws.ping(), 50);
    try {
      await new Promise((r) => setTimeout(r, 1000));
      expect(lines.some((l) => l.includes('conn.idle-timeout'))).toBe(false);
      expect(ws.readyState).toBe(WebSocket.OPEN);
    } finally {
      clearInterval(timer);
    }
    // Positive control: silent, it is closed for idleness.
    await until(() => lines.some((l) => l.includes('conn.idle-timeout')));
  });
});
