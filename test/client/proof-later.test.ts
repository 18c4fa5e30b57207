/**
 * Later proofs (src/client/log-proofs.ts): a receipts-v2 record that came without its
 * inclusion proof is proved after the fact from the server's log endpoint
 * (`client.proofFor`, `cloister audit export --server`), and nothing the endpoint says is
 * believed unchecked: a forged head or a wrong path is RECEIPT_INVALID.
 */
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import { ReceiptLogClient, logBaseUrl } from '../../src/client/log-proofs.js';
import { run } from '../../src/cli/commands/audit.js';
import { decodeCbor, encodeCbor } from '../../src/core/cbor.js';
import { decodeKeyConfig } from '../../src/protocol/key-config.js';
import { decodeTreeHead } from '../../src/protocol/receipt-v2.js';
import type { TreeHead } from '../../src/protocol/receipt-v2.js';
import type { ReceiptV2Record } from '../../src/protocol/response.js';
import { buildAuditBundle, encodeAuditRecord } from '../../src/verifier/audit-bundle.js';
import { verifyAuditBundle } from '../../src/verifier/audit.js';
import { decodeEvidenceFile } from '../../src/verifier/evidence-file.js';
import { codeOfAsync } from '../helpers/errors.js';
import { startTestServer } from '../helpers/test-server.js';
import type { TestServer } from '../helpers/test-server.js';

