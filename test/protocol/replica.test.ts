/**
 * Per-replica receipts (src/protocol/replica.ts): the replica key config's binding to the fleet
 * key config, the wire fields (`replicas` in the request, `replica` in the final chunk), the
 * reader's checks, and the offline receipt check (src/verifier/receipt.ts) against statements
 * produced by the simulated attester.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadSimulatedRoot } from '../../src/attester/simulated/root-store.js';
import { beforeAll, describe, expect, it } from 'vitest';
import { CloisterError } from '../../src/errors.js';
import { createSimulatedAttester } from '../../src/attester/simulated/index.js';
import type { SimulatedAttester } from '../../src/attester/simulated/index.js';
import { generateX25519KeyPair, HpkeRecipientKey, suiteFromIds } from '../../src/crypto/index.js';
import { decodeKeyConfig, encodeKeyConfig, keyConfigDigest } from '../../src/protocol/key-config.js';
import type { KeyConfig } from '../../src/protocol/key-config.js';
import {
  CAPABILITIES,
  decodeResponseChunk,
  decodeSealedRequest,
  encodeResponseChunk,
  encodeSealedRequest,
  generateReceiptKeyPair,
  signReceipt,
  verifyReceipt,
} from '../../src/protocol/messages.js';
import type { SealedRequest } from '../../src/protocol/messages.js';
import {
  MAX_KNOWN_REPLICAS,
  REPLICA_CAPABILITY,
  replicaKeyConfig,
  replicaPurposeDigest,
  replicaReceiptKey,
  replicaStatementDigest,
} from '../../src/protocol/replica.js';
import type { ReplicaRef } from '../../src/protocol/replica.js';
import { openRequest, sealRequest } from '../../src/protocol/request.js';
import type { RequestKey } from '../../src/protocol/request.js';
import { decodeEvidenceFile, encodeEvidenceFile } from '../../src/verifier/evidence-file.js';
import { checkReceipt, detachedStatementOf, digestsOfReceiptMessage, receiptFromJson, receiptToJson, statementFileName } from '../../src/verifier/receipt.js';
import type { ReceiptRecord } from '../../src/verifier/receipt.js';
import { verifyEvidence } from '../../src/verifier/verify.js';
import { policyFromJson } from '../../src/verifier/policy.js';
import { ReplicaStatements } from '../../src/client/replicas.js';
import { codeOf } from '../helpers/errors.js';

const NOW_S = Math.floor(Date.now() / 1000);

function fleetConfig(over: Partial<KeyConfig> = {}): KeyConfig {
  return {
    version: 1,
    keyId: 5,
    kemId: 0x20,
    kdfId: 1,
    aeadIds: [1, 3],
    hpkePublicKey: new Uint8Array(32).fill(7),
    receiptPublicKey: new Uint8Array(32).fill(8),
    models: [{ name: 'm', task: 'text-classification', digest: new Uint8Array(32).fill(9) }],
    configDigest: new Uint8Array(32).fill(10),
    platform: 'simulated',
    notBefore: NOW_S - 60,
    expiresAt: NOW_S + 3600,
    replicaReceipts: true,
    ...over,
  };
}

/** The same key config without key 16 (a stand-alone server's). */
function solo(kc: KeyConfig): KeyConfig {
  const { replicaReceipts: _r, ...rest } = kc;
  void _r;
  return rest;
}

