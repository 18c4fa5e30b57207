/**
 * In-flight slots are always given back: a client that never reads its responses cannot hold
 * a request past requestTimeoutMs + reportGraceMs (handler, HTTP) or a stalled WebSocket past
 * sendStallTimeoutMs; and a key generation retired mid-request cannot leave it unanswered.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createConnection } from 'node:net';
import type { Socket } from 'node:net';
import { WebSocket } from 'ws';
import { handleSealedRequest } from '../../src/server/handler.js';
import type { HandlerDeps, ResponseOut } from '../../src/server/handler.js';
import { KeyManager } from '../../src/server/keys.js';
import type { KeyGeneration } from '../../src/server/keys.js';
import { ReplayWindow } from '../../src/server/replay.js';
import { EngineRouter } from '../../src/server/router.js';
import { ServerStats } from '../../src/server/stats.js';
import { silentLogger } from '../../src/server/log.js';
import type { ErrorCode } from '../../src/errors.js';
import type { HpkeSuite } from '../../src/crypto/hpke/suite.js';
import { sealChunkedRequest } from '../../src/protocol/chunked.js';
import { decodeKeyConfig, sealTargetFromKeyConfig } from '../../src/protocol/key-config.js';
import type { KeyConfig } from '../../src/protocol/key-config.js';
import { encodeCbor } from '../../src/core/cbor.js';
import { decodeResponseChunk } from '../../src/protocol/messages.js';
import { encodeWireMessage } from '../../src/protocol/wire.js';
import { connect } from '../../src/client/client.js';
import type { ServerLimits } from '../../src/server/options.js';
import { FakeEngine, startTestServer, until } from '../e2e/helpers.js';
import type { TestServer } from '../e2e/helpers.js';

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close().catch(() => undefined);
});

let idByte = 0;
function generateRequest(kc: KeyConfig, input: unknown, params: Record<string, unknown> = {}): ReturnType<typeof sealChunkedRequest> {
  idByte = (idByte + 1) % 256;
  return sealChunkedRequest(
    sealTargetFromKeyConfig(kc),
    encodeCbor({ v: 1, op: 'generate', model: 'fake-gen', input, params, stream: true, ts: Date.now(), id: new Uint8Array(16).fill(idByte) } as Parameters<typeof encodeCbor>[0]),
  );
}

function deps(keys: KeyManager, extra: Partial<HandlerDeps> = {}): HandlerDeps {
  return {
    keys,
    replay: new ReplayWindow(),
    router: new EngineRouter([new FakeEngine()]),
    logger: silentLogger,
    stats: new ServerStats(),
    requestTimeoutMs: 60_000,
    maxRequestBytes: 1024 * 1024,
    ...extra,
  };
}

function keyManager(now?: () => number, graceMs?: number): KeyManager {
  return new KeyManager({
    platform: 'simulated',
    models: new FakeEngine().models(),
    configDigest: new Uint8Array(32).fill(7),
    ...(now === undefined ? {} : { now }),
    ...(graceMs === undefined ? {} : { graceMs }),
  });
}

/** A ResponseOut that records what it got; `stallAfter` writes resolve, later ones never do. */
function recorder(stallAfter = Infinity): ResponseOut & { bytes: Uint8Array[]; ended: boolean; failed: ErrorCode[] } {
  const r = {
    bytes: [] as Uint8Array[],
    ended: false,
    failed: [] as ErrorCode[],
    write(b: Uint8Array): Promise<void> {
      r.bytes.push(b);
      return r.bytes.length <= stallAfter ? Promise.resolve() : new Promise<void>(() => undefined);
    },
    end(): void {
      r.ended = true;
    },
    fail(code: ErrorCode): void {
      r.failed.push(code);
    },
  };
  return r;
}

describe('handler: reportGraceMs bounds the error report', () => {
  it('a peer whose writes never complete: the request still ends TIMEOUT and its slot is given back', async () => {
    const keys = keyManager();
    const d = deps(keys, { requestTimeoutMs: 30, reportGraceMs: 30 });
    const sealed = generateRequest(decodeKeyConfig(keys.current().keyConfig), 'x', { n: 5 });
    const out = recorder(1); // the response nonce goes out, nothing after it ever does
    d.stats.inFlight++; // as a transport does around the handler
    await handleSealedRequest(d, sealed.bytes, out, { conn: 1, signal: new AbortController().signal }).finally(() => d.stats.inFlight--);
    expect(d.stats.inFlight).toBe(0);
    expect(d.stats.errors.get('TIMEOUT')).toBe(1);
    expect(d.stats.requestsFailed).toBe(1);
    expect(d.stats.requestsCompleted).toBe(0);
    expect(out.ended).toBe(false);
    expect(out.failed).toEqual([]);
  });

  it('a peer that reads gets the sealed TIMEOUT report within the grace', async () => {
    const keys = keyManager();
    const d = deps(keys, { requestTimeoutMs: 30, reportGraceMs: 60_000 });
    const sealed = generateRequest(decodeKeyConfig(keys.current().keyConfig), 'block');
    const out = recorder();
    await handleSealedRequest(d, sealed.bytes, out, { conn: 1, signal: new AbortController().signal });
    expect(out.ended).toBe(true);
    const chunks = [...out.bytes.flatMap((b) => sealed.response.push(b)), ...sealed.response.finish()];
    const decoded = chunks.map((c) => decodeResponseChunk(c.plaintext));
    expect(decoded[0]).toMatchObject({ t: 'error', code: 'TIMEOUT' });
    expect(decoded[decoded.length - 1]?.t).toBe('end');
    expect(d.stats.errors.get('TIMEOUT')).toBe(1);
  });
});

