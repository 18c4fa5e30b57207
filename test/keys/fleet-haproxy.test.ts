/**
 * Fleet keys behind a real load balancer (issue 13): a key broker holds a fleet key; three
 * replicas obtain it with their (simulated) evidence and publish the same key config; HAProxy
 * (the Debian package, started here) balances round-robin over them. One evidence fetch,
 * 300 sealed HTTP requests, every one answered correctly and spread over all replicas; one
 * replica is closed mid-run and the others keep serving; a fourth replica with another code
 * digest is refused the key (POLICY_MISMATCH). Every answer's receipt names the replica that
 * gave it (per-replica receipts): an auditor holding the receipts and the fleet evidence tells
 * the three replicas apart by their receipt keys, each bound by that replica's verified
 * statement, and refuses a receipt presented with another replica's statement.
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createSimulatedAttester } from '../../src/attester/simulated/index.js';
import type { SimulatedAttester } from '../../src/attester/simulated/index.js';
import { loadSimulatedRoot } from '../../src/attester/simulated/root-store.js';
import { policyFromJson } from '../../src/verifier/policy.js';
import { connect } from '../../src/client/client.js';
import { CloisterError } from '../../src/errors.js';
import type { Engine, EngineRequest, ModelInfo, RunOptions } from '../../src/inference/types.js';
import { KeyBroker } from '../../src/keys/broker.js';
import { BrokerAdminClient } from '../../src/keys/client.js';
import { fetchFleetKeys } from '../../src/server/sealed-models.js';
import { CloisterServer } from '../../src/server/server.js';
import { requirePresent } from '../helpers/ci.js';
import { checkReceipt, receiptFromJson, receiptToJson } from '../../src/verifier/receipt.js';
import type { ReceiptRecord } from '../../src/verifier/receipt.js';
import { decodeEvidenceFile } from '../../src/verifier/evidence-file.js';
import { verifyEvidence } from '../../src/verifier/verify.js';
import { decodeKeyConfig } from '../../src/protocol/key-config.js';
import { replicaReceiptKey } from '../../src/protocol/replica.js';
import { FakeEngine, fakeClassify } from '../helpers/engines.js';

const haveHaproxy = spawnSync('haproxy', ['-v'], { stdio: 'ignore' }).status === 0;
const skip = requirePresent(haveHaproxy, 'haproxy (Debian package haproxy; .ci/run installs it)');

/** Counts the requests each replica answers (the engine is the fake one of the e2e tests). */
class CountingEngine implements Engine {
  readonly kind = 'fake';
  count = 0;
  readonly #inner = new FakeEngine();
  models(): readonly ModelInfo[] {
    return this.#inner.models();
  }
  async start(): Promise<void> {}
  async close(): Promise<void> {}
  run(request: EngineRequest, options: RunOptions): AsyncIterable<unknown> {
    this.count++;
    return this.#inner.run(request, options);
  }
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

const CODE = new Uint8Array(32).fill(0x42);

describe.skipIf(skip)('fleet keys: three replicas behind HAProxy', () => {
  let dir: string;
  let broker: KeyBroker;
  let brokerUrl: string;
  let haproxy: ChildProcess | undefined;
  let haproxyOut = '';
  let lbUrl: string;
  let rootPem: string;
  let policyJson: Record<string, unknown>;
  const replicas: { server: CloisterServer; engine: CountingEngine; attester: SimulatedAttester }[] = [];
  const receipts: ReceiptRecord[] = [];
  let fleetEvidence: Uint8Array | undefined;
  /** Each replica's receipt key (hex), read before any is closed. */
  let replicaKeys: string[] = [];

  async function attester(code: Uint8Array): Promise<SimulatedAttester> {
    const root = await loadSimulatedRoot(join(dir, 'sim'));
    return createSimulatedAttester({ measurements: { codeDigest: code }, ...(root === undefined ? {} : { root }) });
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cloister-fleet-'));
    const first = await createSimulatedAttester({ measurements: { codeDigest: CODE } });
    await first.storeRoot(join(dir, 'sim'));
    rootPem = first.rootPem;
    const section = first.policySection();
    policyJson = { version: 1, platforms: { simulated: { pcrs: { '0': section.pcrs['0'] }, rootSha256: section.rootSha256 } } };

    const adminSecret = new Uint8Array(randomBytes(32));
    broker = await KeyBroker.open({ storeDir: join(dir, 'store'), storeKey: new Uint8Array(randomBytes(32)), adminSecret });
    brokerUrl = (await broker.listen('127.0.0.1', 0)).url;
    await new BrokerAdminClient(brokerUrl, adminSecret).register('fleet', 'fleet', policyJson);

    const ports: number[] = [];
    for (let i = 0; i < 3; i++) {
      const a = await attester(CODE);
      const fleetKeys = await fetchFleetKeys('fleet', { keyBroker: brokerUrl, attester: a });
      const engine = new CountingEngine();
      const server = new CloisterServer({ engines: [engine], attester: a, fleetKeys });
      const addr = await server.listen({ host: '127.0.0.1', port: 0 });
      ports.push(addr.port ?? 0);
      replicas.push({ server, engine, attester: a });
    }
    const lbPort = await freePort();
    const cfg = [
      'global',
      '  maxconn 256',
      'defaults',
      '  mode http',
      '  timeout connect 2s',
      '  timeout client 30s',
      '  timeout server 30s',
      // Health checks answered by replicas in this (busy) test process: generous, so a slow
      // answer under load does not mark a live replica down; a closed one is refused at
      // connect and redispatched at once.
      '  timeout check 5s',
      '  retries 3',
      '  option redispatch 1',
      'frontend fe',
      `  bind 127.0.0.1:${lbPort}`,
      '  default_backend be',
      'backend be',
      '  balance roundrobin',
      '  option http-server-close',
      '  option httpchk GET /healthz',
      ...ports.map((p, i) => `  server r${i} 127.0.0.1:${p} check inter 500ms fall 3 rise 1`),
      '',
    ].join('\n');
    await writeFile(join(dir, 'haproxy.cfg'), cfg);
    haproxy = spawn('haproxy', ['-db', '-f', join(dir, 'haproxy.cfg')], { stdio: ['ignore', 'pipe', 'pipe'] });
    haproxy.stdout?.on('data', (d: Buffer) => (haproxyOut += d.toString()));
    haproxy.stderr?.on('data', (d: Buffer) => (haproxyOut += d.toString()));
    lbUrl = `http://127.0.0.1:${lbPort}`;
    // Ready when the load balancer answers a health check through to a replica.
    let ready = false;
    for (let i = 0; i < 100 && !ready && haproxy.exitCode === null; i++) {
      ready = await fetch(`${lbUrl}/healthz`).then(
        (r) => r.ok,
        () => false,
      );
      if (!ready) await new Promise((r) => setTimeout(r, 100));
    }
    if (!ready) throw new Error(`haproxy did not come up: ${haproxyOut}`);
    replicaKeys = replicas.map((r) => Buffer.from(r.server.keys.current().replica?.receiptPublicKey ?? new Uint8Array()).toString('hex'));
  }, 60_000);

  afterAll(async () => {
    if (haproxy !== undefined && haproxy.exitCode === null) {
      const exited = new Promise((r) => haproxy?.once('exit', r));
      haproxy.kill('SIGTERM');
      await exited;
    }
    for (const r of replicas) await r.server.close();
    await broker.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('every replica publishes the same key config', () => {
    const configs = replicas.map((r) => Buffer.from(r.server.keys.current().keyConfig).toString('hex'));
    expect(new Set(configs).size).toBe(1);
  });

  it('one evidence fetch, 300 sealed requests round-robin, all answered; a replica closed mid-run does not break the rest', async () => {
    const c = await connect(lbUrl, { policy: policyFromJson(policyJson), trustedRoots: { simulated: [rootPem] }, onReceipt: (r) => receipts.push(r) });
    fleetEvidence = c.evidenceFile();
    try {
      for (let i = 0; i < 300; i++) {
        if (i === 100) await replicas[1]?.server.close();
        const text = `note ${i} ${'x'.repeat(i % 17)}`;
        expect(await c.classify(text, { model: 'fake-cls' })).toEqual(fakeClassify(text));
      }
    } finally {
      await c.close();
    }
    const counts = replicas.map((r) => r.engine.count);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(300);
    // Round-robin reached all three before the close, and the survivors took the rest.
    for (const n of counts) expect(n).toBeGreaterThan(10);
    expect(counts[1]).toBeLessThan(100);
  }, 120_000);

  it('an auditor names the replica of every receipt, by a receipt key its verified statement binds; another replica\'s statement is refused', async () => {
    expect(receipts).toHaveLength(300);
    if (fleetEvidence === undefined) throw new Error('no fleet evidence');
    const fleetKeyConfig = decodeEvidenceFile(fleetEvidence).bundle.keyConfig;
    const fleet = decodeKeyConfig(fleetKeyConfig);
    expect(fleet.replicaReceipts).toBe(true);
    const byReplica = new Map<string, number>();
    const statements = new Map<string, Uint8Array>();
    for (const r of receipts) {
      // Offline, from the stored JSON: the signature under the replica's key, that key bound to this fleet.
      const stored = receiptFromJson(JSON.parse(JSON.stringify(receiptToJson(r))));
      checkReceipt(stored, fleetKeyConfig);
      const key = Buffer.from(stored.replica?.receiptKey ?? new Uint8Array()).toString('hex');
      byReplica.set(key, (byReplica.get(key) ?? 0) + 1);
      if (stored.replica !== undefined) statements.set(key, stored.replica.statement);
    }
    // Three replicas, three receipt keys: each the key of the replica that answered, as often as its engine ran.
    expect([...byReplica.keys()].sort()).toEqual([...replicaKeys].sort());
    replicas.forEach((r, i) => expect(byReplica.get(replicaKeys[i] ?? '')).toBe(r.engine.count));
    // Each statement is evidence from a TEE the policy accepts, binding that key to this fleet.
    for (const [key, statement] of statements) {
      const verified = await verifyEvidence(decodeEvidenceFile(statement).bundle, { policy: policyFromJson(policyJson), trustedRoots: { simulated: [rootPem] } });
      expect(Buffer.from(replicaReceiptKey(fleet, verified.keyConfigBytes)).toString('hex')).toBe(key);
    }
    // A receipt presented with another replica's statement (and key) does not verify.
    const [a, b] = [...statements.keys()];
    const ra = receipts.find((r) => Buffer.from(r.replica?.receiptKey ?? new Uint8Array()).toString('hex') === a);
    if (ra === undefined || b === undefined) throw new Error('expected receipts of two replicas');
    const swapped: ReceiptRecord = { ...ra, replica: { receiptKey: Buffer.from(b, 'hex'), statement: statements.get(b) ?? new Uint8Array() } };
    expect(() => checkReceipt(swapped, fleetKeyConfig)).toThrow(expect.objectContaining({ code: 'RECEIPT_INVALID' }));
    // And one stripped of its replica is not a fleet receipt.
    const { replica: _r, ...stripped } = ra;
    void _r;
    expect(() => checkReceipt(stripped, fleetKeyConfig)).toThrow(expect.objectContaining({ code: 'RECEIPT_INVALID' }));
  });

  it('a fourth replica with another code digest is refused the fleet key', async () => {
    const intruder = await attester(new Uint8Array(32).fill(0x43));
    const err = await fetchFleetKeys('fleet', { keyBroker: brokerUrl, attester: intruder }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CloisterError);
    expect((err as CloisterError).code).toBe('POLICY_MISMATCH');
  });
});
