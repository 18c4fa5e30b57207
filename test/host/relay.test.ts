import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect, createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { formatRelayMetrics, formatRelayStats, Relay, RELAY_DEFAULTS, startRelay } from '../../src/host/relay.js';
import type { RelayEvent, RelayOptions } from '../../src/host/relay.js';
import { socatVsockArgv, unixConnector, vsockSocatConnector } from '../../src/host/enclave-leg.js';
import type { UpstreamConnector } from '../../src/host/enclave-leg.js';
import { CloisterError } from '../../src/errors.js';

// Throwaway self-signed P-256 certificate for CN=localhost / IP 127.0.0.1 (test data only).
const CERT = `-----BEGIN CERTIFICATE-----
MIIBnDCCAUGgAwIBAgIUVoTAGDNM1madhHzUTzF7KMNQ/m0wCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyNjAzMDM0MloYDzIxMjYxMTAy
MDMwMzQyWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAATGD68IwOnxoFPVxUb9fLer1ASp6vr9RDiql5m6a+VzUqxP/9pvx/DH
/8o+oK3ipGt1PDQzDDyaOEbMkZnrRhPAo28wbTAdBgNVHQ4EFgQUX5YoanaFd9Fq
STjtUyBErFcDQHgwHwYDVR0jBBgwFoAUX5YoanaFd9FqSTjtUyBErFcDQHgwDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARhwR/AAABgglsb2NhbGhvc3QwCgYIKoZI
zj0EAwIDSQAwRgIhALDtlhc4PEgX5D+GhVGKU6W5euKraozz47t3Ixo9FuQHAiEA
vVZni/VgXrf/ROfdDRuBklOf7W7tef1/yoPk8s5L3vE=
-----END CERTIFICATE-----
`;
const KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgfeJbokvqTzXQkbkN
+umDLsZWzbqjpFswupvJ3rNWWUqhRANCAATGD68IwOnxoFPVxUb9fLer1ASp6vr9
RDiql5m6a+VzUqxP/9pvx/DH/8o+oK3ipGt1PDQzDDyaOEbMkZnrRhPA
-----END PRIVATE KEY-----
`;

const dir = mkdtempSync(join(tmpdir(), 'cloister-relay-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const sockPath = (): string => join(dir, `enclave-${++n}.sock`);

/** A stand-in for the enclave: an echo server on a Unix socket (standing in for vsock). */
async function echoEnclave(): Promise<{ path: string; server: Server; sockets: Set<Socket> }> {
  const path = sockPath();
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { path, server, sockets };
}

const relays: Relay[] = [];
const servers: Server[] = [];
afterEach(async () => {
  for (const r of relays.splice(0)) await r.close();
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
});

async function relayTo(upstream: UpstreamConnector, extra: Partial<RelayOptions> = {}, events: RelayEvent[] = []): Promise<Relay> {
  const relay = await startRelay({ listen: { host: '127.0.0.1', port: 0 }, upstream, drainTimeoutMs: 2000, onEvent: (e) => events.push(e), ...extra });
  relays.push(relay);
  return relay;
}

function open(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ host: '127.0.0.1', port }, () => resolve(s));
    s.once('error', reject);
  });
}

function readExactly(s: Duplex, len: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    const onData = (c: Buffer): void => {
      parts.push(c);
      got += c.length;
      if (got >= len) {
        s.off('data', onData);
        resolve(Buffer.concat(parts).subarray(0, len));
      }
    };
    s.on('data', onData);
    s.once('error', reject);
    s.once('close', () => reject(new Error(`closed after ${got} bytes`)));
  });
}

const closed = (s: Duplex): Promise<void> => new Promise((r) => (s.destroyed ? r() : s.once('close', () => r())));

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(cond()).toBe(true);
}

describe('relay forwarding', () => {
  it('forwards bytes both ways and counts them, without content', async () => {
    const enclave = await echoEnclave();
    servers.push(enclave.server);
    const events: RelayEvent[] = [];
    const relay = await relayTo(unixConnector(enclave.path), {}, events);
    const c = await open(relay.port());
    const payload = Buffer.alloc(256 * 1024, 0x5a);
    c.write(payload);
    const back = await readExactly(c, payload.length);
    expect(back.equals(payload)).toBe(true);
    c.end();
    await closed(c);
    await until(() => relay.stats().connectionsActive === 0);
    const s = relay.stats();
    expect(s.connectionsAccepted).toBe(1);
    expect(s.bytesToEnclave).toBe(payload.length);
    expect(s.bytesFromEnclave).toBe(payload.length);
    expect(formatRelayStats(s)).toMatch(/bytes_to_enclave=262144/);
    expect(formatRelayMetrics(s)).toMatch(/cloister_relay_bytes_from_enclave_total 262144/);
    // Events carry counts only.
    expect(JSON.stringify(events)).not.toContain('ZZZZ');
    expect(events.some((e) => e.type === 'closed' && e.bytesIn === payload.length)).toBe(true);
  });

  it('serves several connections concurrently', async () => {
    const enclave = await echoEnclave();
    servers.push(enclave.server);
    const relay = await relayTo(unixConnector(enclave.path));
    const clients = await Promise.all([0, 1, 2].map(() => open(relay.port())));
    const results = await Promise.all(
      clients.map((c, i) => {
        const msg = Buffer.from(`client-${i}`);
        c.write(msg);
        return readExactly(c, msg.length);
      }),
    );
    expect(results.map(String)).toEqual(['client-0', 'client-1', 'client-2']);
    expect(relay.stats().connectionsActive).toBe(3);
    for (const c of clients) c.destroy();
  });

  it('listens on a Unix socket too', async () => {
    const enclave = await echoEnclave();
    servers.push(enclave.server);
    const listenPath = sockPath();
    const relay = await startRelay({ listen: { path: listenPath }, upstream: unixConnector(enclave.path) });
    relays.push(relay);
    expect(relay.address()).toBe(listenPath);
    const c = netConnect({ path: listenPath });
    c.write('hi');
    expect(String(await readExactly(c, 2))).toBe('hi');
    c.destroy();
  });

  it('terminates TLS when given a certificate and key', async () => {
    const enclave = await echoEnclave();
    servers.push(enclave.server);
    const relay = await relayTo(unixConnector(enclave.path), { tls: { cert: CERT, key: KEY } });
    const c = tlsConnect({ host: '127.0.0.1', port: relay.port(), ca: CERT, servername: 'localhost' });
    await new Promise<void>((r, j) => {
      c.once('secureConnect', () => r());
      c.once('error', j);
    });
    c.write('sealed-bytes');
    expect(String(await readExactly(c, 12))).toBe('sealed-bytes');
    c.destroy();
    // A plaintext client cannot complete the handshake and is counted.
    const p = await open(relay.port());
    p.write('GET / HTTP/1.1\r\n\r\n');
    await closed(p);
    await until(() => relay.stats().handshakeFailures === 1);
  });
});

describe('relay limits', () => {
  it('maxConnections: refuses connections beyond the limit', async () => {
    const enclave = await echoEnclave();
    servers.push(enclave.server);
    const events: RelayEvent[] = [];
    const relay = await relayTo(unixConnector(enclave.path), { maxConnections: 1 }, events);
    const a = await open(relay.port());
    a.write('a');
    await readExactly(a, 1);
    const b = await open(relay.port());
    await closed(b);
    expect(relay.stats().connectionsRejected).toBe(1);
    expect(events).toContainEqual({ type: 'rejected', reason: 'max-connections' });
    a.destroy();
    await until(() => relay.stats().connectionsActive === 0);
    const c = await open(relay.port());
    c.write('c');
    expect(String(await readExactly(c, 1))).toBe('c');
    c.destroy();
  });

  it('maxConnectionsPerSource: one client address cannot take every connection; its slots come back on close', async () => {
    const enclave = await echoEnclave();
    servers.push(enclave.server);
    const events: RelayEvent[] = [];
    const relay = await relayTo(unixConnector(enclave.path), { maxConnections: 100, maxConnectionsPerSource: 2 }, events);
    const a = await open(relay.port());
    const b = await open(relay.port());
    for (const s of [a, b]) {
      s.write('x');
      await readExactly(s, 1);
    }
    const c = await open(relay.port());
    await closed(c);
    expect(events).toContainEqual({ type: 'rejected', reason: 'max-connections-per-source' });
    expect(relay.stats().connectionsRejected).toBe(1);
    a.destroy();
    await until(() => relay.stats().connectionsActive === 1);
    const d = await open(relay.port());
    d.write('d');
    expect(String(await readExactly(d, 1))).toBe('d');
    b.destroy();
    d.destroy();
  });

  it('idleTimeoutMs: closes a silent connection and its upstream', async () => {
    const enclave = await echoEnclave();
    servers.push(enclave.server);
    const relay = await relayTo(unixConnector(enclave.path), { idleTimeoutMs: 50 });
    const c = await open(relay.port());
    await closed(c);
    expect(relay.stats().idleTimeouts).toBe(1);
    await until(() => enclave.sockets.size === 0);
  });

  it('connectTimeoutMs: gives up on an enclave that does not answer', async () => {
    const aborted: boolean[] = [];
    const hanging: UpstreamConnector = {
      description: 'test:hang',
      connect: (signal) =>
        new Promise<Duplex>((_, reject) => {
          signal.addEventListener('abort', () => {
            aborted.push(true);
            reject(new CloisterError('TIMEOUT', 'aborted'));
          });
        }),
    };
    const relay = await relayTo(hanging, { connectTimeoutMs: 30 });
    const c = await open(relay.port());
    await closed(c);
    expect(relay.stats().connectTimeouts).toBe(1);
    expect(aborted).toEqual([true]);
  });

  it('upstream failure closes the client and is counted', async () => {
    const events: RelayEvent[] = [];
    const relay = await relayTo(unixConnector(join(dir, 'nobody-home.sock')), {}, events);
    const c = await open(relay.port());
    await closed(c);
    expect(relay.stats().upstreamFailures).toBe(1);
    expect(events).toContainEqual({ type: 'upstream-failed', code: 'CONNECTION_FAILED' });
  });

  it('handshakeTimeoutMs: drops a TLS client that never says hello', async () => {
    const relay = await relayTo(unixConnector(join(dir, 'unused.sock')), { tls: { cert: CERT, key: KEY }, handshakeTimeoutMs: 30 });
    const c = await open(relay.port());
    await closed(c);
    expect(relay.stats().handshakeFailures).toBe(1);
  });

  it('rejects invalid limit values', () => {
    const up = unixConnector('/x');
    for (const bad of [{ maxConnections: 0 }, { maxConnectionsPerSource: 0 }, { idleTimeoutMs: -1 }, { connectTimeoutMs: 1.5 }, { drainTimeoutMs: Number.NaN }]) {
      expect(() => new Relay({ listen: { host: '127.0.0.1', port: 0 }, upstream: up, ...bad })).toThrow(/positive integer/);
    }
    expect(RELAY_DEFAULTS.maxConnections).toBeGreaterThan(0);
  });
});

describe('relay shutdown', () => {
  it('close() stops accepting, lets open connections finish, then resolves', async () => {
    const enclave = await echoEnclave();
    servers.push(enclave.server);
    const events: RelayEvent[] = [];
    const relay = await relayTo(unixConnector(enclave.path), {}, events);
    const port = relay.port();
    const c = await open(port);
    c.write('x');
    await readExactly(c, 1);
    let done = false;
    const closing = relay.close().then(() => (done = true));
    await until(() => events.some((e) => e.type === 'draining'));
    // New connections are refused.
    await expect(open(port)).rejects.toThrow();
    // The open one still works.
    c.write('y');
    expect(String(await readExactly(c, 1))).toBe('y');
    expect(done).toBe(false);
    c.end();
    await closing;
    expect(events).toContainEqual({ type: 'stopped', forced: 0 });
  });

  it('drainTimeoutMs: cuts connections that outlive the drain window', async () => {
    const enclave = await echoEnclave();
    servers.push(enclave.server);
    const events: RelayEvent[] = [];
    const relay = await relayTo(unixConnector(enclave.path), { drainTimeoutMs: 30 }, events);
    const c = await open(relay.port());
    c.write('x');
    await readExactly(c, 1);
    await relay.close();
    await closed(c);
    expect(events).toContainEqual({ type: 'stopped', forced: 1 });
  });
});

describe('vsock connector (argv only; never touches vsock)', () => {
  it('builds the socat argv and validates cid/port', () => {
    expect(socatVsockArgv(16, 5000)).toEqual(['-', 'VSOCK-CONNECT:16:5000']);
    for (const [cid, port] of [[2, 5000], [1, 1], [16, 0], [16, 2 ** 32], [3.5, 1], [0xffffffff, 1]] as const) {
      expect(() => socatVsockArgv(cid, port)).toThrow(/vsock/);
    }
    expect(vsockSocatConnector({ cid: 16, port: 5000 }).description).toBe('vsock:16:5000');
  });

  it('pipes through the child process it spawns (a stand-in executable, not socat)', async () => {
    // The stand-in records its argv and echoes stdin to stdout, like socat connected to an echo enclave.
    const fake = join(dir, 'fake-socat');
    const argvFile = join(dir, 'fake-socat.argv');
    writeFileSync(fake, `#!${process.execPath}\nrequire('fs').writeFileSync(${JSON.stringify(argvFile)}, JSON.stringify(process.argv.slice(2)));\nprocess.stdin.pipe(process.stdout);\n`);
    chmodSync(fake, 0o755);
    const relay = await relayTo(vsockSocatConnector({ cid: 42, port: 5005, socatPath: fake }));
    const c = await open(relay.port());
    c.write('through-the-child');
    expect(String(await readExactly(c, 17))).toBe('through-the-child');
    expect(JSON.parse(readFileSync(argvFile, 'utf8'))).toEqual(['-', 'VSOCK-CONNECT:42:5005']);
    c.end();
    await closed(c);
    await until(() => relay.stats().connectionsActive === 0);
  });

  it('a missing socat binary is an upstream failure', async () => {
    const relay = await relayTo(vsockSocatConnector({ cid: 42, port: 5005, socatPath: join(dir, 'no-such-socat') }));
    const c = await open(relay.port());
    await closed(c);
    expect(relay.stats().upstreamFailures).toBe(1);
  });
});
