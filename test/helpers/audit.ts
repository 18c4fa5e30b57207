/**
 * Test-only: a real audit bundle on the simulated platform - a key config with a fresh
 * receipt key, simulated evidence binding it (an evidence file), a receipt log with signed
 * tree heads, and the client's audit records. Not a test file itself.
 */
import { createHash } from 'node:crypto';
import { createSimulatedAttester } from '../../src/attester/simulated/attester.js';
import type { SimulatedAttester } from '../../src/attester/simulated/attester.js';
import { encodeEvidenceFile } from '../../src/verifier/evidence-file.js';
import { encodeKeyConfig, keyConfigDigest } from '../../src/protocol/key-config.js';
import { generateReceiptKeyPair, signReceipt } from '../../src/protocol/messages.js';
import {
  RECEIPT_SALT_LENGTH,
  ReceiptLog,
  encodeReceiptLeaf,
  saltCommitment,
  saltedRequestHash,
  saltedResponseHash,
} from '../../src/protocol/receipt-v2.js';
import type { AuditRecord } from '../../src/verifier/audit-bundle.js';

export const AUDIT_T0 = Date.UTC(2026, 0, 15, 12, 0, 0);
export const AUDIT_MODEL = { name: 'classifier', digest: new Uint8Array(createHash('sha256').update('audit model').digest()) };

export interface AuditFixture {
  readonly sim: SimulatedAttester;
  readonly evidenceFile: Uint8Array;
  readonly keyConfig: Uint8Array;
  readonly log: ReceiptLog;
  readonly keyConfigDigest: Uint8Array;
  /** Signs with the key config's receipt key (to build forks and forgeries a real key signs). */
  sign(message: Uint8Array): Uint8Array;
  /** Request i's leaf. */
  leaf(i: number): Uint8Array;
  /** records[i]: request i, its salt, request plaintext and response chunks. */
  readonly requests: { readonly salt: Uint8Array; readonly request: Uint8Array; readonly response: Uint8Array[]; readonly index: number }[];
  /** Appends request i's leaf (completed at AUDIT_T0 + 10 * i + 5). */
  add(i: number, options?: { readonly aborted?: boolean }): void;
  /** The record of request i with a proof to the newest head (signed now if needed). */
  record(i: number): AuditRecord;
  setNow(ms: number): void;
}

export async function auditFixture(): Promise<AuditFixture> {
  let now = AUDIT_T0 + 1000;
  const sim = await createSimulatedAttester({ clock: () => AUDIT_T0 - 1000 });
  const receipt = generateReceiptKeyPair();
  const hpkePublicKey = new Uint8Array(32).fill(0x11);
  const keyConfig = encodeKeyConfig({
    version: 1,
    keyId: 7,
    kemId: 0x20,
    kdfId: 1,
    aeadIds: [1, 3],
    hpkePublicKey,
    receiptPublicKey: receipt.publicKey,
    models: [{ name: AUDIT_MODEL.name, task: 'text-classification', digest: AUDIT_MODEL.digest }],
    configDigest: new Uint8Array(32).fill(0x33),
    platform: 'simulated',
    notBefore: Math.floor(AUDIT_T0 / 1000) - 60,
    expiresAt: Math.floor(AUDIT_T0 / 1000) + 3600,
  });
  const evidence = await sim.attest({ keyConfig, hpkePublicKey });
  const evidenceFile = encodeEvidenceFile(evidence);
  const kcDigest = keyConfigDigest(keyConfig);
  const log = new ReceiptLog(kcDigest, (m) => signReceipt(receipt.privateKey, m), { now: () => now });
  const requests: AuditFixture['requests'] = [];
  const leaves: Uint8Array[] = [];
  return {
    sim,
    evidenceFile,
    keyConfig,
    log,
    keyConfigDigest: kcDigest,
    sign: (m) => signReceipt(receipt.privateKey, m),
    leaf: (i) => {
      const l = leaves[i];
      if (l === undefined) throw new Error(`request ${i} was not added`);
      return l;
    },
    requests,
    add(i, options = {}) {
      const salt = new Uint8Array(RECEIPT_SALT_LENGTH).fill(i + 1);
      const request = new TextEncoder().encode(`request ${i}`);
      const response = [new TextEncoder().encode(`chunk ${i}a`), new TextEncoder().encode(`chunk ${i}b`)];
      const leaf = encodeReceiptLeaf({
        version: 2,
        keyConfigDigest: kcDigest,
        model: AUDIT_MODEL,
        requestHash: saltedRequestHash(salt, request),
        responseHash: saltedResponseHash(salt, response),
        saltCommitment: saltCommitment(salt),
        policy: { retention: 'none', engine: 'onnx', route: 'local' },
        receivedAt: AUDIT_T0 + 10 * i,
        completedAt: AUDIT_T0 + 10 * i + 5,
        outcome: options.aborted === true ? { status: 'aborted', chunks: 2, code: 'TIMEOUT' } : { status: 'complete', chunks: 2 },
      });
      const index = log.append(leaf);
      requests[i] = { salt, request, response, index };
      leaves[i] = leaf;
    },
    record(i) {
      const r = requests[i];
      const leaf = leaves[i];
      if (r === undefined || leaf === undefined) throw new Error(`request ${i} was not added`);
      return { leaf, index: r.index, salt: r.salt, proof: log.proofFor(r.index) };
    },
    setNow(ms) {
      now = ms;
    },
  };
}
