/**
 * The server's WebSocket upgrade and the browser Origin (issue 17 item 12, decided in
 * docs/DEPLOY.md "Browser origins"): the server accepts any Origin on purpose. Nothing it
 * serves relies on ambient authority (no cookies, no sessions; the sealed channel is
 * authenticated by the attested key, the client key travels inside the sealed request), and
 * an Origin check would not stop a non-browser client. What bounds a page that opens
 * connections from its visitors' browsers is what bounds every network client: the
 * per-source limits. These tests pin that decision: a foreign Origin gets a working
 * WebSocket, and counts against maxConnectionsPerSource like any other connection.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { encodeWireMessage, decodeWireMessage } from '../../src/protocol/wire.js';
import type { ServerLimits } from '../../src/server/options.js';
import { startTestServer } from '../helpers/test-server.js';
import { until } from '../helpers/until.js';
import type { TestServer } from '../helpers/test-server.js';

const open: { close(): Promise<void> | void }[] = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close();
});

async function server(limits: Partial<ServerLimits> = {}): Promise<TestServer> {
  const t = await startTestServer({ limits });
  open.push(t);
  return t;
}

/** Opens a WebSocket with a browser's Origin header; resolves with the upgrade's status (101 or the refusal's). */
function openWithOrigin(t: TestServer, origin: string): Promise<{ status: number; ws: WebSocket }> {
  const ws = new WebSocket(t.wsUrl, { origin, perMessageDeflate: false });
  open.push({ close: () => ws.terminate() });
  return new Promise((resolve) => {
    ws.once('open', () => resolve({ status: 101, ws }));
    ws.once('unexpected-response', (_req, res) => resolve({ status: res.statusCode ?? 0, ws }));
    ws.once('error', () => resolve({ status: 0, ws }));
  });
}

describe('WebSocket upgrade and Origin', () => {
  it('accepts a foreign browser Origin and serves evidence over it', async () => {
    const t = await server();
    const { status, ws } = await openWithOrigin(t, 'https://evil.example');
    expect(status).toBe(101);
    const answer = new Promise<string>((resolve) => ws.once('message', (data: Buffer) => resolve(decodeWireMessage(new Uint8Array(data)).t)));
    ws.send(encodeWireMessage({ t: 'evidence-req' }));
    expect(await answer).toBe('evidence');
  });

  it('connections with a foreign Origin count against maxConnectionsPerSource like any other', async () => {
    const t = await server({ maxConnectionsPerSource: 2, connectionHeadTimeoutMs: 60_000 });
    expect((await openWithOrigin(t, 'https://evil.example')).status).toBe(101);
    expect((await openWithOrigin(t, 'https://evil.example')).status).toBe(101);
    await until(() => t.server.stats.connectionsOpen === 2);
    expect((await openWithOrigin(t, 'https://evil.example')).status).toBe(503);
  });
});