describe('replica key config binding', () => {
  const fleet = fleetConfig();
  const r = generateReceiptKeyPair();
  const bound = encodeKeyConfig(replicaKeyConfig(fleet, r.publicKey));

  it('key 16 round-trips, and only as true', () => {
    const bytes = encodeKeyConfig(fleet);
    expect(decodeKeyConfig(bytes).replicaReceipts).toBe(true);
    expect(decodeKeyConfig(encodeKeyConfig(solo(fleet))).replicaReceipts).toBeUndefined();
    // CBOR false (0xf4) in place of true (0xf5): refused.
    const at = bytes.lastIndexOf(0xf5);
    const tampered = Uint8Array.from(bytes);
    tampered[at] = 0xf4;
    expect(codeOf(() => decodeKeyConfig(tampered))).toBe('MALFORMED');
  });

  it('returns the receipt key of exactly the replica key config of this fleet generation', () => {
    expect(replicaReceiptKey(fleet, bound)).toEqual(r.publicKey);
    const kc = decodeKeyConfig(bound);
    expect(kc.configDigest).toEqual(replicaPurposeDigest(fleet));
    expect(kc.protocols).toBeUndefined();
    // The fleet's v2 form (protocols) names the same generation.
    expect(replicaReceiptKey(fleetConfig({ protocols: [1, 2] }), bound)).toEqual(r.publicKey);
  });

  it('a replica attests its own GPUs: they may differ from the fleet key config\'s', () => {
    const gpus = [{ reportDigest: new Uint8Array(32).fill(1), certChainDigest: new Uint8Array(32).fill(2), ccEnabled: true, devTools: false }];
    const withGpus = encodeKeyConfig({ ...replicaKeyConfig(fleet, r.publicKey), gpus });
    expect(replicaReceiptKey(fleet, withGpus)).toEqual(r.publicKey);
  });

  const refused: [string, () => Uint8Array | KeyConfig][] = [
    ['another fleet generation (key id)', () => encodeKeyConfig(replicaKeyConfig(fleetConfig({ keyId: 6 }), r.publicKey))],
    ['another fleet HPKE key', () => encodeKeyConfig(replicaKeyConfig(fleetConfig({ hpkePublicKey: new Uint8Array(32).fill(1) }), r.publicKey))],
    ['another model digest', () => encodeKeyConfig({ ...replicaKeyConfig(fleet, r.publicKey), models: [{ name: 'm', task: 'text-classification', digest: new Uint8Array(32).fill(1) }] })],
    ['another validity', () => encodeKeyConfig({ ...replicaKeyConfig(fleet, r.publicKey), expiresAt: NOW_S + 7200 })],
    ['the fleet key config itself (its config digest, not the purpose digest)', () => encodeKeyConfig(fleet)],
    ['a key-release purpose digest', () => encodeKeyConfig({ ...replicaKeyConfig(fleet, r.publicKey), configDigest: createHash('sha256').update('cloister/key-release/v1\0fleet').digest() })],
    ['protocols offered', () => encodeKeyConfig({ ...replicaKeyConfig(fleet, r.publicKey), protocols: [1, 2] })],
    ['no replicaReceipts flag', () => encodeKeyConfig(solo(replicaKeyConfig(fleet, r.publicKey)))],
    ['trailing bytes', () => Uint8Array.from([...bound, 0])],
    ['not a key config', () => new Uint8Array(40)],
  ];
  for (const [what, make] of refused) {
    it(`refuses a statement key config with ${what}: RECEIPT_INVALID`, () => {
      const bytes = make() as Uint8Array;
      expect(codeOf(() => replicaReceiptKey(fleet, bytes))).toBe('RECEIPT_INVALID');
    });
  }

  it('a stand-alone key config has no replica key config', () => {
    expect(codeOf(() => replicaKeyConfig(solo(fleet), r.publicKey))).toBe('INTERNAL');
  });
});

