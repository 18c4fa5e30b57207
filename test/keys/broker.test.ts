import { randomBytes } from 'node:crypto';
import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import { createSimulatedAttester } from '../../src/attester/simulated/index.js';
import type { SimulatedAttester } from '../../src/attester/simulated/index.js';
import { loadSimulatedRoot } from '../../src/attester/simulated/root-store.js';
import { CloisterError } from '../../src/errors.js';
import { HpkeRecipientKey } from '../../src/crypto/hpke/kem.js';
import { encodeKeyConfig } from '../../src/protocol/key-config.js';
import { signAdminRequest, deriveAdminKeys } from '../../src/keys/admin-auth.js';
import { KeyBroker } from '../../src/keys/broker.js';
import type { BrokerLimits } from '../../src/keys/broker.js';
import { BrokerAdminClient, requestKeyRelease } from '../../src/keys/client.js';
import { evidenceToJson, releaseKeyConfig } from '../../src/keys/release.js';
import { STORE_FILE } from '../../src/keys/store.js';
import { startEgressRelay } from '../../src/host/egress.js';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

let root: string;
let tee: SimulatedAttester;
let other: SimulatedAttester;
const adminSecret = new Uint8Array(randomBytes(32));
const storeKey = new Uint8Array(randomBytes(32));

function policyFor(a: SimulatedAttester): unknown {
  const s = a.policySection();
  return { version: 1, platforms: { simulated: { pcrs: { '0': s.pcrs['0'] }, rootSha256: s.rootSha256 } } };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CloisterError);
  return (err as CloisterError).code;
}

interface Running {
  broker: KeyBroker;
  url: string;
  admin: BrokerAdminClient;
  dir: string;
}

async function start(limits: Partial<BrokerLimits> = {}, dir?: string, now?: () => number): Promise<Running> {
  const storeDir = dir ?? (await mkdtemp(join(root, 'store-')));
  const broker = await KeyBroker.open({ storeDir, storeKey, adminSecret, limits, ...(now === undefined ? {} : { now }) });
  const { url } = await broker.listen('127.0.0.1', 0);
  return { broker, url, admin: new BrokerAdminClient(url, adminSecret), dir: storeDir };
}

