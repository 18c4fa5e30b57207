/**
 * Per-replica receipts for fleets (docs/PROTOCOL.md section 14, docs/KEYS.md "Per-replica receipts").
 *
 * Replicas behind a load balancer share one fleet key config (key 16 `replicaReceipts`), so
 * that a client that verified any of them can seal to all. Receipts still name the TEE that
 * answered: each replica generates its own Ed25519 receipt key R in memory and has its
 * attester produce evidence E over a *replica key config*: the fleet key config (without
 * `protocols` and `gpus`) with `receiptPublicKey` = R and `configDigest` =
 * SHA-256("cloister/replica-receipt/v1" || 0x00 || keyGenerationDigest(fleet key config)).
 * E is the replica statement: it binds R to this TEE's measurements and to the fleet key
 * config it serves. A client that declared the `replica` capability gets, in the final `end`
 * chunk, `replica: {evidence: E}` (the evidence file bytes) or, when its request listed E's
 * SHA-256 in `replicas` (statements it verified before), `replica: {digest}`. The receipt
 * signature is checked under R, the binding here, E's attestation by verifyEvidence against
 * the client's policy; an auditor repeats all three offline from the receipt record.
 */
import { createHash } from 'node:crypto';
import { CloisterError } from '../errors.js';
import { concatBytes, utf8 } from '../core/bytes.js';
import { timingSafeEqualBytes } from '../crypto/ct.js';
import { toHex } from '../core/hex.js';
import { decodeKeyConfig, encodeKeyConfig, keyGenerationDigest } from './key-config.js';
import type { KeyConfig } from './key-config.js';

export const REPLICA_RECEIPT_LABEL = 'cloister/replica-receipt/v1';
/** The capability a client declares to get the replica statement with each receipt. */
export const REPLICA_CAPABILITY = 'replica';
/** Most statement digests a request lists in `replicas` (those its client verified already). */
export const MAX_KNOWN_REPLICAS = 8;
export const REPLICA_DIGEST_LENGTH = 32;
/** Largest replica statement (an evidence file) in a final chunk: as MAX_EVIDENCE_FILE_BYTES. */
export const MAX_REPLICA_STATEMENT_BYTES = 1024 * 1024;

/** What the final chunk says about the replica: the statement itself, or the digest of one the client listed. */
export type ReplicaRef = { readonly evidence: Uint8Array; readonly digest?: undefined } | { readonly digest: Uint8Array; readonly evidence?: undefined };

/** SHA-256 of a replica statement (the evidence file bytes): how clients cache and list it. */
export function replicaStatementDigest(evidenceFile: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(evidenceFile).digest());
}

/** The `configDigest` of a replica key config: names the one purpose and the fleet generation. */
export function replicaPurposeDigest(fleet: KeyConfig): Uint8Array {
  return new Uint8Array(createHash('sha256').update(concatBytes(utf8(REPLICA_RECEIPT_LABEL), Uint8Array.of(0), keyGenerationDigest(fleet))).digest());
}

/** The fleet key config without what differs per replica or per client form (`protocols`, `gpus`). */
function fleetBase(kc: KeyConfig): KeyConfig {
  const { protocols: _p, gpus: _g, ...base } = kc;
  void _p;
  void _g;
  return base;
}

/** The replica key config a replica's attester binds (server side): R in place of the fleet's receipt key. */
export function replicaKeyConfig(fleet: KeyConfig, receiptPublicKey: Uint8Array): KeyConfig {
  if (fleet.replicaReceipts !== true) throw new CloisterError('INTERNAL', 'a replica key config derives from a fleet key config (replicaReceipts)');
  if (receiptPublicKey.byteLength !== 32) throw new CloisterError('INTERNAL', 'a replica receipt key is 32 bytes');
  return { ...fleetBase(fleet), receiptPublicKey: Uint8Array.from(receiptPublicKey), configDigest: replicaPurposeDigest(fleet) };
}

function invalid(why: string, detail: Record<string, string> = {}): CloisterError {
  return new CloisterError('RECEIPT_INVALID', `replica statement: ${why}`, { detail });
}

/**
 * The replica's receipt key R, from the key config its statement binds (`bundle.keyConfig`
 * of the evidence file), after checking that this key config is exactly the replica key
 * config of `fleet` with R: the purpose digest, and every other field equal to the fleet's
 * (GPUs aside: each replica attests its own). RECEIPT_INVALID otherwise. This checks the
 * binding only; the evidence itself is verified with verifyEvidence.
 */
export function replicaReceiptKey(fleet: KeyConfig, statementKeyConfig: Uint8Array): Uint8Array {
  let kc: KeyConfig;
  try {
    kc = decodeKeyConfig(statementKeyConfig);
  } catch (cause) {
    throw invalid('its key config does not decode', { cause: cause instanceof Error ? cause.message : 'unknown' });
  }
  const purpose = replicaPurposeDigest(fleet);
  if (!timingSafeEqualBytes(kc.configDigest, purpose)) {
    throw invalid('it is for another fleet key generation, or for another purpose', { expected: toHex(purpose), actual: toHex(kc.configDigest) });
  }
  if (kc.protocols !== undefined) throw invalid('its key config offers protocols; a replica key config does not');
  const expected = encodeKeyConfig({ ...fleetBase(fleet), receiptPublicKey: kc.receiptPublicKey, configDigest: purpose, ...(kc.gpus === undefined ? {} : { gpus: kc.gpus }) });
  if (!timingSafeEqualBytes(expected, statementKeyConfig)) throw invalid('its key config differs from the fleet key config in more than the receipt key');
  return Uint8Array.from(kc.receiptPublicKey);
}
