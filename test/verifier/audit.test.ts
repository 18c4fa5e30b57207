/**
 * Audit bundles (src/verifier/audit-bundle.ts, src/verifier/audit.ts): built from a client's
 * records over simulated evidence, verified offline with only the bundle and the (simulated)
 * root; every flipped byte of a bundle fails; a forged head, an inconsistent log, a receipt of
 * another key config, a wrong salt or content fail with RECEIPT_INVALID at the named step.
 */
import { describe, expect, it } from 'vitest';
import { CloisterError } from '../../src/errors.js';
import { policyFromJson } from '../../src/verifier/policy.js';
import {
  buildAuditBundle,
  decodeAuditBundle,
  decodeAuditRecord,
  encodeAuditBundle,
  encodeAuditRecord,
} from '../../src/verifier/audit-bundle.js';
import { ReceiptLog, decodeReceiptLeaf, encodeReceiptLeaf, encodeSignedTreeHead, signTreeHead } from '../../src/protocol/receipt-v2.js';
import { MerkleLog } from '../../src/protocol/merkle.js';
import { generateReceiptKeyPair, signReceipt } from '../../src/protocol/messages.js';
import { AuditVerificationError, verifyAuditBundle } from '../../src/verifier/audit.js';
import { AUDIT_T0, auditFixture } from '../helpers/audit.js';
import { codeOfAsync } from '../helpers/errors.js';

async function failure(p: Promise<unknown>): Promise<AuditVerificationError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(AuditVerificationError);
  return err as AuditVerificationError;
}