async function post(url: string, path: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${url}${path}`, { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

function errorCode(json: Record<string, unknown>): unknown {
  return (json['error'] as Record<string, unknown> | undefined)?.['code'];
}

/** A valid release body for `key`, with evidence from `attester`. */
async function releaseBody(url: string, key: string, attester: SimulatedAttester = tee, purpose = key): Promise<Record<string, unknown>> {
  const { json } = await post(url, '/v1/challenge', {});
  const nonce = String(json['nonce']);
  const eph = HpkeRecipientKey.generate();
  const kc = encodeKeyConfig(releaseKeyConfig(purpose, 'simulated', eph.publicKey));
  const ev = await attester.attest({ keyConfig: kc, hpkePublicKey: eph.publicKey, nonce: Buffer.from(nonce, 'hex') });
  return { key, nonce, evidence: evidenceToJson(ev) };
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'cloister-broker-'));
  tee = await createSimulatedAttester({ measurements: { codeDigest: new Uint8Array(32).fill(7) } });
  // The same root (as a second server in the same state directory would have), other code.
  await tee.storeRoot(join(root, 'sim'));
  const simRoot = await loadSimulatedRoot(join(root, 'sim'));
  other = await createSimulatedAttester({ measurements: { codeDigest: new Uint8Array(32).fill(9) }, ...(simRoot === undefined ? {} : { root: simRoot }) });
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('key broker: release', () => {
  let r: Running;
  const dataKey = new Uint8Array(randomBytes(32));
  beforeEach(async () => {
    r = await start();
    await r.admin.register('model-a', 'data', policyFor(tee), dataKey);
    return async () => r.broker.close();
  });

  it('releases a data key to evidence that matches the policy, HPKE-sealed to the ephemeral key, and audits it with the measurement', async () => {
    const got = await requestKeyRelease({ brokerUrl: r.url, key: 'model-a', attester: tee });
    expect(got.kind).toBe('data');
    expect(got.kind === 'data' ? got.key : '').toBe(Buffer.from(dataKey).toString('hex'));
    const audit = (await r.admin.audit()) as { records: Record<string, unknown>[] };
    const rel = audit.records.filter((x) => x['event'] === 'release');
    expect(rel).toHaveLength(1);
    expect(rel[0]?.['allowed']).toBe(true);
    expect((rel[0]?.['measurements'] as Record<string, string>)['PCR0']).toBe(tee.policySection().pcrs['0']);
    // No key material in the audit trail.
    expect(JSON.stringify(audit)).not.toContain(Buffer.from(dataKey).toString('hex'));
  });

  it('releases through the relay egress (Unix socket standing in for vsock); a broker not on the allow-list is EGRESS_DENIED', async () => {
    const path = join(root, `egress-${Date.now()}.sock`);
    const port = new URL(r.url).port;
    const relay = await startEgressRelay({ listen: { path }, allow: [`127.0.0.1:${port}`] });
    try {
      const got = await requestKeyRelease({ brokerUrl: r.url, key: 'model-a', attester: tee, outbound: { egress: { path } } });
      expect(got.kind === 'data' ? got.key : '').toBe(Buffer.from(dataKey).toString('hex'));
      // Two streams (challenge, release), one connection each.
      expect(relay.stats().opened).toBe(2);
    } finally {
      await relay.close();
    }
    const denied = await startEgressRelay({ listen: { path }, allow: ['broker.example:443'] });
    try {
      expect(await codeOf(requestKeyRelease({ brokerUrl: r.url, key: 'model-a', attester: tee, outbound: { egress: { path } } }))).toBe('EGRESS_DENIED');
    } finally {
      await denied.close();
    }
  });

  it('an answer over the size bound is LIMIT_EXCEEDED without reading it all', async () => {
    const huge = createServer((req, res) => {
      req.resume();
      // No content-length: chunked, so only the streaming count can stop it.
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      let sent = 0;
      const pump = (): void => {
        while (sent < 64 * 1024 * 1024 && !res.destroyed) {
          sent += chunk.byteLength;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    });
    await new Promise<void>((done) => huge.listen(0, '127.0.0.1', done));
    try {
      const err = await requestKeyRelease({ brokerUrl: `http://127.0.0.1:${(huge.address() as AddressInfo).port}`, key: 'model-a', attester: tee }).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(CloisterError);
      expect((err as CloisterError).code).toBe('LIMIT_EXCEEDED');
    } finally {
      huge.closeAllConnections();
      await new Promise((done) => huge.close(done));
    }
  });

  it('refuses another measurement (POLICY_MISMATCH), audited as refused with the measurement seen', async () => {
    expect(await codeOf(requestKeyRelease({ brokerUrl: r.url, key: 'model-a', attester: other }))).toBe('POLICY_MISMATCH');
    const audit = (await r.admin.audit()) as { records: Record<string, unknown>[] };
    const refused = audit.records.find((x) => x['event'] === 'release' && x['allowed'] === false);
    expect(refused?.['code']).toBe('POLICY_MISMATCH');
    expect(refused?.['key']).toBe('model-a');
    expect((refused?.['measurements'] as Record<string, string> | undefined)?.['PCR0']).toBe(other.policySection().pcrs['0']);
    expect(String(refused?.['message'])).toContain(other.policySection().pcrs['0']);
  });

  it('refuses a replayed release request (REPLAY) and a nonce it never issued', async () => {
    const body = await releaseBody(r.url, 'model-a');
    expect((await post(r.url, '/v1/release', body)).status).toBe(200);
    const again = await post(r.url, '/v1/release', body);
    expect(again.status).toBe(409);
    expect(errorCode(again.json)).toBe('REPLAY');
    const forged = await post(r.url, '/v1/release', { ...body, nonce: 'ab'.repeat(32) });
    expect(errorCode(forged.json)).toBe('REPLAY');
  });

  it('refuses evidence bound to another nonce (BINDING_MISMATCH)', async () => {
    const body = await releaseBody(r.url, 'model-a');
    const { json } = await post(r.url, '/v1/challenge', {});
    const res = await post(r.url, '/v1/release', { ...body, nonce: json['nonce'] });
    expect(errorCode(res.json)).toBe('BINDING_MISMATCH');
  });

  it('refuses evidence made for another key (BINDING_MISMATCH on the purpose digest)', async () => {
    await r.admin.register('model-b', 'data', policyFor(tee), new Uint8Array(randomBytes(32)));
    const body = await releaseBody(r.url, 'model-b', tee, 'model-a');
    const res = await post(r.url, '/v1/release', body);
    expect(errorCode(res.json)).toBe('BINDING_MISMATCH');
  });

  it('refuses an unknown key (NOT_FOUND) and a revoked key (KEY_REVOKED)', async () => {
    expect(await codeOf(requestKeyRelease({ brokerUrl: r.url, key: 'nope', attester: tee }))).toBe('NOT_FOUND');
    await r.admin.revoke('model-a');
    expect(await codeOf(requestKeyRelease({ brokerUrl: r.url, key: 'model-a', attester: tee }))).toBe('KEY_REVOKED');
  });

  it('refuses malformed requests (MALFORMED)', async () => {
    expect(errorCode((await post(r.url, '/v1/release', 'not json')).json)).toBe('MALFORMED');
    const body = await releaseBody(r.url, 'model-a');
    expect(errorCode((await post(r.url, '/v1/release', { ...body, extra: 1 })).json)).toBe('MALFORMED');
  });
});

