/**
 * The relay's egress mode (src/host/egress.ts) and the in-TEE side (src/keys/outbound.ts):
 * a real TLS server on loopback (certificate from a CA made in this test) reached through
 * Outbound -> Unix socket (standing in for the vsock bridge) -> EgressRelay -> TCP, with
 * certificate and host-name verification on. A tap between the relay and the server records
 * every byte the relay sent on, to show it carried ciphertext only.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { createServer as createHttpsServer } from 'node:https';
import type { Server as HttpsServer } from 'node:https';
import { connect as netConnect, createServer as createNetServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CloisterError } from '../../src/errors.js';
import { encodeEgressRequest, parseEgressReply, parseEgressTarget } from '../../src/core/egress.js';
import { EGRESS_DEFAULTS, EgressRelay, startEgressRelay } from '../../src/host/egress.js';
import type { EgressEvent, EgressRelayOptions } from '../../src/host/egress.js';
import { Outbound, parseEgressRoute } from '../../src/keys/outbound.js';
import type { OutboundOptions } from '../../src/keys/outbound.js';
import { makeTestCa } from '../helpers/test-ca.js';
import type { TestCa } from '../helpers/test-ca.js';
import { until } from '../helpers/until.js';

const havePython = spawnSync('python3', ['-c', 'pass'], { stdio: 'ignore' }).status === 0;
const SECRET = 'the-answer-only-the-enclave-may-read';
const dir = mkdtempSync(join(tmpdir(), 'cloister-egress-'));
let n = 0;
const sock = (): string => join(dir, `e${++n}.sock`);

let ca: TestCa;
let otherCa: TestCa;
let good: HttpsServer;
let wrongName: HttpsServer;
const closers: (() => Promise<unknown>)[] = [];

function listen(server: Server | HttpsServer): Promise<number> {
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r((server.address() as AddressInfo).port)));
}

function tlsServer(cert: { cert: string; key: string }): HttpsServer {
  return createHttpsServer({ ...cert }, (req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'text/plain' }).end(SECRET));
  });
}

/** A TCP tap: forwards to `port` and records what passed (the bytes the relay sent on and got back). */
async function tap(port: number): Promise<{ port: number; seen: Buffer[] }> {
  const seen: Buffer[] = [];
  const s = createNetServer((c) => {
    const up = netConnect({ host: '127.0.0.1', port });
    c.on('data', (d: Buffer) => seen.push(Buffer.from(d)));
    up.on('data', (d: Buffer) => seen.push(Buffer.from(d)));
    c.pipe(up).pipe(c);
    c.on('error', () => up.destroy());
    up.on('error', () => c.destroy());
  });
  closers.push(() => new Promise((r) => s.close(r)));
  return { port: await listen(s), seen };
}

beforeAll(async () => {
  ca = makeTestCa('cloister egress test CA');
  otherCa = makeTestCa('some other CA');
  good = tlsServer(ca.issue('IP:127.0.0.1'));
  wrongName = tlsServer(ca.issue('DNS:kms.test'));
  await listen(good);
  await listen(wrongName);
});

afterAll(async () => {
  for (const s of [good, wrongName]) await new Promise((r) => s.close(r));
  rmSync(dir, { recursive: true, force: true });
});

const relays: EgressRelay[] = [];
afterEach(async () => {
  for (const r of relays.splice(0)) await r.close();
  for (const c of closers.splice(0)) await c();
});

async function relay(allow: string[], extra: Partial<EgressRelayOptions> = {}, events: EgressEvent[] = []): Promise<{ relay: EgressRelay; path: string }> {
  const path = sock();
  const r = await startEgressRelay({ listen: { path }, allow, drainTimeoutMs: 1000, onEvent: (e) => events.push(e), ...extra });
  relays.push(r);
  return { relay: r, path };
}

const portOf = (s: HttpsServer): number => (s.address() as AddressInfo).port;

/** GET https://127.0.0.1:port/ through `outbound`; the body, or the error. */
function get(port: number, options: OutboundOptions): Promise<string> {
  const out = new Outbound(options);
  return new Promise<string>((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port, path: '/', agent: out.httpsAgent }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve(body));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  }).finally(() => out.destroy());
}

async function failure(p: Promise<unknown>): Promise<Error & { code?: string }> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(Error);
  return err as Error & { code?: string };
}

/** A raw client of the relay: sends `bytes`, returns the reply line. */
function raw(path: string, bytes?: Buffer | string): Promise<{ reply: string; socket: Socket }> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ path }, () => {
      if (bytes !== undefined) s.write(bytes);
    });
    let text = '';
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (text.includes('\n')) resolve({ reply: text.slice(0, text.indexOf('\n')), socket: s });
    });
    s.on('error', reject);
    s.on('close', () => resolve({ reply: text, socket: s }));
  });
}