describe('wire fields', () => {
  const base: SealedRequest = { v: 1, op: 'classify', model: 'm', input: 'x', stream: false, ts: 1, id: new Uint8Array(16), caps: [...CAPABILITIES, REPLICA_CAPABILITY] };

  it('the request lists 1 to 8 statement digests, only with the replica capability', () => {
    const replicas = [new Uint8Array(32).fill(1), new Uint8Array(32).fill(2)];
    expect(decodeSealedRequest(encodeSealedRequest({ ...base, replicas })).replicas).toEqual(replicas);
    expect(decodeSealedRequest(encodeSealedRequest(base)).replicas).toBeUndefined();
    expect(codeOf(() => encodeSealedRequest({ ...base, caps: CAPABILITIES, replicas }))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => encodeSealedRequest({ ...base, replicas: Array.from({ length: MAX_KNOWN_REPLICAS + 1 }, () => new Uint8Array(32)) }))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => encodeSealedRequest({ ...base, replicas: [new Uint8Array(31)] }))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => encodeSealedRequest({ ...base, replicas: [] }))).toBe('INVALID_ARGUMENT');
  });

  it('a server refuses a request whose replicas field breaks the rules: MALFORMED', () => {
    // Changed by hand (the encoder refuses these): without the capability, a short digest.
    const good = encodeSealedRequest({ ...base, replicas: [new Uint8Array(32)] });
    const noCap = Uint8Array.from(good);
    // caps: "replica" sorts last; turn it into "replicb" (an unknown capability, still sorted).
    const at = Buffer.from(noCap).indexOf('replica');
    noCap[at + 6] = 0x62;
    expect(codeOf(() => decodeSealedRequest(noCap))).toBe('MALFORMED');
    const short = Buffer.from(good);
    // The digest's head 0x58 0x20 (32 bytes) claims 31: the map no longer decodes.
    const d = short.indexOf(Buffer.from([0x58, 0x20]), short.indexOf('replicas'));
    short[d + 1] = 0x1f;
    expect(codeOf(() => decodeSealedRequest(new Uint8Array(short)))).toBe('MALFORMED');
  });

  it('the final chunk carries exactly one of evidence and digest', () => {
    const receipt = new Uint8Array(64);
    for (const replica of [{ evidence: new Uint8Array([1, 2, 3]) }, { digest: new Uint8Array(32).fill(4) }] as ReplicaRef[]) {
      expect(decodeResponseChunk(encodeResponseChunk({ t: 'end', receipt, replica }))).toEqual({ t: 'end', receipt, replica });
    }
    expect(codeOf(() => encodeResponseChunk({ t: 'end', receipt, replica: { digest: new Uint8Array(31) } }))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => encodeResponseChunk({ t: 'end', receipt, replica: { evidence: new Uint8Array(0) } }))).toBe('INVALID_ARGUMENT');
    // Both, neither, or an unknown key: refused by the client's decoder.
    const both = encodeResponseChunk({ t: 'end', receipt, replica: { evidence: new Uint8Array(3) } });
    const withDigest = Buffer.from(both).toString('hex').replace('a16865766964656e636543000000', 'a2666469676573744100' + '6865766964656e636543000000');
    expect(codeOf(() => decodeResponseChunk(new Uint8Array(Buffer.from(withDigest, 'hex'))))).toBe('MALFORMED');
    const neither = Buffer.from(both).toString('hex').replace('a16865766964656e636543000000', 'a0');
    expect(codeOf(() => decodeResponseChunk(new Uint8Array(Buffer.from(neither, 'hex'))))).toBe('MALFORMED');
  });
});

