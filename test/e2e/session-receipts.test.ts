/**
 * Receipts v2 tied to protocol v2 sessions (docs/PROTOCOL.md sections 11 and 12): a session
 * request's leaf holds a salted session commitment (the salt derived from the session secret,
 * known to the client, never on the wire), so an auditor given the salt sees which receipts
 * came from one session while the published leaves link to nothing; and a session that ends
 * gets its tree head signed at once.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import { buildAuditBundle, decodeAuditRecord, encodeAuditRecord } from '../../src/verifier/audit-bundle.js';
import type { AuditRecord } from '../../src/verifier/audit-bundle.js';
import { decodeReceiptLeaf, decodeTreeHead, sessionCommitment } from '../../src/protocol/receipt-v2.js';
import type { ReceiptV2Record } from '../../src/protocol/response.js';
import type { InclusionProof } from '../../src/protocol/receipt-v2.js';
import { verifyAuditBundle } from '../../src/verifier/audit.js';
import type { ServerLimits } from '../../src/server/options.js';
import { codeOfAsync } from '../helpers/errors.js';
import { startTestServer } from '../helpers/test-server.js';
import { until } from '../helpers/until.js';
import type { TestServer } from '../helpers/test-server.js';

let servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers) await s.close();
  servers = [];
});

async function server(limits: Partial<ServerLimits> = {}, now?: () => number): Promise<TestServer> {
  // One periodic head an hour: every other head in these tests is a session-end head.
  const t = await startTestServer({ limits, receiptLog: { treeHeadIntervalMs: 3_600_000 }, ...(now === undefined ? {} : { now }) });
  servers.push(t);
  return t;
}

function asAuditRecord(r: ReceiptV2Record): AuditRecord {
  if (r.proof === undefined) throw new Error('record without proof');
  return { leaf: r.leaf, index: r.index, salt: r.salt, proof: r.proof, ...(r.session === undefined ? {} : { session: r.session }) };
}

describe('receipts v2 in sessions', () => {
  it('each leaf of a session holds a distinct commitment; the session salt groups them for an auditor; a one-shot leaf names no session', async () => {
    const t = await server();
    const records: ReceiptV2Record[] = [];
    const c = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots, receiptsV2: true, receiptProofs: true, onReceiptV2: (r) => records.push(r) });
    try {
      for (let i = 0; i < 3; i++) await c.classify(`note ${i}`, { model: 'fake-cls' });
    } finally {
      await c.close();
    }
    expect(records).toHaveLength(3);
    const links = records.map((r) => r.session);
    expect(links.map((l) => l?.seq)).toEqual([1, 2, 3]);
    const salt = links[0]?.salt as Uint8Array;
    expect(salt.byteLength).toBe(32);
    expect(links.every((l) => l !== undefined && Buffer.from(l.salt).equals(Buffer.from(salt)))).toBe(true);
    const leaves = records.map((r) => decodeReceiptLeaf(r.leaf));
    for (const [i, l] of leaves.entries()) expect(Buffer.from(l.session as Uint8Array).equals(Buffer.from(sessionCommitment(salt, i + 1)))).toBe(true);
    // Published leaves do not link: three different values, none of them the salt.
    expect(new Set(leaves.map((l) => Buffer.from(l.session as Uint8Array).toString('hex'))).size).toBe(3);

    // The link survives the audit record, and the bundle groups the receipts by session.
    const auditRecords = records.map((r) => decodeAuditRecord(encodeAuditRecord(asAuditRecord(r))));
    expect(auditRecords[2]?.session?.seq).toBe(3);
    const log = t.server.keys.current().receiptLog;
    const sizes = [...new Set(auditRecords.map((r) => decodeTreeHead((r.proof as InclusionProof).treeHead.head).treeSize))].sort((a, b) => a - b);
    const consistency = sizes.slice(1).map((second, i) => ({ first: sizes[i] as number, second, path: log.consistencyProof(sizes[i] as number, second) }));
    const report = await verifyAuditBundle(buildAuditBundle(c.evidenceFile(), auditRecords, consistency), { simulatedRoots: [t.attester.rootPem] });
    expect(report.receipts.map((r) => r.session)).toEqual([{ group: 1, seq: 1 }, { group: 1, seq: 2 }, { group: 1, seq: 3 }]);

    // A wrong sequence number, or another session's salt, fails verification.
    const wrongSeq = auditRecords.map((r, i) => (i === 1 ? { ...r, session: { salt, seq: 7 } } : r));
    expect(await codeOfAsync(verifyAuditBundle(buildAuditBundle(c.evidenceFile(), wrongSeq, consistency), { simulatedRoots: [t.attester.rootPem] }))).toBe('RECEIPT_INVALID');
    const otherSalt = auditRecords.map((r, i) => (i === 0 ? { ...r, session: { salt: new Uint8Array(32).fill(1), seq: 1 } } : r));
    expect(await codeOfAsync(verifyAuditBundle(buildAuditBundle(c.evidenceFile(), otherSalt, consistency), { simulatedRoots: [t.attester.rootPem] }))).toBe('RECEIPT_INVALID');
    // Without the link the receipt still verifies; the report says a session is not disclosed.
    const undisclosed = auditRecords.map((r) => ({ leaf: r.leaf, index: r.index, salt: r.salt, proof: r.proof as InclusionProof }));
    const r2 = await verifyAuditBundle(buildAuditBundle(c.evidenceFile(), undisclosed, consistency), { simulatedRoots: [t.attester.rootPem] });
    expect(r2.receipts.every((r) => r.session === 'undisclosed')).toBe(true);

    // A one-shot (v1 exchange) request: no session in the leaf, none in the record.
    const oneShot: ReceiptV2Record[] = [];
    const c1 = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots, sessions: false, receiptsV2: true, onReceiptV2: (r) => oneShot.push(r) });
    try {
      await c1.classify('alone', { model: 'fake-cls' });
    } finally {
      await c1.close();
    }
    expect(oneShot[0]?.session).toBeUndefined();
    expect(decodeReceiptLeaf(oneShot[0]?.leaf as Uint8Array).session).toBeUndefined();
  });

  it('two sessions: the auditor sees two groups', async () => {
    const t = await server();
    const records: ReceiptV2Record[] = [];
    for (let s = 0; s < 2; s++) {
      const c = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots, receiptsV2: true, receiptProofs: true, onReceiptV2: (r) => records.push(r) });
      try {
        await c.classify(`a${s}`, { model: 'fake-cls' });
        await c.classify(`b${s}`, { model: 'fake-cls' });
      } finally {
        await c.close();
      }
    }
    const log = t.server.keys.current().receiptLog;
    const auditRecords = records.map(asAuditRecord);
    const sizes = [...new Set(auditRecords.map((r) => decodeTreeHead((r.proof as InclusionProof).treeHead.head).treeSize))].sort((a, b) => a - b);
    const consistency = sizes.slice(1).map((second, i) => ({ first: sizes[i] as number, second, path: log.consistencyProof(sizes[i] as number, second) }));
    const report = await verifyAuditBundle(buildAuditBundle(await evidenceOf(t), auditRecords, consistency), { simulatedRoots: [t.attester.rootPem] });
    expect(report.receipts.map((r) => r.session)).toEqual([{ group: 1, seq: 1 }, { group: 1, seq: 2 }, { group: 2, seq: 1 }, { group: 2, seq: 2 }]);
  });

  it('a session that ends (sessionMaxAgeMs) gets its tree head signed at its end, covering its leaves', async () => {
    let offset = 0;
    const t = await server({ sessionMaxAgeMs: 60_000, sessionIdleTimeoutMs: 600_000 }, () => Date.now() + offset);
    const log = t.server.keys.current().receiptLog;
    const c = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots, receiptsV2: true, now: () => Date.now() + offset });
    try {
      await c.classify('one', { model: 'fake-cls' });
      await c.classify('two', { model: 'fake-cls' });
    } finally {
      await c.close();
    }
    // The first leaf got the first periodic head; the second waits for the next period.
    expect(log.size).toBe(2);
    expect(decodeTreeHead(log.latest()?.head as Uint8Array).treeSize).toBe(1);
    const signatures = log.signatures;
    // The session passes its age; another client's session open notices, and the ended
    // session's head is signed before anything else is appended.
    offset = 61_000;
    const c2 = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots, receiptsV2: false, now: () => Date.now() + offset });
    try {
      await c2.classify('v1 receipt, no leaf', { model: 'fake-cls' });
    } finally {
      await c2.close();
    }
    expect(log.size).toBe(2);
    expect(log.signatures).toBe(signatures + 1);
    expect(decodeTreeHead(log.latest()?.head as Uint8Array).treeSize).toBe(2);
  });

  it('a session found ended at its next request, and one ended by shutdown, sign their heads; a session without leaves costs no signature', async () => {
    let offset = 0;
    const t = await server({ sessionMaxAgeMs: 60_000, sessionIdleTimeoutMs: 600_000 }, () => Date.now() + offset);
    const log = t.server.keys.current().receiptLog;
    const c = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots, receiptsV2: true, now: () => Date.now() + offset });
    const v1 = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots, receiptsV2: false, now: () => Date.now() + offset });
    try {
      await c.classify('one', { model: 'fake-cls' });
      await c.classify('two', { model: 'fake-cls' });
      await v1.classify('no leaf', { model: 'fake-cls' });
      expect(decodeTreeHead(log.latest()?.head as Uint8Array).treeSize).toBe(1);
      offset = 61_000;
      // The request is answered SESSION_EXPIRED (the SDK resends it in a new session); the
      // old session's head (size 2) is signed before the resent request's leaf is appended.
      const before = log.signatures;
      await c.classify('three', { model: 'fake-cls' });
      expect(log.size).toBe(3);
      expect(log.signatures - before).toBe(1);
      expect(decodeTreeHead(log.latest()?.head as Uint8Array).treeSize).toBe(2);
      // Shutdown ends the new session (one leaf): one more head, of size 3. The v1 client's
      // session (no leaves) adds no signature.
      servers = servers.filter((x) => x !== t);
      await t.server.shutdown(1_000);
      expect(log.signatures - before).toBe(2);
      expect(decodeTreeHead(log.latest()?.head as Uint8Array).treeSize).toBe(3);
    } finally {
      await c.close();
      await v1.close();
    }
  });

  it('a session left idle is swept by the timer: its head is signed with no other traffic', async () => {
    let offset = 0;
    const t = await server({ sessionMaxAgeMs: 600_000, sessionIdleTimeoutMs: 60_000 }, () => Date.now() + offset);
    const log = t.server.keys.current().receiptLog;
    const c = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots, receiptsV2: true, now: () => Date.now() + offset });
    try {
      await c.classify('one', { model: 'fake-cls' });
      await c.classify('two', { model: 'fake-cls' });
      expect(decodeTreeHead(log.latest()?.head as Uint8Array).treeSize).toBe(1);
      const before = log.signatures;
      // Past the idle bound, and nothing else happens: the server's own sweep (about once a
      // second) ends the session and signs the head over both leaves.
      offset = 61_000;
      await until(() => log.signatures > before, 400, 10, 'the idle session swept');
      expect(decodeTreeHead(log.latest()?.head as Uint8Array).treeSize).toBe(2);
    } finally {
      await c.close();
    }
  });
});

async function evidenceOf(t: TestServer): Promise<Uint8Array> {
  const c = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
  try {
    return c.evidenceFile();
  } finally {
    await c.close();
  }
}
