/**
 * Receipts v2 end to end: a client that asks for them (ConnectOptions.receiptsV2) gets an
 * `end2` receipt whose leaf it checks against the exchange it saw, with the inclusion proof
 * when it asks (receiptProofs; one tree-head signature verified per head); its records and
 * its evidence file make an audit bundle that verifies offline, for a classify request and a
 * streamed generation (aborted streams: test/protocol/receipt-v2.test.ts). A v1 client is unchanged.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import { buildAuditBundle } from '../../src/verifier/audit-bundle.js';
import type { AuditRecord } from '../../src/verifier/audit-bundle.js';
import { TreeHeadVerifier, decodeReceiptLeaf, decodeSignedTreeHead } from '../../src/protocol/receipt-v2.js';
import type { SignedTreeHead } from '../../src/protocol/receipt-v2.js';
import { decodeKeyConfig, keyConfigDigest } from '../../src/protocol/key-config.js';
import { decodeCbor } from '../../src/core/cbor.js';
import { merkleLeafHash, verifyConsistency, verifyInclusion } from '../../src/protocol/merkle.js';
import type { ReceiptV2Record } from '../../src/protocol/response.js';
import { verifyAuditBundle } from '../../src/verifier/audit.js';
import { fakeClassify } from '../helpers/engines.js';
import { startTestServer } from '../helpers/test-server.js';
import type { TestServer } from '../helpers/test-server.js';

describe('receipts v2 over the SDK', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(async () => {
    await t.close();
  });

  it('classify and a streamed generation: checked leaves with proofs, one audit bundle that verifies', async () => {
    const records: ReceiptV2Record[] = [];
    const v1: unknown[] = [];
    const c = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots, receiptsV2: true, receiptProofs: true, onReceiptV2: (r) => records.push(r), onReceipt: (r) => v1.push(r) });
    try {
      expect(await c.classify('chest pain', { model: 'fake-cls' })).toEqual(fakeClassify('chest pain'));
      const streamed: unknown[] = [];
      for await (const x of c.request({ op: 'generate', model: 'fake-gen', input: 'go', params: { n: 4, size: 3 }, stream: true })) streamed.push(x);
      expect(streamed).toHaveLength(4);
      expect(v1).toEqual([]);
      expect(records).toHaveLength(2);
      const leaves = records.map((r) => decodeReceiptLeaf(r.leaf));
      expect(leaves[0]?.model.name).toBe('fake-cls');
      expect(leaves[0]?.outcome).toEqual({ status: 'complete', chunks: 1 });
      expect(leaves[1]?.model.name).toBe('fake-gen');
      expect(leaves[1]?.outcome.status).toBe('complete');
      expect(leaves.every((l) => l.policy.retention === 'none' && l.policy.engine === 'fake')).toBe(true);
      expect(records.every((r) => r.proof !== undefined)).toBe(true);
      // One bundle for the session: each record's own head; the client proves consistency between them from the log.
      const auditRecords = records.map((r): AuditRecord => ({ leaf: r.leaf, index: r.index, salt: r.salt, proof: r.proof as NonNullable<ReceiptV2Record['proof']> }));
      const log = t.server.keys.current().receiptLog;
      const sizes = auditRecords.map((r) => r.index + 1);
      const consistency = sizes.slice(1).map((second, i) => ({ first: sizes[i] as number, second, path: log.consistencyProof(sizes[i] as number, second) }));
      const bundle = buildAuditBundle(c.evidenceFile(), auditRecords, consistency);
      const report = await verifyAuditBundle(bundle, { simulatedRoots: [t.attester.rootPem] });
      expect(report.receipts.map((r) => r.leaf.model.name)).toEqual(leaves.map((l) => l.model.name));
      expect(report.platform).toBe('simulated');
    } finally {
      await c.close();
    }
  });

  it('without receiptProofs the leaf comes alone; the server signs heads only periodically', async () => {
    const records: ReceiptV2Record[] = [];
    const c = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots, receiptsV2: true, onReceiptV2: (r) => records.push(r) });
    const log = t.server.keys.current().receiptLog;
    const before = log.signatures;
    try {
      for (let i = 0; i < 5; i++) await c.classify(`note ${i}`, { model: 'fake-cls' });
    } finally {
      await c.close();
    }
    expect(records).toHaveLength(5);
    expect(records.every((r) => r.proof === undefined)).toBe(true);
    // At most one periodic head within the default 1 s interval for five requests (not one per request).
    expect(log.signatures - before).toBeLessThanOrEqual(2);
  });

  it('heads and proofs are published at /v1/log/*: a later proof, a published head, consistency with the client\'s own head', async () => {
    const records: ReceiptV2Record[] = [];
    const c = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots, receiptsV2: true, receiptProofs: true, onReceiptV2: (r) => records.push(r) });
    try {
      await c.classify('first', { model: 'fake-cls' });
    } finally {
      await c.close();
    }
    const mine = records[0] as ReceiptV2Record;
    const kc = decodeKeyConfig(t.server.keys.current().keyConfig);
    const kcDigest = keyConfigDigest(t.server.keys.current().keyConfig);
    const verifier = new TreeHeadVerifier(kc.receiptPublicKey, kcDigest);
    const myHead = verifier.verify(mine.proof?.treeHead as SignedTreeHead);
    // More traffic, then the operator's periodic publication (signed at most once per interval).
    const c2 = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots, receiptsV2: true });
    try {
      await c2.classify('second', { model: 'fake-cls' });
    } finally {
      await c2.close();
    }
    t.server.keys.current().receiptLog.signHead();
    const get = async (path: string): Promise<Map<string, unknown>> => {
      const res = await fetch(`${t.httpUrl}${path}`);
      expect(res.status).toBe(200);
      return decodeCbor(new Uint8Array(await res.arrayBuffer())) as Map<string, unknown>;
    };
    const published = verifier.verify(decodeSignedTreeHead((await get('/v1/log/head')).get('sth') as Uint8Array));
    expect(published.treeSize).toBeGreaterThan(myHead.treeSize);
    const cons = (await get(`/v1/log/consistency?first=${myHead.treeSize}&second=${published.treeSize}`)).get('path') as Uint8Array[];
    expect(verifyConsistency(myHead.treeSize, published.treeSize, myHead.rootHash, published.rootHash, cons)).toBe(true);
    const path = (await get(`/v1/log/proof?index=${mine.index}&size=${published.treeSize}`)).get('path') as Uint8Array[];
    expect(verifyInclusion(mine.index, published.treeSize, merkleLeafHash(mine.leaf), path, published.rootHash)).toBe(true);
    // Bad queries are coded errors.
    expect((await fetch(`${t.httpUrl}/v1/log/proof?index=x&size=1`)).status).toBe(400);
    expect((await fetch(`${t.httpUrl}/v1/log/proof?index=9999&size=1`)).status).toBe(400);
    expect((await fetch(`${t.httpUrl}/v1/log/head?key=${(kc.keyId + 1) % 256}`)).status).toBe(400);
    expect((await fetch(`${t.httpUrl}/v1/log/head`, { method: 'POST' })).status).toBe(405);
  });

  it('a full log (receiptLog.maxLeaves) falls back to a version-1 receipt, never a lost answer', async () => {
    const small = await startTestServer({ receiptLog: { maxLeaves: 1 } });
    const v1: unknown[] = [];
    const v2: unknown[] = [];
    const c = await connect(small.httpUrl, { policy: small.policy, trustedRoots: small.trustedRoots, receiptsV2: true, onReceiptV2: (r) => v2.push(r), onReceipt: (r) => v1.push(r) });
    try {
      expect(await c.classify('a', { model: 'fake-cls' })).toEqual(fakeClassify('a'));
      expect(await c.classify('b', { model: 'fake-cls' })).toEqual(fakeClassify('b'));
    } finally {
      await c.close();
      await small.close();
    }
    expect([v2.length, v1.length]).toEqual([1, 1]);
  });

  it('receipts v2 are the default when the key config offers protocol 2; receiptsV2: false keeps signature receipts', async () => {
    for (const url of [t.httpUrl, t.wsUrl]) {
      const v1: unknown[] = [];
      const v2: ReceiptV2Record[] = [];
      const c = await connect(url, { policy: t.policy, trustedRoots: t.trustedRoots, onReceipt: (r) => v1.push(r), onReceiptV2: (r) => v2.push(r) });
      try {
        await c.classify('x', { model: 'fake-cls' });
        await c.classify('y', { model: 'fake-cls' });
      } finally {
        await c.close();
      }
      expect([v1.length, v2.length]).toEqual([0, 2]);
      const old: unknown[] = [];
      const none: ReceiptV2Record[] = [];
      const c1 = await connect(url, { policy: t.policy, trustedRoots: t.trustedRoots, receiptsV2: false, onReceipt: (r) => old.push(r), onReceiptV2: (r) => none.push(r) });
      try {
        await c1.classify('x', { model: 'fake-cls' });
      } finally {
        await c1.close();
      }
      expect([old.length, none.length]).toEqual([1, 0]);
    }
  });
});
