/**
 * `cloister receipt verify --dir` as a library (src/verifier/receipt-dir.ts): an audit
 * directory written by the SDK's AuditDirectory for a fleet replica and a stand-alone server;
 * counts per key config and replica; every failure names its file.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSimulatedAttester } from '../../src/attester/simulated/index.js';
import type { SimulatedAttester } from '../../src/attester/simulated/index.js';
import { loadSimulatedRoot } from '../../src/attester/simulated/root-store.js';
import { connect } from '../../src/client/client.js';
import { AuditDirectory } from '../../src/client/audit-dir.js';
import { CloisterServer } from '../../src/server/server.js';
import type { FleetKey } from '../../src/server/keys.js';
import { policyFromJson } from '../../src/verifier/policy.js';
import type { Policy } from '../../src/verifier/policy.js';
import { detachedStatementOf, receiptFromJson, receiptToJson } from '../../src/verifier/receipt.js';
import type { ReceiptRecord } from '../../src/verifier/receipt.js';
import { encodeEvidenceFile } from '../../src/verifier/evidence-file.js';
import { verifyReceiptDirectory } from '../../src/verifier/receipt-dir.js';
import { readFileLimited } from '../../src/cli/commands/read-file.js';
import { FakeEngine } from '../helpers/engines.js';

describe('verifyReceiptDirectory', () => {
  let dir: string;
  let audit: string;
  let attester: SimulatedAttester;
  let intruder: SimulatedAttester;
  let policy: Policy;
  const servers: CloisterServer[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cloister-receipt-dir-'));
    attester = await createSimulatedAttester({ measurements: { codeDigest: new Uint8Array(32).fill(0x42) } });
    await attester.storeRoot(join(dir, 'sim'));
    const root = await loadSimulatedRoot(join(dir, 'sim'));
    intruder = await createSimulatedAttester({ measurements: { codeDigest: new Uint8Array(32).fill(0x43) }, ...(root === undefined ? {} : { root }) });
    const section = attester.policySection();
    policy = policyFromJson({ version: 1, platforms: { simulated: { pcrs: { '0': section.pcrs['0'] }, rootSha256: section.rootSha256 } } });
    const now = Date.now();
    const fleetKey: FleetKey = { keyId: 4, hpkePrivateKey: new Uint8Array(randomBytes(32)), receiptSeed: new Uint8Array(randomBytes(32)), notBeforeMs: now - 1000, expiresAtMs: now + 3_600_000 };
    audit = join(dir, 'audit');
    const d = await AuditDirectory.open(audit);
    for (const [fleet, n] of [[true, 3], [true, 2], [false, 2]] as const) {
      const server = new CloisterServer({ engines: [new FakeEngine()], attester, ...(fleet ? { fleetKeys: [fleetKey] } : {}) });
      servers.push(server);
      const url = (await server.listen({ host: '127.0.0.1', port: 0 })).httpUrl ?? '';
      const records: ReceiptRecord[] = [];
      const c = await connect(url, { policy, trustedRoots: { simulated: [attester.rootPem] }, sessions: false, receiptsV2: false, onReceipt: (r) => records.push(r) });
      for (let i = 0; i < n; i++) await c.classify(`note ${i}`, { model: 'fake-cls' });
      for (const r of records) await d.writeReceipt(r, c.evidenceFile());
      await c.close();
    }
  }, 60_000);

  afterAll(async () => {
    for (const s of servers) await s.close();
    await rm(dir, { recursive: true, force: true });
  });

  const read = readFileLimited;

  it('counts receipts per key config and per replica; with a policy, verifies every evidence file and statement', async () => {
    const r = await verifyReceiptDirectory(audit, { read, policy, simulatedRoots: [attester.rootPem] });
    expect(r.receipts).toBe(7);
    expect(r.policyChecked).toBe(true);
    const fleet = r.keyConfigs.find((k) => k.fleet);
    const solo = r.keyConfigs.find((k) => !k.fleet);
    expect(fleet?.receipts).toBe(5);
    expect(fleet?.replicas.map((x) => x.receipts).sort()).toEqual([2, 3]);
    const keys = servers.slice(0, 2).map((s) => Buffer.from(s.keys.current().replica?.receiptPublicKey ?? new Uint8Array()).toString('hex'));
    expect(fleet?.replicas.map((x) => x.receiptKey).sort()).toEqual([...keys].sort());
    expect(fleet?.replicas.every((x) => x.claims?.measurements['PCR0'] !== undefined)).toBe(true);
    expect(solo?.receipts).toBe(2);
    expect(solo?.replicas).toEqual([]);
    // Each replica's statement is kept once, and the receipts name it by its SHA-256.
    const files = await readdir(audit);
    expect(files.filter((f) => f.startsWith('statement-'))).toHaveLength(2);
    const fleetReceipts = await Promise.all(files.filter((f) => f.endsWith('.receipt.json')).map(async (f) => JSON.parse(await readFile(join(audit, f), 'utf8')) as { replica?: Record<string, string> }));
    expect(fleetReceipts.filter((j) => j.replica?.['statementSha256'] !== undefined)).toHaveLength(5);
    expect(fleetReceipts.every((j) => j.replica?.['statement'] === undefined)).toBe(true);
    // Without a policy: signatures and bindings only.
    expect((await verifyReceiptDirectory(audit, { read })).policyChecked).toBe(false);
  });

  it('a statement from a TEE the policy does not accept (other code) fails with POLICY_MISMATCH, naming the file', async () => {
    const copy = join(dir, 'intruder');
    await AuditDirectory.open(copy);
    const files = await readdir(audit);
    for (const f of files) await writeFile(join(copy, f), await readFile(join(audit, f)));
    const fleetServer = servers[0];
    const gen = fleetServer?.keys.current();
    if (gen?.replica === undefined) throw new Error('no fleet generation');
    // Find a receipt of the first replica and give it a statement attested by the intruder over the same replica key config.
    let target = '';
    for (const f of files.filter((x) => x.endsWith('.receipt.json'))) {
      const json: unknown = JSON.parse(await readFile(join(copy, f), 'utf8'));
      const named = detachedStatementOf(json);
      const rec = receiptFromJson(json, named === undefined ? undefined : await readFile(join(copy, `statement-${named}.cbor`)));
      if (rec.replica !== undefined && Buffer.from(rec.replica.receiptKey).equals(Buffer.from(gen.replica.receiptPublicKey))) {
        const statement = encodeEvidenceFile(await intruder.attest({ keyConfig: gen.replica.keyConfig, hpkePublicKey: gen.hpkePublicKey }));
        await writeFile(join(copy, f), JSON.stringify(receiptToJson({ ...rec, replica: { receiptKey: rec.replica.receiptKey, statement } })));
        target = f;
        break;
      }
    }
    expect(target).not.toBe('');
    // The binding and the signature still hold (same key): only the policy refuses it.
    await expect(verifyReceiptDirectory(copy, { read })).resolves.toMatchObject({ receipts: 7 });
    const err = await verifyReceiptDirectory(copy, { read, policy, simulatedRoots: [attester.rootPem] }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'POLICY_MISMATCH', message: expect.stringContaining(target) });
  });

  it('refuses: no receipts, a missing evidence file, a malformed receipt, more files than maxFiles', async () => {
    const empty = join(dir, 'empty');
    await AuditDirectory.open(empty);
    await expect(verifyReceiptDirectory(empty, { read })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    const files = await readdir(audit);
    const statementOf = async (f: string): Promise<string | undefined> =>
      (JSON.parse(await readFile(join(audit, f), 'utf8')) as { replica?: { statementSha256?: string } }).replica?.statementSha256;
    const receipts = files.filter((f) => f.endsWith('.receipt.json'));
    let fleetOne = '';
    for (const f of receipts) if ((await statementOf(f)) !== undefined) fleetOne = f;
    let soloOne = '';
    for (const f of receipts) if ((await statementOf(f)) === undefined) soloOne = f;
    const noEvidence = join(dir, 'no-evidence');
    await AuditDirectory.open(noEvidence);
    await writeFile(join(noEvidence, soloOne), await readFile(join(audit, soloOne)));
    await expect(verifyReceiptDirectory(noEvidence, { read })).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining('evidence-') });
    const lone = join(dir, 'lone');
    await AuditDirectory.open(lone);
    await writeFile(join(lone, fleetOne), await readFile(join(audit, fleetOne)));
    // No evidence file for its key config, then no statement file it names: NOT_FOUND naming each.
    const statement = await statementOf(fleetOne);
    await expect(verifyReceiptDirectory(lone, { read })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    for (const f of files.filter((x) => x.startsWith('evidence-'))) await writeFile(join(lone, f), await readFile(join(audit, f)));
    await expect(verifyReceiptDirectory(lone, { read })).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining(`statement-${statement ?? ''}.cbor`) });
    await writeFile(join(lone, `statement-${statement ?? ''}.cbor`), await readFile(join(audit, `statement-${statement ?? ''}.cbor`)));
    await expect(verifyReceiptDirectory(lone, { read })).resolves.toMatchObject({ receipts: 1 });
    await writeFile(join(lone, 'x.receipt.json'), '{"format":"cloister-receipt"');
    await expect(verifyReceiptDirectory(lone, { read })).rejects.toMatchObject({ code: 'MALFORMED', message: expect.stringContaining('x.receipt.json') });
    await expect(verifyReceiptDirectory(audit, { read, maxFiles: 6 })).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED', detail: { limit: 'maxFiles', value: 6 } });
  });
});