describe('key broker: limits', () => {
  it('a body over maxBodyBytes is LIMIT_EXCEEDED (413)', async () => {
    const r = await start({ maxBodyBytes: 2048 });
    try {
      const res = await post(r.url, '/v1/release', { pad: 'x'.repeat(4096) });
      expect(res.status).toBe(413);
      expect(errorCode(res.json)).toBe('LIMIT_EXCEEDED');
    } finally {
      await r.broker.close();
    }
  });

  it('more than requestsPerMinute from one source is RATE_LIMITED (429)', async () => {
    const r = await start({ requestsPerMinute: 3 });
    try {
      for (let i = 0; i < 3; i++) expect((await post(r.url, '/v1/challenge', {})).status).toBe(200);
      const res = await post(r.url, '/v1/challenge', {});
      expect(res.status).toBe(429);
      expect(errorCode(res.json)).toBe('RATE_LIMITED');
    } finally {
      await r.broker.close();
    }
  });

  it('more than maxChallengesPerSource outstanding challenges is RATE_LIMITED', async () => {
    const r = await start({ maxChallengesPerSource: 2 });
    try {
      await post(r.url, '/v1/challenge', {});
      await post(r.url, '/v1/challenge', {});
      const res = await post(r.url, '/v1/challenge', {});
      expect(errorCode(res.json)).toBe('RATE_LIMITED');
      expect(String((res.json['error'] as Record<string, unknown>)['message'])).toContain('maxChallengesPerSource');
    } finally {
      await r.broker.close();
    }
  });

  it('a challenge used after challengeTtlMs is REPLAY', async () => {
    let t = Date.now();
    const r = await start({ challengeTtlMs: 1000 }, undefined, () => t);
    try {
      await r.admin.register('k', 'data', policyFor(tee), new Uint8Array(randomBytes(32)));
      const body = await releaseBody(r.url, 'k');
      t += 1001;
      expect(errorCode((await post(r.url, '/v1/release', body)).json)).toBe('REPLAY');
    } finally {
      await r.broker.close();
    }
  });
});

