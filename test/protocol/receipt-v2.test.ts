/**
 * Receipts v2 (src/protocol/receipt-v2.ts): the leaf and its strict decoder, signed tree heads
 * verified once per head, inclusion proofs from the server's per-generation log, and the
 * client's check that a leaf describes the exchange it saw. Forged heads, heads and leaves of
 * another key config, proofs that do not verify and every changed byte fail.
 */
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { generateReceiptKeyPair, signReceipt } from '../../src/protocol/messages.js';
import {
  DEFAULT_TREE_HEAD_INTERVAL_MS,
  RECEIPT_SALT_LENGTH,
  ReceiptLog,
  SaltedResponseHasher,
  TreeHeadVerifier,
  checkInclusion,
  checkLeaf,
  decodeEndReceipt,
  decodeReceiptLeaf,
  decodeSignedTreeHead,
  decodeTreeHead,
  encodeEndReceipt,
  encodeReceiptLeaf,
  encodeSignedTreeHead,
  saltCommitment,
  saltedRequestHash,
  saltedResponseHash,
} from '../../src/protocol/receipt-v2.js';
import type { LeafExpectation, ReceiptLeaf } from '../../src/protocol/receipt-v2.js';
import { codeOf } from '../helpers/errors.js';
import { KeyManager } from '../../src/server/keys.js';
import { openRequest, sealRequest } from '../../src/protocol/request.js';
import { decodeKeyConfig, keyConfigDigest, sealTargetFromKeyConfig } from '../../src/protocol/key-config.js';

const sha = (s: string): Uint8Array => new Uint8Array(createHash('sha256').update(s).digest());
const KC = sha('key config');
const MODEL = { name: 'classifier', digest: sha('model') };
const salt = new Uint8Array(RECEIPT_SALT_LENGTH).fill(7);
const request = new TextEncoder().encode('request plaintext');
const chunks = [Uint8Array.of(0xa1, 0x61, 0x74, 0x61, 0x78), Uint8Array.of(0xa0)];

function leafFor(over: Partial<ReceiptLeaf> = {}): ReceiptLeaf {
  return {
    version: 2,
    keyConfigDigest: KC,
    model: MODEL,
    requestHash: saltedRequestHash(salt, request),
    responseHash: saltedResponseHash(salt, chunks),
    saltCommitment: saltCommitment(salt),
    policy: { retention: 'none', engine: 'onnx', route: 'local' },
    receivedAt: 1_767_225_600_000,
    completedAt: 1_767_225_600_012,
    outcome: { status: 'complete', chunks: 2 },
    ...over,
  };
}

function expectation(over: Partial<LeafExpectation> = {}): LeafExpectation {
  return {
    keyConfigDigest: KC,
    salt,
    requestHash: saltedRequestHash(salt, request),
    responseHash: saltedResponseHash(salt, chunks),
    model: MODEL,
    chunks: 2,
    aborted: false,
    ...over,
  };
}

