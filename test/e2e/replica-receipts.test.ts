/**
 * Per-replica receipts end to end (src/protocol/replica.ts, src/client/replicas.ts): replicas
 * serving one fleet key behind a reverse proxy that the test points at one of them per request.
 * The client verified the fleet once; each answer's receipt names the replica that gave it;
 * the statement crosses the wire once and is named by digest after that; a replica that holds
 * the fleet key but runs other code (its statement fails the policy) gets no answer accepted.
 */
import { randomBytes } from 'node:crypto';
import { createServer, request as httpRequest } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createSimulatedAttester } from '../../src/attester/simulated/index.js';
import type { SimulatedAttester } from '../../src/attester/simulated/index.js';
import { loadSimulatedRoot } from '../../src/attester/simulated/root-store.js';
import { connect } from '../../src/client/client.js';
import type { CloisterClient } from '../../src/client/client.js';
import { CloisterServer } from '../../src/server/server.js';
import type { FleetKey } from '../../src/server/keys.js';
import { policyFromJson } from '../../src/verifier/policy.js';
import { checkReceipt } from '../../src/verifier/receipt.js';
import type { ReceiptRecord } from '../../src/verifier/receipt.js';
import { decodeEvidenceFile } from '../../src/verifier/evidence-file.js';
import { FakeEngine, fakeClassify } from '../helpers/engines.js';
import { CloisterError } from '../../src/errors.js';
import type { Attester } from '../../src/core/types.js';

const GOOD = new Uint8Array(32).fill(0x42);
const OTHER = new Uint8Array(32).fill(0x43);

describe('per-replica receipts behind a proxy', () => {
  let dir: string;
  type Name = 'a' | 'b' | 'intruder' | 'broken';
  const servers: Record<Name, { server: CloisterServer; port: number }> = {} as never;
  let target: Name = 'a';
  /** Response body bytes of each proxied POST, in order. */
  const posted: number[] = [];
  let proxy: Server;
  let client: CloisterClient;
  const receipts: ReceiptRecord[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cloister-replicas-'));
    const first = await createSimulatedAttester({ measurements: { codeDigest: GOOD } });
    await first.storeRoot(join(dir, 'sim'));
    const root = await loadSimulatedRoot(join(dir, 'sim'));
    const attester = (code: Uint8Array): Promise<SimulatedAttester> => createSimulatedAttester({ measurements: { codeDigest: code }, ...(root === undefined ? {} : { root }) });
    const now = Date.now();
    // As the broker releases it (here given directly: the broker's own tests cover the release).
    const fleet: FleetKey = { keyId: 11, hpkePrivateKey: new Uint8Array(randomBytes(32)), receiptSeed: new Uint8Array(randomBytes(32)), notBeforeMs: now - 1000, expiresAtMs: now + 3_600_000 };
    for (const [name, code] of [['a', GOOD], ['b', GOOD], ['intruder', OTHER], ['broken', GOOD]] as const) {
      const real = await attester(code);
      // 'broken' stands in for a TEE whose attestation device serves the fleet key config's
      // evidence and then fails: its replica statement cannot be produced.
      const self: { server?: CloisterServer } = {};
      const failing: Attester = {
        platform: real.platform,
        simulated: true,
        attest: async (input) => {
          if (self.server === undefined || !Buffer.from(input.keyConfig).equals(Buffer.from(self.server.keys.current().keyConfig))) {
            throw new CloisterError('ATTESTER_FAILED', 'the attestation device is gone (test)');
          }
          return real.attest(input);
        },
      };
      const server = new CloisterServer({ engines: [new FakeEngine()], attester: name === 'broken' ? failing : real, fleetKeys: [fleet] });
      self.server = server;
      const addr = await server.listen({ host: '127.0.0.1', port: 0 });
      servers[name] = { server, port: addr.port ?? 0 };
    }
    proxy = createServer((req, res) => {
      const up = httpRequest({ host: '127.0.0.1', port: servers[target].port, method: req.method, path: req.url, headers: req.headers }, (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        let n = 0;
        upRes.on('data', (d: Buffer) => (n += d.byteLength));
        upRes.on('end', () => {
          if (req.method === 'POST') posted.push(n);
        });
        upRes.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const section = first.policySection();
    const policy = policyFromJson({ version: 1, platforms: { simulated: { pcrs: { '0': section.pcrs['0'] }, rootSha256: section.rootSha256 } } });
    client = await connect(`http://127.0.0.1:${(proxy.address() as AddressInfo).port}`, { policy, trustedRoots: { simulated: [first.rootPem] }, onReceipt: (r) => receipts.push(r) });
  }, 60_000);

  afterAll(async () => {
    await client?.close();
    await new Promise((r) => proxy?.close(r));
    for (const s of Object.values(servers)) await s.server.close();
    await rm(dir, { recursive: true, force: true });
  });

  const keyOf = (name: Name): Uint8Array => servers[name].server.keys.current().replica?.receiptPublicKey ?? new Uint8Array();

  it('each receipt names the replica that answered; a statement crosses the wire once, then by digest', async () => {
    const fleetKeyConfig = decodeEvidenceFile(client.evidenceFile()).bundle.keyConfig;
    for (const [i, name] of (['a', 'a', 'b', 'b', 'a'] as const).entries()) {
      target = name;
      const text = `note ${i}`;
      expect(await client.classify(text, { model: 'fake-cls' })).toEqual(fakeClassify(text));
      const r = receipts[i];
      expect(r?.replica?.receiptKey).toEqual(keyOf(name));
      if (r !== undefined) checkReceipt(r, fleetKeyConfig);
    }
    // First answer of each replica: the statement (an evidence file of over a kilobyte); later: its digest.
    const [a1, a2, b1, b2, a3] = posted;
    expect((a1 ?? 0) - (a2 ?? 0)).toBeGreaterThan(1000);
    expect((b1 ?? 0) - (b2 ?? 0)).toBeGreaterThan(1000);
    expect(a3).toBe(a2);
    expect(receipts[0]?.replica?.statement).toEqual(receipts[1]?.replica?.statement);
  });

  it('a replica that holds the fleet key but runs other code: its answer is refused (POLICY_MISMATCH), no receipt handed out', async () => {
    target = 'intruder';
    const before = receipts.length;
    await expect(client.classify('note x', { model: 'fake-cls' })).rejects.toMatchObject({ code: 'POLICY_MISMATCH' });
    expect(receipts.length).toBe(before);
    // Its statement is refused every time, not cached.
    await expect(client.classify('note y', { model: 'fake-cls' })).rejects.toMatchObject({ code: 'POLICY_MISMATCH' });
    target = 'a';
    expect(await client.classify('note z', { model: 'fake-cls' })).toEqual(fakeClassify('note z'));
    expect(receipts.at(-1)?.replica?.receiptKey).toEqual(keyOf('a'));
  });

  it('a refusal after the replica named itself carries its receipt; one before (no statement) surfaces the server\'s code, with no receipt', async () => {
    target = 'b';
    const before = receipts.length;
    await expect(client.classify('note', { model: 'no-such-model' })).rejects.toMatchObject({ code: 'UNKNOWN_MODEL', detail: { origin: 'server' } });
    expect(receipts.length).toBe(before + 1);
    expect(receipts.at(-1)?.replica?.receiptKey).toEqual(keyOf('b'));
    target = 'broken';
    await expect(client.classify('note', { model: 'fake-cls' })).rejects.toMatchObject({ code: 'ATTESTER_FAILED', detail: { origin: 'server' } });
    expect(receipts.length).toBe(before + 1);
    target = 'a';
  });
});