describe('reader and offline check against simulated statements', () => {
  let attester: SimulatedAttester;
  let other: SimulatedAttester;
  const kp = generateX25519KeyPair();
  const fleet = fleetConfig({ hpkePublicKey: kp.publicKey });
  const fleetBytes = encodeKeyConfig(fleet);
  const r1 = generateReceiptKeyPair();
  const r2 = generateReceiptKeyPair();
  let statement1: Uint8Array;
  let statement2: Uint8Array;
  let intruderStatement: Uint8Array;
  let policy: ReturnType<typeof policyFromJson>;
  let roots: { simulated: string[] };

  beforeAll(async () => {
    attester = await createSimulatedAttester({ measurements: { codeDigest: new Uint8Array(32).fill(0x42) } });
    // Another TEE under the same (simulated) root, running other code.
    const dir = await mkdtemp(join(tmpdir(), 'cloister-replica-'));
    await attester.storeRoot(dir);
    const root = await loadSimulatedRoot(dir);
    await rm(dir, { recursive: true, force: true });
    other = await createSimulatedAttester({ measurements: { codeDigest: new Uint8Array(32).fill(0x43) }, ...(root === undefined ? {} : { root }) });
    const section = attester.policySection();
    policy = policyFromJson({ version: 1, platforms: { simulated: { pcrs: { '0': section.pcrs['0'] }, rootSha256: section.rootSha256 } } });
    roots = { simulated: [attester.rootPem] };
    const statement = async (a: SimulatedAttester, key: Uint8Array): Promise<Uint8Array> =>
      encodeEvidenceFile(await a.attest({ keyConfig: encodeKeyConfig(replicaKeyConfig(fleet, key)), hpkePublicKey: kp.publicKey }));
    statement1 = await statement(attester, r1.publicKey);
    statement2 = await statement(attester, r2.publicKey);
    intruderStatement = await statement(other, r1.publicKey);
  });

  /** A request to the fleet answered by a replica signing with `signer`, naming `ref`. */
  function exchange(signer: typeof r1, ref: ReplicaRef | undefined, resolve: ((ref: ReplicaRef) => Uint8Array) | undefined, records: { m: Uint8Array; s: Uint8Array; ref?: ReplicaRef }[] = []): () => unknown[] {
    const key: RequestKey = { recipient: HpkeRecipientKey.fromPrivateKey(kp.privateKey), signReceipt: (m) => signReceipt(signer.privateKey, m) };
    const target = { keyId: 5, publicKey: kp.publicKey, suite: suiteFromIds(0x20, 1, 1) };
    const req: SealedRequest = { v: 1, op: 'classify', model: 'm', input: 'note', stream: false, ts: 1, id: new Uint8Array(randomBytes(16)), caps: [...CAPABILITIES, REPLICA_CAPABILITY] };
    const { bytes, reader } = sealRequest(target, req, {
      pad: false,
      verify: (m, s) => verifyReceipt(fleet.receiptPublicKey, m, s),
      onReceipt: (m, s, r) => records.push({ m, s, ...(r === undefined ? {} : { ref: r }) }),
      ...(resolve === undefined ? {} : { replica: resolve }),
    });
    const opened = openRequest(() => key, bytes, { maxMessageBytes: 1 << 20 });
    opened.decode();
    if (ref !== undefined) opened.writer.replica(ref);
    const pieces = [opened.writer.start(), opened.writer.results([{ label: 'x', score: 1 }], { json: false }), opened.writer.end()];
    return () => [...pieces.flatMap((p) => reader.push(p)), ...reader.finish()];
  }

  const bind = (ref: ReplicaRef): Uint8Array => {
    if (ref.evidence === undefined) throw new CloisterError('RECEIPT_INVALID', 'no statement');
    return replicaReceiptKey(fleet, decodeEvidenceFile(ref.evidence).bundle.keyConfig);
  };

  it('a receipt signed by the replica whose statement the final chunk carries verifies, and the record checks offline', () => {
    const records: { m: Uint8Array; s: Uint8Array; ref?: ReplicaRef }[] = [];
    expect(exchange(r1, { evidence: statement1 }, bind, records)()).toEqual([{ label: 'x', score: 1 }]);
    const [rec] = records;
    if (rec === undefined) throw new Error('no receipt');
    const record: ReceiptRecord = {
      version: 1, keyId: 5, keyConfigDigest: keyConfigDigest(fleetBytes), ...digestsOfReceiptMessage(rec.m), signature: rec.s,
      replica: { receiptKey: r1.publicKey, statement: statement1 },
    };
    const stored = receiptFromJson(JSON.parse(JSON.stringify(receiptToJson(record))));
    expect(() => checkReceipt(stored, fleetBytes)).not.toThrow();
    // The statement kept apart, named by its SHA-256: found by the lookup, checked against the name.
    const detached = JSON.parse(JSON.stringify(receiptToJson(record, { detachStatement: true }))) as { replica: Record<string, string> };
    const name = statementFileName(statement1);
    expect(name).toBe(`statement-${createHash('sha256').update(statement1).digest('hex')}.cbor`);
    expect(detached.replica).toEqual({ receiptKey: Buffer.from(r1.publicKey).toString('hex'), statementSha256: name.slice(10, 74) });
    expect(detachedStatementOf(detached)).toBe(name.slice(10, 74));
    expect(detachedStatementOf(JSON.parse(JSON.stringify(receiptToJson(record))))).toBeUndefined();
    expect(receiptFromJson(detached, statement1)).toEqual(stored);
    expect(codeOf(() => receiptFromJson(detached))).toBe('NOT_FOUND');
    expect(codeOf(() => receiptFromJson(detached, statement2))).toBe('RECEIPT_INVALID');
    expect(codeOf(() => receiptFromJson({ ...detached, replica: { ...detached.replica, statement: 'AAAA' } }, statement1))).toBe('MALFORMED');
    // Another replica's statement and key, the wrong key named, a statement byte flipped: refused.
    expect(codeOf(() => checkReceipt({ ...stored, replica: { receiptKey: r2.publicKey, statement: statement2 } }, fleetBytes))).toBe('RECEIPT_INVALID');
    expect(codeOf(() => checkReceipt({ ...stored, replica: { receiptKey: r2.publicKey, statement: statement1 } }, fleetBytes))).toBe('RECEIPT_INVALID');
    const flipped = Uint8Array.from(statement1);
    const kcAt = Buffer.from(flipped).indexOf(Buffer.from(r1.publicKey));
    flipped[kcAt] = (flipped[kcAt] as number) ^ 1;
    expect(codeOf(() => checkReceipt({ ...stored, replica: { receiptKey: r1.publicKey, statement: flipped } }, fleetBytes))).toBe('RECEIPT_INVALID');
    // A fleet receipt without its replica; a replica on a stand-alone key config.
    const { replica: _r, ...bare } = stored;
    void _r;
    expect(codeOf(() => checkReceipt(bare, fleetBytes))).toBe('RECEIPT_INVALID');
    const standAlone = encodeKeyConfig(solo(fleet));
    expect(codeOf(() => checkReceipt({ ...stored, keyConfigDigest: keyConfigDigest(standAlone) }, standAlone))).toBe('RECEIPT_INVALID');
  });

  it('a receipt under a key the named statement does not bind is RECEIPT_INVALID', () => {
    expect(codeOf(exchange(r2, { evidence: statement1 }, bind))).toBe('RECEIPT_INVALID');
  });

  it('a final chunk naming no replica, against a fleet key config, is RECEIPT_INVALID', () => {
    expect(codeOf(exchange(r1, undefined, bind))).toBe('RECEIPT_INVALID');
  });

  it('a replica the client did not ask for is PROTOCOL_VIOLATION', () => {
    expect(codeOf(exchange(r1, { evidence: statement1 }, undefined))).toBe('PROTOCOL_VIOLATION');
  });

  it('the SDK cache: a new statement is verified against the policy once; an intruder\'s (other code digest) is refused; an unlisted digest is RECEIPT_INVALID', async () => {
    let verifications = 0;
    const cache = new ReplicaStatements(async (bundle) => {
      verifications++;
      await verifyEvidence(bundle, { policy, trustedRoots: roots });
    });
    const first = cache.check(fleet);
    expect(first.known).toBeUndefined();
    expect(first.resolve({ evidence: statement1 })).toEqual(r1.publicKey);
    expect(await first.settle()).toEqual({ receiptKey: r1.publicKey, statement: statement1 });
    // Listed afterwards; a listed digest resolves with no verification.
    const second = cache.check(fleet);
    expect(second.known).toEqual([replicaStatementDigest(statement1)]);
    expect(second.resolve({ digest: replicaStatementDigest(statement1) })).toEqual(r1.publicKey);
    await second.settle();
    expect(verifications).toBe(1);
    // A digest this request did not list.
    expect(codeOf(() => cache.check(fleet).resolve({ digest: replicaStatementDigest(statement2) }))).toBe('RECEIPT_INVALID');
    // Another fleet generation lists nothing of this one.
    expect(cache.check(fleetConfig({ keyId: 6 })).known).toBeUndefined();
    // A replica whose TEE runs other code: the binding holds, the policy does not.
    const intruder = cache.check(fleet);
    expect(intruder.resolve({ evidence: intruderStatement })).toEqual(r1.publicKey);
    await expect(intruder.settle()).rejects.toMatchObject({ code: 'POLICY_MISMATCH' });
    expect(cache.size).toBe(1);
    // Concurrent first sightings of one statement share one verification.
    const [a, b] = [cache.check(fleet), cache.check(fleet)];
    a.resolve({ evidence: statement2 });
    b.resolve({ evidence: statement2 });
    await Promise.all([a.settle(), b.settle()]);
    expect(verifications).toBe(3);
  });
});