describe('receipt v2 leaf', () => {
  it('a session field is exactly a 32-byte commitment, to encode and to decode', () => {
    for (const n of [1, 16, 31, 33]) {
      expect(codeOf(() => encodeReceiptLeaf(leafFor({ session: new Uint8Array(n) })))).toBe('INVALID_ARGUMENT');
    }
    // A decoder fed a 16-byte session (hand-encoded: the encoder refuses it) refuses it too.
    const good = encodeReceiptLeaf(leafFor({ session: new Uint8Array(32).fill(7) }));
    const at = Buffer.from(good).indexOf(Buffer.concat([Buffer.from([0x58, 32]), Buffer.alloc(32, 7)]));
    expect(at).toBeGreaterThan(0);
    const short = Buffer.concat([good.subarray(0, at), Buffer.from([0x50]), Buffer.alloc(16, 7), good.subarray(at + 34)]);
    expect(codeOf(() => decodeReceiptLeaf(short))).toBe('MALFORMED');
  });

  it('round-trips, with and without a session and an aborted outcome', () => {
    for (const l of [leafFor(), leafFor({ session: new Uint8Array(32).fill(1) }), leafFor({ outcome: { status: 'aborted', chunks: 3, code: 'TIMEOUT' } })]) {
      const bytes = encodeReceiptLeaf(l);
      expect(decodeReceiptLeaf(bytes)).toEqual(l);
      expect(encodeReceiptLeaf(decodeReceiptLeaf(bytes))).toEqual(bytes);
    }
  });

  it('salted hashes depend on the salt, and the hasher counts chunks', () => {
    const other = new Uint8Array(RECEIPT_SALT_LENGTH).fill(8);
    expect(saltedRequestHash(salt, request)).not.toEqual(saltedRequestHash(other, request));
    expect(saltedRequestHash(salt, request)).not.toEqual(createHash('sha256').update(request).digest());
    const h = new SaltedResponseHasher(salt);
    for (const c of chunks) h.update(c);
    expect(h.chunks).toBe(2);
    expect(h.digest()).toEqual(saltedResponseHash(salt, chunks));
    expect(codeOf(() => h.digest())).toBe('PROTOCOL_VIOLATION');
    expect(codeOf(() => saltedRequestHash(new Uint8Array(16), request))).toBe('INVALID_ARGUMENT');
  });

  it('every byte flip of an encoded leaf fails to decode or decodes to another leaf', () => {
    const bytes = encodeReceiptLeaf(leafFor({ session: new Uint8Array(32).fill(1) }));
    for (let i = 0; i < bytes.byteLength; i++) {
      for (const mask of [0x01, 0x80]) {
        const b = bytes.slice();
        b[i] = (b[i] as number) ^ mask;
        let decoded: ReceiptLeaf | undefined;
        try {
          decoded = decodeReceiptLeaf(b);
        } catch {
          continue;
        }
        // Decoded: it must differ in value (strict canonical decoding: one encoding per value).
        expect(encodeReceiptLeaf(decoded)).not.toEqual(bytes);
      }
    }
  });

  it('refuses unknown keys, trailing bytes, other retention and versions', () => {
    const bytes = encodeReceiptLeaf(leafFor());
    expect(codeOf(() => decodeReceiptLeaf(new Uint8Array([...bytes, 0])))).toBe('MALFORMED');
    expect(codeOf(() => encodeReceiptLeaf(leafFor({ policy: { retention: 'forever' as 'none', engine: 'x', route: 'y' } })))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => encodeReceiptLeaf(leafFor({ completedAt: 1 })))).toBe('INVALID_ARGUMENT');
    // Version 3 is a clear VERSION_UNSUPPORTED: find the version entry (key 1, value 2: 01 02).
    const at = bytes.indexOf(0x02, 1);
    const v3 = bytes.slice();
    v3[at] = 0x03;
    expect(codeOf(() => decodeReceiptLeaf(v3))).toBe('VERSION_UNSUPPORTED');
    expect(codeOf(() => decodeReceiptLeaf(new Uint8Array(9000)))).toBe('LIMIT_EXCEEDED');
  });

  it('checkLeaf accepts the exchange the client saw and names each difference', () => {
    const bytes = encodeReceiptLeaf(leafFor());
    expect(checkLeaf(bytes, expectation()).model.name).toBe('classifier');
    const cases: [Partial<LeafExpectation>, string][] = [
      [{ keyConfigDigest: sha('other') }, 'another key config'],
      [{ salt: new Uint8Array(32).fill(9) }, 'another salt'],
      [{ requestHash: sha('x') }, 'another request'],
      [{ responseHash: saltedResponseHash(salt, chunks.slice(0, 1)) }, 'another response'],
      [{ model: { name: 'classifier', digest: sha('m2') } }, 'another model'],
      [{ chunks: 1 }, 'counts 2 chunks'],
      [{ aborted: true }, 'complete'],
      [{ session: new Uint8Array(32) }, 'another session'],
    ];
    for (const [over, why] of cases) {
      let err: unknown;
      try {
        checkLeaf(bytes, expectation(over));
      } catch (e) {
        err = e;
      }
      expect(codeOf(() => {
        throw err;
      })).toBe('RECEIPT_INVALID');
      expect(String(err)).toContain(why);
    }
  });
});