describe('proofs fetched later', () => {
  let t: TestServer;
  let dir: string;
  beforeAll(async () => {
    // One periodic head an hour: which heads exist is up to the test.
    t = await startTestServer({ receiptLog: { treeHeadIntervalMs: 3_600_000 } });
    dir = await mkdtemp(join(tmpdir(), 'cloister-proof-later-'));
  });
  afterAll(async () => {
    await t.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('client.proofFor: NOT_FOUND until a head covers the leaf, then a verified proof that makes an audit bundle (ws and http URLs)', async () => {
    const records: ReceiptV2Record[] = [];
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots, receiptsV2: true, onReceiptV2: (r) => records.push(r) });
    try {
      for (let i = 0; i < 3; i++) await c.classify(`later ${i}`, { model: 'fake-cls' });
      expect(records.map((r) => r.proof)).toEqual([undefined, undefined, undefined]);
      const log = t.server.keys.current().receiptLog;
      const first = records[0] as ReceiptV2Record;
      const last = records[2] as ReceiptV2Record;
      // The first request of this log got the first periodic head (size first.index + 1); none covers the last yet.
      expect(decodeTreeHead(log.latest()?.head as Uint8Array).treeSize).toBe(first.index + 1);
      expect(await codeOfAsync(c.proofFor(last))).toBe('NOT_FOUND');
      const early = await c.proofFor(first);
      expect(decodeTreeHead(early.proof.treeHead.head).treeSize).toBe(first.index + 1);
      // The operator's publication (or the session's end) signs a head over every leaf.
      log.signHead();
      const proved = await Promise.all(records.map((r) => c.proofFor(r)));
      expect(proved.every((p) => decodeTreeHead(p.proof.treeHead.head).treeSize === last.index + 1)).toBe(true);
      const bundle = buildAuditBundle(c.evidenceFile(), proved.map((p) => ({ leaf: p.leaf, index: p.index, salt: p.salt, proof: p.proof, ...(p.session === undefined ? {} : { session: p.session }) })));
      const report = await verifyAuditBundle(bundle, { simulatedRoots: [t.attester.rootPem] });
      expect(report.receipts).toHaveLength(3);
      expect(report.heads.map((h) => h.treeSize)).toEqual([last.index + 1]);
    } finally {
      await c.close();
    }
    expect(logBaseUrl(t.wsUrl)).toBe(t.httpUrl.replace(/\/+$/, ''));
    expect(() => logBaseUrl('ws+unix:/tmp/x.sock')).toThrow(/http\(s\)/);
  });

  it('cloister audit export --server: proves records without proofs and fetches the consistency proofs between heads', async () => {
    const records: ReceiptV2Record[] = [];
    const proofs: ReceiptV2Record[] = [];
    const c = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots, receiptsV2: true, onReceiptV2: (r) => records.push(r) });
    const cp = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots, receiptsV2: true, receiptProofs: true, onReceiptV2: (r) => proofs.push(r) });
    try {
      await cp.classify('with proof', { model: 'fake-cls' });
      await c.classify('without 1', { model: 'fake-cls' });
      await c.classify('without 2', { model: 'fake-cls' });
      t.server.keys.current().receiptLog.signHead();
      await writeFile(join(dir, 'evidence.cbor'), c.evidenceFile());
    } finally {
      await c.close();
      await cp.close();
    }
    const paths: string[] = [];
    for (const [i, r] of [...proofs, ...records].entries()) {
      const p = join(dir, `r${i}.cbor`);
      await writeFile(p, encodeAuditRecord({ leaf: r.leaf, index: r.index, salt: r.salt, ...(r.proof === undefined ? {} : { proof: r.proof }) }));
      paths.push(p);
    }
    const recordArgs = paths.flatMap((p) => ['--record', p]);
    // Without --server the proofless records cannot be bundled.
    expect(await codeOfAsync(run(['export', '--evidence', join(dir, 'evidence.cbor'), ...recordArgs, '--out', join(dir, 'no.cbor')], { out: () => undefined, err: () => undefined }))).toBe('NOT_FOUND');
    const err: string[] = [];
    const out = join(dir, 'bundle.cbor');
    expect(await run(['export', '--evidence', join(dir, 'evidence.cbor'), ...recordArgs, '--server', t.httpUrl, '--out', out], { out: () => undefined, err: (s) => err.push(s) })).toBe(0);
    expect(err.join('\n')).toContain('2 inclusion proof(s), 1 consistency proof(s)');
    await writeFile(join(dir, 'root.pem'), t.attester.rootPem);
    const v: string[] = [];
    expect(await run(['verify', out, '--root', join(dir, 'root.pem')], { out: (s) => v.push(s), err: () => undefined })).toBe(0);
    expect(v.join('\n')).toContain('consistency     each tree head extends the previous one (1 proof(s))');
  });

  it('a log endpoint that lies: a forged head, a wrong path or a wrong consistency proof is RECEIPT_INVALID', async () => {
    const records: ReceiptV2Record[] = [];
    const c = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots, receiptsV2: true, onReceiptV2: (r) => records.push(r) });
    const keyConfig = decodeKeyConfig(decodeEvidenceFile(c.evidenceFile()).bundle.keyConfig);
    const honest = new ReceiptLogClient(t.httpUrl, keyConfig);
    let head1: TreeHead;
    try {
      await c.classify('x', { model: 'fake-cls' });
      t.server.keys.current().receiptLog.signHead();
      head1 = (await honest.head()).head;
      await c.classify('y', { model: 'fake-cls' });
      t.server.keys.current().receiptLog.signHead();
    } finally {
      await c.close();
    }
    const head2 = (await honest.head()).head;
    expect(head2.treeSize).toBe(head1.treeSize + 1);
    let mode: 'head' | 'path' = 'head';
    // A host between client and log: relays the real answers, changing one byte.
    const proxy: Server = createServer((req, res) => {
      void (async () => {
        const real = new Uint8Array(await (await fetch(`${t.httpUrl.replace(/\/+$/, '')}${req.url ?? '/'}`)).arrayBuffer());
        const m = decodeCbor(real) as Map<string, unknown>;
        if (mode === 'head' && m.get('t') === 'log-head') {
          const sth = Uint8Array.from(m.get('sth') as Uint8Array);
          sth[sth.byteLength - 1] = (sth[sth.byteLength - 1] as number) ^ 1;
          m.set('sth', sth);
        }
        if (mode === 'path' && m.get('t') !== 'log-head') {
          const path = (m.get('path') as Uint8Array[]).map((h) => Uint8Array.from(h));
          if (path[0] !== undefined) path[0][0] = (path[0][0] as number) ^ 1;
          m.set('path', path);
        }
        const body = encodeCbor(m as Map<string, never>);
        res.writeHead(200, { 'content-type': 'application/cbor', 'content-length': body.byteLength });
        res.end(body);
      })();
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    try {
      const log = new ReceiptLogClient(`http://127.0.0.1:${(proxy.address() as AddressInfo).port}`, keyConfig);
      const r = records[1] as ReceiptV2Record;
      expect((await honest.prove(r.leaf, r.index)).path.length).toBeGreaterThan(0);
      expect(await codeOfAsync(log.prove(r.leaf, r.index))).toBe('RECEIPT_INVALID');
      mode = 'path';
      expect(await codeOfAsync(log.prove(r.leaf, r.index))).toBe('RECEIPT_INVALID');
      expect((await honest.consistency(head1, head2)).length).toBeGreaterThan(0);
      expect(await codeOfAsync(log.consistency(head1, head2))).toBe('RECEIPT_INVALID');
    } finally {
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
    }
  });
});
