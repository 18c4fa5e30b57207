import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import { createLogger } from '../../src/server/log.js';
import { codeOfAsync } from '../helpers/errors.js';
import { startTestServer } from '../helpers/test-server.js';
import type { TestServer } from '../helpers/test-server.js';
import { startRelay } from './relay.js';
import type { Relay } from './relay.js';

const CANARY = 'CANARY-7f3a9c-patient-Zebediah-Quux';

describe('canary: request and response content never reaches logs or the wire in clear', () => {
  const lines: string[] = [];
  let t: TestServer;
  let relay: Relay;
  beforeAll(async () => {
    t = await startTestServer({ logger: createLogger({ sink: (l) => lines.push(l), minLevel: 'debug' }) });
    relay = await startRelay(t.wsUrl);
  });
  afterAll(async () => {
    await relay.close();
    await t.close();
  });

  it('the canary appears in neither the server log nor the relayed bytes', async () => {
    const c = await connect(relay.url, { policy: t.policy, trustedRoots: t.trustedRoots });
    await c.classify(`note: ${CANARY} reports chest pain`, { model: 'fake-cls' });
    await c.embed([CANARY, `${CANARY} twice`]);
    // failing requests whose model / params / op carry the canary
    expect(await codeOfAsync(c.classify(CANARY, { model: CANARY }))).toBe('UNKNOWN_MODEL');
    const echo: unknown[] = [];
    for await (const x of c.request({ op: 'generate', model: 'fake-gen', input: CANARY, params: { n: 2, note: CANARY }, stream: true })) echo.push(x);
    expect(echo).toHaveLength(2);
    await c.close();
    // and over HTTP (no relay there: the log must still be clean)
    const h = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
    await h.classify(CANARY, { model: 'fake-cls' });
    await h.close();

    const log = lines.join('');
    const wire = Buffer.concat(relay.seen);
    expect(lines.length).toBeGreaterThan(5);
    expect(wire.byteLength).toBeGreaterThan(1000);
    for (const needle of [CANARY, 'Zebediah', 'chest pain']) {
      expect(log).not.toContain(needle);
      expect(wire.includes(Buffer.from(needle))).toBe(false);
    }
    // every log line is JSON with only the allowed keys
    const allowed = new Set(['ts', 'level', 'event', 'requestId', 'conn', 'sid', 'session', 'keyId', 'code', 'bytesIn', 'bytesOut', 'chunks', 'durationMs', 'inFlight', 'connections', 'port', 'closeCode', 'dropped']);
    for (const l of lines) for (const k of Object.keys(JSON.parse(l) as object)) expect(allowed.has(k)).toBe(true);
  });
});