describe('signed tree heads and the receipt log', () => {
  const keys = generateReceiptKeyPair();
  const sign = (m: Uint8Array): Uint8Array => signReceipt(keys.privateKey, m);

  function filledLog(n: number, now = (): number => 1_000): ReceiptLog {
    const log = new ReceiptLog(KC, sign, { now });
    for (let i = 0; i < n; i++) log.append(encodeReceiptLeaf(leafFor({ receivedAt: i, completedAt: i + 1 })));
    return log;
  }

  it('proves every leaf to one signed head; the client verifies one signature for all of them', () => {
    const log = filledLog(13);
    const verifier = new TreeHeadVerifier(keys.publicKey, KC);
    for (let i = 0; i < 13; i++) {
      const proof = log.proofFor(i);
      const leaf = encodeReceiptLeaf(leafFor({ receivedAt: i, completedAt: i + 1 }));
      const head = checkInclusion(verifier, leaf, i, proof);
      expect(head.treeSize).toBe(13);
    }
    expect(log.signatures).toBe(1);
    expect(verifier.signaturesVerified).toBe(1);
  });

  it('end receipts round-trip strictly', () => {
    const log = filledLog(5);
    const leaf = encodeReceiptLeaf(leafFor({ receivedAt: 4, completedAt: 5 }));
    const r = { leaf, index: 4, proof: log.proofFor(4) };
    const bytes = encodeEndReceipt(r);
    expect(decodeEndReceipt(bytes)).toEqual(r);
    expect(decodeEndReceipt(encodeEndReceipt({ leaf, index: 4 }))).toEqual({ leaf, index: 4 });
    expect(codeOf(() => decodeEndReceipt(new Uint8Array([...bytes, 0])))).toBe('MALFORMED');
  });

  it('a forged head, a head of another key config, a wrong index or leaf, a tampered proof: RECEIPT_INVALID', () => {
    const log = filledLog(6);
    const proof = log.proofFor(2);
    const leaf = encodeReceiptLeaf(leafFor({ receivedAt: 2, completedAt: 3 }));
    const verifier = (): TreeHeadVerifier => new TreeHeadVerifier(keys.publicKey, KC);
    // Forged: signed by another key.
    const other = generateReceiptKeyPair();
    const forged = new ReceiptLog(KC, (m) => signReceipt(other.privateKey, m));
    for (let i = 0; i < 6; i++) forged.append(encodeReceiptLeaf(leafFor({ receivedAt: i, completedAt: i + 1 })));
    expect(codeOf(() => checkInclusion(verifier(), leaf, 2, forged.proofFor(2)))).toBe('RECEIPT_INVALID');
    // Another key config's log (a receipt from another generation or server).
    expect(codeOf(() => new TreeHeadVerifier(keys.publicKey, sha('other')).verify(proof.treeHead))).toBe('RECEIPT_INVALID');
    expect(codeOf(() => checkInclusion(verifier(), leaf, 3, proof))).toBe('RECEIPT_INVALID');
    expect(codeOf(() => checkInclusion(verifier(), encodeReceiptLeaf(leafFor()), 2, proof))).toBe('RECEIPT_INVALID');
    // Every byte of the signed head and of the path.
    const sth = encodeSignedTreeHead(proof.treeHead);
    for (let i = 0; i < sth.byteLength; i++) {
      const b = sth.slice();
      b[i] = (b[i] as number) ^ 0x01;
      expect(codeOf(() => checkInclusion(verifier(), leaf, 2, { ...proof, treeHead: decodeSignedTreeHead(b) }))).not.toBe('no-throw');
    }
    for (let p = 0; p < proof.path.length; p++) {
      for (let j = 0; j < 32; j++) {
        const path = proof.path.map((h) => h.slice());
        (path[p] as Uint8Array)[j] = ((path[p] as Uint8Array)[j] as number) ^ 0x40;
        expect(codeOf(() => checkInclusion(verifier(), leaf, 2, { ...proof, path }))).toBe('RECEIPT_INVALID');
      }
    }
  });

  it('signs periodic heads at most once per interval, and only when leaves were added', () => {
    let now = 10_000;
    const log = filledLog(0, () => now);
    expect(log.headIfDue()).toBeUndefined();
    log.append(encodeReceiptLeaf(leafFor()));
    const first = log.headIfDue();
    expect(first).toBeDefined();
    log.append(encodeReceiptLeaf(leafFor()));
    expect(log.headIfDue()).toBeUndefined();
    now += DEFAULT_TREE_HEAD_INTERVAL_MS;
    const second = log.headIfDue();
    expect(second).toBeDefined();
    expect(decodeTreeHead((second as { head: Uint8Array }).head).treeSize).toBe(2);
    expect(log.headIfDue()).toBeUndefined();
    expect(log.signatures).toBe(2);
    // Session end: signHead covers everything; nothing new, no new signature.
    expect(log.signHead()).toBe(second);
    expect(log.signatures).toBe(2);
    // Consistency between the two heads.
    expect(log.consistencyProof(1, 2)).toHaveLength(1);
  });

  it('a full log refuses leaves (maxLeaves), and a leaf of another generation is refused', () => {
    const log = new ReceiptLog(KC, sign, { maxLeaves: 2 });
    log.append(encodeReceiptLeaf(leafFor()));
    log.append(encodeReceiptLeaf(leafFor()));
    expect(codeOf(() => log.append(encodeReceiptLeaf(leafFor())))).toBe('LIMIT_EXCEEDED');
    expect(codeOf(() => new ReceiptLog(KC, sign).append(encodeReceiptLeaf(leafFor({ keyConfigDigest: sha('x') }))))).toBe('INTERNAL');
    expect(codeOf(() => new ReceiptLog(KC, sign, { treeHeadIntervalMs: 0 }))).toBe('CONFIG_INVALID');
  });

  it('the verifier cache is bounded', () => {
    const v = new TreeHeadVerifier(keys.publicKey, KC, { maxCached: 2 });
    const log = new ReceiptLog(KC, sign);
    const heads = [];
    for (let i = 0; i < 4; i++) {
      log.append(encodeReceiptLeaf(leafFor({ requestHash: new Uint8Array(randomBytes(32)) })));
      heads.push(log.signHead());
    }
    for (const h of heads) v.verify(h);
    expect(v.signaturesVerified).toBe(4);
    v.verify(heads[3] as (typeof heads)[number]);
    expect(v.signaturesVerified).toBe(4);
    v.verify(heads[0] as (typeof heads)[number]);
    expect(v.signaturesVerified).toBe(5);
  });
});