describe('egress header', () => {
  it('parses host:port strictly', () => {
    expect(parseEgressTarget('kms.us-east-1.amazonaws.com:443')).toEqual({ host: 'kms.us-east-1.amazonaws.com', port: 443 });
    for (const bad of ['KMS.example:443', 'kms.example', 'kms.example:0', 'kms.example:65536', 'kms.example:0443', '[::1]:443', 'a..b:1', 'kms.example.:443', '-a.b:1', 'a b:1', ':443', `${'a'.repeat(64)}.b:1`]) {
      expect(() => parseEgressTarget(bad), bad).toThrow(CloisterError);
    }
    expect(encodeEgressRequest({ host: 'a.b', port: 1 }).toString()).toBe('cloister-egress/1 a.b:1\n');
    expect(parseEgressReply('cloister-egress/1 ok')).toBe('ok');
    expect(parseEgressReply('cloister-egress/1 error EGRESS_DENIED')).toBe('EGRESS_DENIED');
    expect(parseEgressReply('cloister-egress/1 error NO_SUCH_CODE')).toBe('CONNECTION_FAILED');
    expect(() => parseEgressReply('HTTP/1.1 200 OK')).toThrow(CloisterError);
    expect(() => parseEgressRoute('vsock:3:8000')).toThrow(/unix:\/path/);
  });
});