describe('audit bundles', () => {
  it('a session of three requests over two tree heads verifies offline and says what it proves', async () => {
    const f = await auditFixture();
    f.add(0);
    f.add(1);
    const r1 = f.record(1); // head of size 2
    f.setNow(AUDIT_T0 + 2000);
    f.add(2, { aborted: true });
    const r2 = { ...f.record(2), consistency: [{ first: 2, second: 3, path: f.log.consistencyProof(2, 3) }] };
    const records = [f.record(0), r1, r2].map((r) => decodeAuditRecord(encodeAuditRecord(r)));
    // record(0) now proves to the newest head (size 3), r1 to size 2.
    const bundle = buildAuditBundle(f.evidenceFile, records);
    const report = await verifyAuditBundle(bundle, {
      simulatedRoots: [f.sim.rootPem],
      content: [{ index: 1, request: f.requests[1]?.request as Uint8Array, response: f.requests[1]?.response as Uint8Array[] }],
    });
    expect(report.platform).toBe('simulated');
    expect(report.simulated).toBe(true);
    expect(report.policyChecked).toBe(false);
    expect(report.claims.measurements).toHaveProperty('PCR0');
    expect(report.heads.map((h) => h.treeSize)).toEqual([2, 3]);
    expect(report.receipts.map((r) => [r.index, r.leaf.model.name, r.leaf.outcome.status, r.head.treeSize])).toEqual([
      [0, 'classifier', 'complete', 3],
      [1, 'classifier', 'complete', 2],
      [2, 'classifier', 'aborted', 3],
    ]);
    expect(report.receipts[1]?.responseChecked).toBe(true);
    expect(report.receipts[0]?.responseChecked).toBe(false);
    // With the client's policy, the measurements are compared too.
    const policy = policyFromJson({ version: 1, platforms: { simulated: f.sim.policySection() } });
    expect((await verifyAuditBundle(bundle, { policy, simulatedRoots: [f.sim.rootPem] })).policyChecked).toBe(true);
    const wrong = policyFromJson({ version: 1, platforms: { simulated: { ...f.sim.policySection(), pcrs: { ...f.sim.policySection().pcrs, 0: 'ab'.repeat(48) } } } });
    expect((await failure(verifyAuditBundle(bundle, { policy: wrong, simulatedRoots: [f.sim.rootPem] }))).code).toBe('POLICY_MISMATCH');
  });

  it('every flipped byte of a bundle fails verification', async () => {
    const f = await auditFixture();
    f.add(0);
    f.add(1);
    const bundle = buildAuditBundle(f.evidenceFile, [f.record(0), f.record(1)]);
    await verifyAuditBundle(bundle, { simulatedRoots: [f.sim.rootPem] });
    const passed: number[] = [];
    for (let i = 0; i < bundle.byteLength; i++) {
      const b = bundle.slice();
      b[i] = (b[i] as number) ^ 0x01;
      const ok = await verifyAuditBundle(b, { simulatedRoots: [f.sim.rootPem] }).then(() => true, (e: unknown) => {
        if (!(e instanceof CloisterError)) throw e;
        return false;
      });
      if (ok) passed.push(i);
    }
    expect(passed).toEqual([]);
    expect(bundle.byteLength).toBeGreaterThan(1000);
  }, 300_000);

  it('without the simulated root, simulated evidence is not trusted', async () => {
    const f = await auditFixture();
    f.add(0);
    const err = await failure(verifyAuditBundle(buildAuditBundle(f.evidenceFile, [f.record(0)])));
    expect([err.code, err.step]).toEqual(['ROOT_UNTRUSTED', 'evidence']);
  });

  it('a forged tree head, a forked log, a leaf of another key config, a wrong salt or content: RECEIPT_INVALID', async () => {
    const f = await auditFixture();
    f.add(0);
    f.add(1);
    const roots = { simulatedRoots: [f.sim.rootPem] };
    const good = decodeAuditBundle(buildAuditBundle(f.evidenceFile, [f.record(0), f.record(1)]));
    const expectFailure = async (bundle: Uint8Array, step: string, code = 'RECEIPT_INVALID', options = {}): Promise<AuditVerificationError> => {
      const err = await failure(verifyAuditBundle(bundle, { ...roots, ...options }));
      expect([err.code, err.step]).toEqual([code, step]);
      return err;
    };

    // Forged: the same leaves, the head signed by another key.
    const other = generateReceiptKeyPair();
    const forgedLog = new ReceiptLog(f.keyConfigDigest, (m) => signReceipt(other.privateKey, m), { now: () => AUDIT_T0 + 1000 });
    for (const e of good.entries) forgedLog.append(e.leaf);
    await expectFailure(encodeAuditBundle({ ...good, heads: [encodeSignedTreeHead(forgedLog.signHead())] }), 'tree-heads');

    // A fork: the server signs (with the right key) a log of size 2 for one client and a log
    // of size 3 whose first leaf differs for another; bundled together, no proof links them.
    const headA = f.log.signHead();
    const forkLog = new ReceiptLog(f.keyConfigDigest, (m) => f.sign(m), { now: () => AUDIT_T0 + 1000 });
    f.add(2);
    forkLog.append(encodeReceiptLeaf({ ...decodeReceiptLeaf(f.leaf(0)), completedAt: AUDIT_T0 + 6 }));
    forkLog.append(f.leaf(1));
    forkLog.append(f.leaf(2));
    const forked = encodeAuditBundle({
      evidence: f.evidenceFile,
      heads: [encodeSignedTreeHead(headA), encodeSignedTreeHead(forkLog.signHead())],
      entries: [
        { leaf: f.leaf(1), index: 1, salt: f.requests[1]?.salt as Uint8Array, head: 0, path: f.log.inclusionProof(1, 2) },
        { leaf: f.leaf(2), index: 2, salt: f.requests[2]?.salt as Uint8Array, head: 1, path: forkLog.consistencyProof(0, 0).concat(forkLogPath(forkLog, 2)) },
      ],
      consistency: [forkLog.consistencyProof(2, 3)],
    });
    const fork = await expectFailure(forked, 'consistency');
    expect(fork.message).toContain('not a prefix');
    // The honest pair of heads verifies.
    const honest = buildAuditBundle(f.evidenceFile, [
      { leaf: f.leaf(1), index: 1, salt: f.requests[1]?.salt as Uint8Array, proof: { treeHead: headA, path: f.log.inclusionProof(1, 2) } },
      { ...f.record(2), consistency: [{ first: 2, second: 3, path: f.log.consistencyProof(2, 3) }] },
    ]);
    expect((await verifyAuditBundle(honest, roots)).heads).toHaveLength(2);
    // A tampered consistency proof.
    const h = decodeAuditBundle(honest);
    await expectFailure(encodeAuditBundle({ ...h, consistency: [[new Uint8Array(32).fill(1), ...(h.consistency[0] ?? []).slice(1)]] }), 'consistency');

    // A leaf of another key config in a head signed by the right key.
    const alien = encodeReceiptLeaf({ ...decodeReceiptLeaf(f.leaf(0)), keyConfigDigest: new Uint8Array(32).fill(9) });
    const merkle = new MerkleLog();
    merkle.append(alien);
    const alienHead = signTreeHead((m) => f.sign(m), { version: 2, keyConfigDigest: f.keyConfigDigest, treeSize: 1, rootHash: merkle.root(), timestamp: AUDIT_T0 + 1000 });
    await expectFailure(
      encodeAuditBundle({ evidence: f.evidenceFile, heads: [encodeSignedTreeHead(alienHead)], entries: [{ leaf: alien, index: 0, salt: f.requests[0]?.salt as Uint8Array, head: 0, path: [] }], consistency: [] }),
      'receipt 0',
    );

    // Another salt; content that is not the request's; content for no receipt.
    await expectFailure(encodeAuditBundle({ ...good, entries: good.entries.map((e, i) => (i === 0 ? { ...e, salt: new Uint8Array(32).fill(0xee) } : e)) }), 'receipt 0');
    const w = await expectFailure(encodeAuditBundle(good), 'receipt 0', 'RECEIPT_INVALID', { content: [{ index: 0, request: new TextEncoder().encode('request 1') }] });
    expect(w.message).toContain('request given is not the one');
    await expectFailure(encodeAuditBundle(good), 'receipt 1', 'RECEIPT_INVALID', { content: [{ index: 1, response: f.requests[0]?.response }] });
    expect(await codeOfAsync(verifyAuditBundle(encodeAuditBundle(good), { ...roots, content: [{ index: 9, request: new Uint8Array(1) }] }))).toBe('INVALID_ARGUMENT');
  });

  it('builder and decoder refuse what a verifier could not check', async () => {
    const f = await auditFixture();
    f.add(0);
    f.add(1);
    const r0 = f.record(0);
    f.add(2);
    // Two heads, no consistency proof between them.
    expect(() => buildAuditBundle(f.evidenceFile, [r0, f.record(2)])).toThrow(/no consistency proof from tree size 2 to 3/);
    expect(() => buildAuditBundle(f.evidenceFile, [])).toThrow(CloisterError);
    const good = decodeAuditBundle(buildAuditBundle(f.evidenceFile, [f.record(0)]));
    expect(() => encodeAuditBundle({ ...good, consistency: [[]] })).toThrow(/consistency/);
    expect(() => encodeAuditBundle({ ...good, entries: [...good.entries, ...good.entries] })).toThrow(/ascending/);
    expect(() => encodeAuditBundle({ ...good, entries: good.entries.map((e) => ({ ...e, head: 1 })) })).toThrow(/names head 1/);
  });
});

function forkLogPath(log: ReceiptLog, index: number): Uint8Array[] {
  return [...log.proofFor(index).path];
}