describe('receipts v2 through the response writer and reader', () => {
  it('an aborted stream: the leaf says aborted after k chunks with the code; the reader agrees; a tampered leaf fails', () => {
    const model = { name: 'm', task: 'text-generation', operations: ['generate' as const], digest: new Uint8Array(32).fill(5) };
    const keys = new KeyManager({ platform: 'simulated', models: [model], configDigest: new Uint8Array(32).fill(7) });
    const gen = keys.current();
    const kc = decodeKeyConfig(gen.keyConfig);
    const salt = new Uint8Array(32).fill(3);
    const records: unknown[] = [];
    const exchange = (tamper: boolean): unknown[] => {
      const { bytes, reader } = sealRequest(sealTargetFromKeyConfig(kc), { v: 1, op: 'generate', model: 'm', input: 'x', stream: true, ts: Date.now(), id: new Uint8Array(16).fill(1), caps: ['json', 'receipt-proof', 'receipt2'], salt }, {
        pad: false,
        verify: () => false,
        receiptV2: { salt, keyConfigDigest: keyConfigDigest(gen.keyConfig), model: { name: 'm', digest: model.digest }, verifier: new TreeHeadVerifier(kc.receiptPublicKey, keyConfigDigest(gen.keyConfig)), requireProof: true },
        onReceiptV2: (r) => records.push(r),
      });
      const opened = openRequest(() => gen, bytes, { maxMessageBytes: 1 << 20 });
      const req = opened.decode();
      expect(req.salt).toEqual(salt);
      const w = opened.writer;
      w.receiptV2({ salt: req.salt as Uint8Array, log: gen.receiptLog, model: { name: 'm', digest: model.digest }, policy: { retention: 'none', engine: 'test', route: 'local' }, receivedAt: Date.now(), withProof: true, now: Date.now });
      const out = [w.start(), w.results([{ a: 1 }], { json: false }), w.results([{ a: 2 }], { json: false }), w.error(tamper ? 'ENGINE_FAILED' : 'TIMEOUT', 'x')];
      const end = w.end();
      const results = out.flatMap((b) => reader.push(b));
      if (tamper) end[end.byteLength - 1] = (end[end.byteLength - 1] as number) ^ 1;
      return [...results, ...reader.push(end), ...reader.finish(), reader.serverError?.code];
    };
    expect(exchange(false)).toEqual([{ a: 1 }, { a: 2 }, 'TIMEOUT']);
    expect(records).toHaveLength(1);
    const leaf = decodeReceiptLeaf((records[0] as { leaf: Uint8Array }).leaf);
    expect(leaf.outcome).toEqual({ status: 'aborted', chunks: 2, code: 'TIMEOUT' });
    // A flipped byte of the sealed final chunk never opens.
    expect(() => exchange(true)).toThrow();
  });
});