describe('relay egress with the in-TEE forwarder', () => {
  it('TLS runs end to end: the certificate verifies against the test CA and the relay carries only ciphertext', async () => {
    const t = await tap(portOf(good));
    const events: EgressEvent[] = [];
    const { relay: r, path } = await relay([`127.0.0.1:${t.port}`], {}, events);
    expect(await get(t.port, { egress: { path }, ca: ca.caCert })).toBe(SECRET);
    const all = Buffer.concat(t.seen);
    expect(all.byteLength).toBeGreaterThan(SECRET.length);
    expect(all.includes(Buffer.from(SECRET))).toBe(false);
    expect(all.includes(Buffer.from('GET / HTTP/1.1'))).toBe(false);
    await until(() => events.some((e) => e.type === 'egress-closed'));
    expect(r.stats().opened).toBe(1);
    expect(r.stats().bytesIn).toBeGreaterThan(0);
    expect(JSON.stringify(events)).not.toContain(SECRET);
  });

  it('an untrusted CA and a certificate for another host name are refused by the TEE side', async () => {
    const { path } = await relay([`127.0.0.1:${portOf(good)}`, `127.0.0.1:${portOf(wrongName)}`]);
    const untrusted = await failure(get(portOf(good), { egress: { path }, ca: otherCa.caCert }));
    expect(untrusted.code).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT/);
    const systemRoots = await failure(get(portOf(good), { egress: { path } }));
    expect(systemRoots.code).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT/);
    const name = await failure(get(portOf(wrongName), { egress: { path }, ca: ca.caCert }));
    expect(name.code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
  });

  it('a destination not on the allow-list is EGRESS_DENIED, and nothing is connected', async () => {
    const events: EgressEvent[] = [];
    const { relay: r, path } = await relay(['kms.us-east-1.amazonaws.com:443'], {}, events);
    const err = await failure(get(portOf(good), { egress: { path }, ca: ca.caCert }));
    expect(err).toBeInstanceOf(CloisterError);
    expect((err as CloisterError).code).toBe('EGRESS_DENIED');
    expect(err.message).toContain(`127.0.0.1:${portOf(good)}`);
    expect(r.stats()).toMatchObject({ opened: 0, refused: 1 });
    expect(events).toContainEqual({ type: 'egress-refused', code: 'EGRESS_DENIED', target: `127.0.0.1:${portOf(good)}` });
  });

  it('an allowed destination that is closed is CONNECTION_FAILED', async () => {
    const s = createNetServer();
    const port = await listen(s);
    await new Promise((r) => s.close(r));
    const { path } = await relay([`127.0.0.1:${port}`]);
    expect((await raw(path, `cloister-egress/1 127.0.0.1:${port}\n`)).reply).toBe('cloister-egress/1 error CONNECTION_FAILED');
  });

  it.skipIf(!havePython)('connectTimeoutMs: a destination whose accept queue is full (SYNs dropped) is refused TIMEOUT', async () => {
    // A loopback listener with backlog 0 that never accepts: after one queued connection the
    // kernel drops further SYNs, so a connect neither succeeds nor fails (Linux default tcp_abort_on_overflow=0).
    const py = spawn('python3', ['-c', 'import socket,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(20)'], { stdio: ['ignore', 'pipe', 'ignore'] });
    closers.push(async () => void py.kill('SIGKILL'));
    const port = await new Promise<number>((r) => py.stdout.once('data', (d: Buffer) => r(Number(String(d).trim()))));
    const filler = netConnect({ host: '127.0.0.1', port });
    filler.on('error', () => undefined);
    await new Promise((r) => filler.once('connect', r));
    closers.push(async () => void filler.destroy());
    const { path } = await relay([`127.0.0.1:${port}`], { connectTimeoutMs: 200 });
    expect((await raw(path, `cloister-egress/1 127.0.0.1:${port}\n`)).reply).toBe('cloister-egress/1 error TIMEOUT');
  });

  it('refuses a malformed header, upper case, bytes sent before the answer, a header over maxHeaderBytes and a silent client', async () => {
    const allow = `127.0.0.1:${portOf(good)}`;
    const { path } = await relay([allow], { maxHeaderBytes: 64, headerTimeoutMs: 100 });
    expect((await raw(path, 'CONNECT 127.0.0.1:443 HTTP/1.1\n')).reply).toBe('cloister-egress/1 error MALFORMED');
    expect((await raw(path, 'cloister-egress/1 LOCALHOST:443\n')).reply).toBe('cloister-egress/1 error MALFORMED');
    expect((await raw(path, `cloister-egress/1 ${allow}\r\n`)).reply).toBe('cloister-egress/1 error MALFORMED');
    expect((await raw(path, `cloister-egress/1 ${allow}\n\x16\x03\x01`)).reply).toBe('cloister-egress/1 error PROTOCOL_VIOLATION');
    expect((await raw(path, `cloister-egress/1 ${'a'.repeat(70)}`)).reply).toBe('cloister-egress/1 error LIMIT_EXCEEDED');
    expect((await raw(path)).reply).toBe('cloister-egress/1 error TIMEOUT');
  });

  it('maxConnections: one stream over the limit is refused LIMIT_EXCEEDED; idleTimeoutMs closes a silent stream', async () => {
    const silent = createNetServer((c) => c.on('error', () => undefined));
    const port = await listen(silent);
    closers.push(() => new Promise((r) => silent.close(r)));
    const events: EgressEvent[] = [];
    const { relay: r, path } = await relay([`127.0.0.1:${port}`], { maxConnections: 2, idleTimeoutMs: 150 }, events);
    const held = [await raw(path, `cloister-egress/1 127.0.0.1:${port}\n`), await raw(path, `cloister-egress/1 127.0.0.1:${port}\n`)];
    expect(held.map((h) => h.reply)).toEqual(['cloister-egress/1 ok', 'cloister-egress/1 ok']);
    expect((await raw(path, `cloister-egress/1 127.0.0.1:${port}\n`)).reply).toBe('cloister-egress/1 error LIMIT_EXCEEDED');
    await until(() => r.stats().active === 0, 300, 10, 'idle streams closed');
    expect(events.filter((e) => e.type === 'egress-closed' && e.reason === 'idle')).toHaveLength(2);
    for (const h of held) h.socket.destroy();
  });

  it('options are validated; defaults are the documented ones', () => {
    expect(() => new EgressRelay({ listen: { path: sock() }, allow: [] })).toThrow(/at least one/);
    expect(() => new EgressRelay({ listen: { path: sock() }, allow: ['Kms.example:443'] })).toThrow(/allow-list entry/);
    expect(() => new EgressRelay({ listen: { path: sock() }, allow: ['a.b:1'], maxHeaderBytes: 0 })).toThrow(/maxHeaderBytes/);
    expect(EGRESS_DEFAULTS).toEqual({ maxConnections: 64, maxHeaderBytes: 512, headerTimeoutMs: 5000, connectTimeoutMs: 5000, idleTimeoutMs: 120_000, drainTimeoutMs: 30_000 });
  });

  it('only this host may connect: a non-loopback TCP listener is refused at start; the Unix socket is mode 0600', async () => {
    for (const host of ['0.0.0.0', '::', '192.0.2.1', 'relay.example']) {
      expect(() => new EgressRelay({ listen: { host, port: 0 }, allow: ['a.b:1'] })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID', message: expect.stringContaining(host) }));
    }
    const tcp = new EgressRelay({ listen: { host: '127.0.0.1', port: 0 }, allow: ['a.b:1'] });
    expect(await tcp.listen()).toMatch(/^127\.0\.0\.1:\d+$/);
    await tcp.close();
    const { path } = await relay(['a.b:1']);
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });
});