describe('handler: one key lookup per request', () => {
  it('a key retired right after the lookup that opened the request: answered, signed by that key', async () => {
    let t = 1_000_000;
    const calls: number[] = [];
    class CountingKeys extends KeyManager {
      override lookup(keyId: number, suite: HpkeSuite): KeyGeneration {
        const g = super.lookup(keyId, suite);
        calls.push(keyId);
        t += 1_000; // the previous generation's grace (10 ms) ends now
        return g;
      }
    }
    const keys = new CountingKeys({ platform: 'simulated', models: new FakeEngine().models(), configDigest: new Uint8Array(32).fill(7), now: () => t, graceMs: 10 });
    const old = keys.current();
    keys.rotate(); // `old` is now the previous generation, usable for 10 ms
    const d = deps(keys);
    const sealed = generateRequest(decodeKeyConfig(old.keyConfig), 'x', { n: 2 });
    const out = recorder();
    await handleSealedRequest(d, sealed.bytes, out, { conn: 1, signal: new AbortController().signal });
    expect(calls).toEqual([old.keyId]);
    expect(d.stats.requestsCompleted).toBe(1);
    const chunks = [...out.bytes.flatMap((b) => sealed.response.push(b)), ...sealed.response.finish()];
    expect(chunks.map((c) => decodeResponseChunk(c.plaintext).t)).toEqual(['data', 'data', 'end']);
    // and the key really is gone now: a new request naming it is KEY_STALE, in plaintext
    const again = recorder();
    await handleSealedRequest(d, generateRequest(decodeKeyConfig(old.keyConfig), 'x').bytes, again, { conn: 1, signal: new AbortController().signal });
    expect(again.failed).toEqual(['KEY_STALE']);
  });
});

async function server(limits: Partial<ServerLimits>): Promise<TestServer> {
  const t = await startTestServer({ limits });
  open.push(t);
  return t;
}

async function keyConfigOf(t: TestServer): Promise<KeyConfig> {
  const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
  const kc = c.keyConfig;
  await c.close();
  return kc;
}

/** Far more output than loopback socket buffers hold, so a client that stops reading stalls it. */
const FLOOD = { n: 100_000, size: 16_384 };

describe('transports: a client that stops reading loses its slot', () => {
  it('WebSocket: sendStallTimeoutMs closes the stalled connection; the slot count returns to 0', async () => {
    // The request deadline is far away: only the stall limit can free the slot here.
    const t = await server({ highWaterMarkBytes: 64 * 1024, sendStallTimeoutMs: 200 });
    const kc = await keyConfigOf(t);
    const ws = new WebSocket(t.wsUrl, { perMessageDeflate: false });
    open.push({ close: async () => ws.terminate() });
    ws.on('error', () => undefined);
    const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
    await new Promise<void>((r, j) => {
      ws.once('open', () => r());
      ws.once('error', j);
    });
    ws.pause(); // stop reading: nothing the server sends is taken from the socket
    ws.send(encodeWireMessage({ t: 'req', sid: 1, body: generateRequest(kc, 'x', FLOOD).bytes }));
    await until(() => t.server.stats.inFlight === 1);
    await until(() => t.server.stats.errors.get('TIMEOUT') === 1, 1000);
    await until(() => t.server.stats.inFlight === 0);
    await until(() => t.server.stats.connectionsOpen === 0);
    expect(t.server.stats.requestsCancelled).toBe(1);
    // The client, reading again, finds its connection gone.
    ws.resume();
    expect([1006, 1008]).toContain(await closed);
  });

  it('WebSocket: a client that keeps reading is never cut by the stall limit', async () => {
    const t = await server({ highWaterMarkBytes: 64 * 1024, sendStallTimeoutMs: 200 });
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
    open.push(c);
    let n = 0;
    for await (const x of c.request({ op: 'generate', model: 'fake-gen', input: 'x', params: { n: 2_000, size: 1024 }, stream: true })) if (x !== undefined) n++;
    expect(n).toBe(2_000);
    expect(t.server.stats.errors.get('TIMEOUT')).toBeUndefined();
  });

  it('HTTP: past requestTimeoutMs + reportGraceMs the response socket is destroyed; the slot count returns to 0', async () => {
    const t = await server({ highWaterMarkBytes: 64 * 1024, requestTimeoutMs: 200, reportGraceMs: 100 });
    const kc = await keyConfigOf(t);
    const body = generateRequest(kc, 'x', FLOOD).bytes;
    const sock: Socket = createConnection({ host: '127.0.0.1', port: t.urls.port ?? 0 });
    open.push({ close: async () => void sock.destroy() });
    sock.on('error', () => undefined);
    const closed = new Promise<void>((r) => sock.on('close', () => r()));
    await new Promise<void>((r, j) => {
      sock.once('connect', () => r());
      sock.once('error', j);
    });
    sock.pause(); // never read the response
    sock.write(`POST /v1/sealed HTTP/1.1\r\nhost: x\r\ncontent-type: message/ohttp-chunked-req\r\ncontent-length: ${body.byteLength}\r\n\r\n`);
    sock.write(body);
    await until(() => t.server.stats.errors.get('TIMEOUT') === 1, 1000);
    await until(() => t.server.stats.inFlight === 0);
    expect(t.server.stats.requestsFailed).toBe(1);
    await until(() => t.server.stats.connectionsOpen === 0);
    sock.resume(); // reading again, the client reaches the end of a cut-short response
    await closed;
  });
});