describe('key broker: administration', () => {
  let r: Running;
  beforeAll(async () => {
    r = await start();
  });
  afterAll(async () => {
    await r.broker.close();
  });

  it('an admin request without or with a wrong credential is UNAUTHORIZED, and audited', async () => {
    const res = await fetch(`${r.url}/v1/admin/keys`);
    expect(res.status).toBe(401);
    const wrong = new BrokerAdminClient(r.url, new Uint8Array(randomBytes(32)));
    expect(await codeOf(wrong.list())).toBe('UNAUTHORIZED');
    const audit = (await r.admin.audit()) as { records: Record<string, unknown>[] };
    expect(audit.records.filter((x) => x['event'] === 'admin' && x['allowed'] === false).length).toBeGreaterThanOrEqual(2);
  });

  it('a replayed admin request is REPLAY', async () => {
    const keys = deriveAdminKeys(adminSecret);
    const auth = signAdminRequest(keys, 'GET', '/v1/admin/keys', new Uint8Array(0));
    expect((await fetch(`${r.url}/v1/admin/keys`, { headers: { authorization: auth } })).status).toBe(200);
    const again = await fetch(`${r.url}/v1/admin/keys`, { headers: { authorization: auth } });
    expect(again.status).toBe(409);
  });

  it('an admin request signed at another time (outside the window) is REPLAY', async () => {
    const keys = deriveAdminKeys(adminSecret);
    const auth = signAdminRequest(keys, 'GET', '/v1/admin/keys', new Uint8Array(0), Date.now() - 10 * 60_000);
    expect((await fetch(`${r.url}/v1/admin/keys`, { headers: { authorization: auth } })).status).toBe(409);
  });

  it('registers, lists, rotates (a fleet key gets the next key id) and refuses a duplicate name', async () => {
    await r.admin.register('fleet-1', 'fleet', policyFor(tee));
    const first = (await r.admin.list()) as { keys: { name: string; versions: number[] }[] };
    expect(first.keys.find((k) => k.name === 'fleet-1')?.versions).toEqual([1]);
    const rot = (await r.admin.rotate('fleet-1')) as { version: number };
    expect(rot.version).toBe(2);
    expect(await codeOf(r.admin.register('fleet-1', 'fleet', policyFor(tee)))).toBe('CONFIG_INVALID');
    const got = await requestKeyRelease({ brokerUrl: r.url, key: 'fleet-1', attester: tee });
    expect(got.kind === 'fleet' ? got.versions.map((v) => v.version) : []).toEqual([2, 1]);
    if (got.kind === 'fleet') expect(got.versions[0]?.keyId).toBe(((got.versions[1]?.keyId ?? 0) + 1) % 256);
  });

  it('refuses a release policy that does not parse (POLICY_INVALID)', async () => {
    expect(await codeOf(r.admin.register('bad', 'fleet', { version: 1, platforms: {} }))).toBe('POLICY_INVALID');
  });
});

describe('key broker: store', () => {
  it('state survives a restart; records are encrypted at rest; a wrong store key is STORE_CORRUPT', async () => {
    const dataKey = new Uint8Array(randomBytes(32));
    const r = await start();
    await r.admin.register('persist', 'data', policyFor(tee), dataKey);
    await r.broker.close();
    const file = await readFile(join(r.dir, STORE_FILE));
    expect(file.includes(Buffer.from(Buffer.from(dataKey).toString('hex')))).toBe(false);
    expect(file.includes(Buffer.from('persist'))).toBe(false);
    const again = await start({}, r.dir);
    try {
      const got = await requestKeyRelease({ brokerUrl: again.url, key: 'persist', attester: tee });
      expect(got.kind === 'data' ? got.key : '').toBe(Buffer.from(dataKey).toString('hex'));
    } finally {
      await again.broker.close();
    }
    expect(await codeOf(KeyBroker.open({ storeDir: r.dir, storeKey: new Uint8Array(32), adminSecret }))).toBe('STORE_CORRUPT');
  });

  it('a partial record at the end (crash mid-write) is cut off; a changed record before it is STORE_CORRUPT', async () => {
    const r = await start();
    await r.admin.register('one', 'fleet', policyFor(tee));
    await r.admin.register('two', 'fleet', policyFor(tee));
    await r.broker.close();
    const path = join(r.dir, STORE_FILE);
    const good = await readFile(path);
    await appendFile(path, Buffer.from([0, 0, 1, 0, 1, 2, 3]));
    const healed = await KeyBroker.open({ storeDir: r.dir, storeKey, adminSecret });
    expect(healed.recoveredBytes).toBe(7);
    expect(healed.list().map((k) => k.name)).toEqual(['one', 'two']);
    await healed.close();
    expect(Buffer.compare(await readFile(path), good)).toBe(0);
    const corrupt = Buffer.from(good);
    corrupt[60] = (corrupt[60] ?? 0) ^ 1; // inside the first record
    await writeFile(path, corrupt);
    expect(await codeOf(KeyBroker.open({ storeDir: r.dir, storeKey, adminSecret }))).toBe('STORE_CORRUPT');
  });
});
