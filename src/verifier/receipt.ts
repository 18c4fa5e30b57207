/**
 * Receipts handed to callers, and the offline check an auditor runs on one (docs/PROTOCOL.md
 * section 4, "Receipts for auditors").
 *
 * A version-1 receipt is the server's Ed25519 signature over
 * "cloister/receipt/v1" || 0x00 || SHA-256(request plaintext) || SHA-256(response chunk
 * plaintexts before the final one). It does not cover the key config, the key id, the
 * model digest or the server time (protocol v2 redesigns receipts); the record below
 * therefore carries the key id and the SHA-256 of the exact key config bytes the client
 * verified, so that an auditor can pick the right evidence and check the signature with that
 * key config's receiptPublicKey. The attestation of that key config is checked separately
 * (`cloister verify EVIDENCE --policy POLICY`): checkReceipt does not verify evidence.
 */
import { createHash } from 'node:crypto';
import { CloisterError } from '../errors.js';
import { concatBytes } from '../core/bytes.js';
import { timingSafeEqualBytes } from '../crypto/ct.js';
import { fromHex, toHex } from '../core/hex.js';
import { decodeKeyConfig, keyConfigDigest } from '../protocol/key-config.js';
import type { KeyConfig } from '../protocol/key-config.js';
import { RECEIPT_LABEL, RECEIPT_SIGNATURE_LENGTH, verifyReceipt } from '../protocol/messages.js';
import { MAX_REPLICA_STATEMENT_BYTES, replicaReceiptKey, replicaStatementDigest } from '../protocol/replica.js';
import { decodeEvidenceFile } from './evidence-file.js';

/** What the SDK hands to the caller for each answered request (ConnectOptions/RequestOptions `onReceipt`). */
export interface ReceiptRecord {
  readonly version: 1;
  /** The OHTTP key id the request was sealed to. */
  readonly keyId: number;
  /** SHA-256 of the exact key config bytes the client verified (the evidence's keyConfig). */
  readonly keyConfigDigest: Uint8Array;
  /** SHA-256 of the sealed request plaintext (the CBOR inner request, section 4). */
  readonly requestDigest: Uint8Array;
  /** SHA-256 of the concatenated response chunk plaintexts before the final chunk. */
  readonly responseDigest: Uint8Array;
  /** The server's Ed25519 signature (64 bytes) from the final `end` chunk. */
  readonly signature: Uint8Array;
  /**
   * A fleet's receipt (key config `replicaReceipts`, src/protocol/replica.ts): the replica that
   * answered. `receiptKey` names it (it signed `signature`); `statement` is its evidence file,
   * which binds that key to the replica's TEE and to the fleet key config.
   */
  readonly replica?: ReplicaReceipt;
}

export interface ReplicaReceipt {
  /** The replica's Ed25519 receipt key, 32 bytes. */
  readonly receiptKey: Uint8Array;
  /** The replica statement: an evidence file over its replica key config. */
  readonly statement: Uint8Array;
}

const DIGEST_LENGTH = 32;

/** The message a version-1 receipt signs, from its two digests. */
function receiptMessage(requestDigest: Uint8Array, responseDigest: Uint8Array): Uint8Array {
  if (requestDigest.byteLength !== DIGEST_LENGTH || responseDigest.byteLength !== DIGEST_LENGTH) {
    throw new CloisterError('INVALID_ARGUMENT', `receipt digests must be ${DIGEST_LENGTH} bytes each`);
  }
  return concatBytes(RECEIPT_LABEL, requestDigest, responseDigest);
}

/** The two digests of a receipt message (what ReceiptHasher.message() returns). */
export function digestsOfReceiptMessage(message: Uint8Array): { requestDigest: Uint8Array; responseDigest: Uint8Array } {
  const at = RECEIPT_LABEL.byteLength;
  if (message.byteLength !== at + 2 * DIGEST_LENGTH || !timingSafeEqualBytes(message.subarray(0, at), RECEIPT_LABEL)) {
    throw new CloisterError('INTERNAL', 'not a version-1 receipt message');
  }
  return { requestDigest: message.slice(at, at + DIGEST_LENGTH), responseDigest: message.slice(at + DIGEST_LENGTH) };
}

/** The digests for a request plaintext and the response chunk plaintexts before the final one (for auditors holding the bytes). */
export function receiptDigests(requestPlaintext: Uint8Array, responseChunks: readonly Uint8Array[]): { requestDigest: Uint8Array; responseDigest: Uint8Array } {
  const response = createHash('sha256');
  for (const c of responseChunks) response.update(c);
  return { requestDigest: new Uint8Array(createHash('sha256').update(requestPlaintext).digest()), responseDigest: new Uint8Array(response.digest()) };
}

export interface CheckReceiptExpect {
  /** The request this receipt must be for (SHA-256 of its plaintext). */
  readonly requestDigest?: Uint8Array;
  /** The response this receipt must be for. */
  readonly responseDigest?: Uint8Array;
}

function invalid(why: string, detail: Record<string, string> = {}): CloisterError {
  return new CloisterError('RECEIPT_INVALID', `receipt: ${why}`, { detail });
}

/**
 * Checks a receipt offline against the exact key config bytes (from an evidence file:
 * `decodeEvidenceFile(bytes).bundle.keyConfig`): the record names that key config (digest
 * and key id), the digests match `expect` where given, and the signature verifies under the
 * key config's receiptPublicKey. Throws RECEIPT_INVALID naming the first mismatch.
 */
export function checkReceipt(record: ReceiptRecord, keyConfigBytes: Uint8Array, expect: CheckReceiptExpect = {}): void {
  if (record.version !== 1) throw invalid(`version ${String(record.version)} is not supported (expected 1)`);
  const digest = keyConfigDigest(keyConfigBytes);
  if (!timingSafeEqualBytes(digest, record.keyConfigDigest)) {
    throw invalid('it names another key config than the evidence holds', { expected: toHex(record.keyConfigDigest), actual: toHex(digest) });
  }
  const kc = decodeKeyConfig(keyConfigBytes);
  if (kc.keyId !== record.keyId) throw invalid(`key id ${record.keyId} does not match the key config's ${kc.keyId}`);
  if (expect.requestDigest !== undefined && !timingSafeEqualBytes(expect.requestDigest, record.requestDigest)) {
    throw invalid('it is for another request (request digest differs)');
  }
  if (expect.responseDigest !== undefined && !timingSafeEqualBytes(expect.responseDigest, record.responseDigest)) {
    throw invalid('it is for another response (response digest differs)');
  }
  const message = receiptMessage(record.requestDigest, record.responseDigest);
  if (kc.replicaReceipts === true) {
    // A fleet: the replica's own key, bound by its statement to this fleet key config.
    if (record.replica === undefined) throw invalid('the key config is a fleet\'s, whose replicas sign receipts with their own keys, and the receipt names no replica');
    const key = replicaKeyOf(kc, record.replica);
    if (!verifyReceipt(key, message, record.signature)) throw invalid('the signature does not verify under the replica\'s receipt key');
    return;
  }
  if (record.replica !== undefined) throw invalid('it names a replica, and the key config is not a fleet\'s');
  if (!verifyReceipt(kc.receiptPublicKey, message, record.signature)) {
    throw invalid('the signature does not verify under the key config\'s receipt key');
  }
}

/**
 * The receipt key a replica statement binds for fleet key config `fleet`, checked against the
 * key the record names (RECEIPT_INVALID when the statement is for another fleet generation or
 * purpose, or binds another key). The statement's evidence is verified separately
 * (verifyEvidence, `cloister receipt verify --policy`).
 */
function replicaKeyOf(fleet: KeyConfig, replica: ReplicaReceipt): Uint8Array {
  let statementKeyConfig: Uint8Array;
  try {
    statementKeyConfig = decodeEvidenceFile(replica.statement).bundle.keyConfig;
  } catch (cause) {
    throw new CloisterError('RECEIPT_INVALID', 'receipt: the replica statement is not an evidence file', { cause });
  }
  const key = replicaReceiptKey(fleet, statementKeyConfig);
  if (!timingSafeEqualBytes(key, replica.receiptKey)) {
    throw invalid('the replica statement binds another receipt key than the receipt names', { expected: toHex(replica.receiptKey), actual: toHex(key) });
  }
  return key;
}

/**
 * JSON form (hex fields), for storing receipts next to an evidence file. A fleet receipt's
 * replica statement is inline (base64), or with `detachStatement` named by its SHA-256
 * (`replica.statementSha256`) and kept once in a file of its own (`statement-<sha256>.cbor`,
 * as the audit directory does), so that thousands of receipts do not repeat a few statements.
 */
export function receiptToJson(record: ReceiptRecord, options: { readonly detachStatement?: boolean } = {}): Record<string, unknown> {
  const r = record.replica;
  return {
    format: 'cloister-receipt',
    version: record.version,
    keyId: record.keyId,
    keyConfigDigest: toHex(record.keyConfigDigest),
    requestDigest: toHex(record.requestDigest),
    responseDigest: toHex(record.responseDigest),
    signature: toHex(record.signature),
    ...(r === undefined
      ? {}
      : {
          replica: options.detachStatement === true
            ? { receiptKey: toHex(r.receiptKey), statementSha256: toHex(replicaStatementDigest(r.statement)) }
            : { receiptKey: toHex(r.receiptKey), statement: Buffer.from(r.statement).toString('base64') },
        }),
  };
}

/** The file name a detached statement is kept under (next to the receipts that name it). */
export function statementFileName(statement: Uint8Array): string {
  return `statement-${toHex(replicaStatementDigest(statement))}.cbor`;
}

/**
 * The lower-case hex SHA-256 a receipt JSON's `replica.statementSha256` names, if it names
 * one (to find its statement file before parsing; receiptFromJson checks the field strictly).
 */
export function detachedStatementOf(json: unknown): string | undefined {
  if (typeof json !== 'object' || json === null) return undefined;
  const replica = (json as Record<string, unknown>)['replica'];
  if (typeof replica !== 'object' || replica === null) return undefined;
  const d = (replica as Record<string, unknown>)['statementSha256'];
  return typeof d === 'string' && /^[0-9a-fA-F]{64}$/.test(d) ? d.toLowerCase() : undefined;
}

const JSON_FIELDS = ['format', 'version', 'keyId', 'keyConfigDigest', 'requestDigest', 'responseDigest', 'signature', 'replica'];
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function replicaFromJson(v: unknown, detachedStatement: Uint8Array | undefined): ReplicaReceipt {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new CloisterError('MALFORMED', 'receipt JSON: replica must be an object');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== 'receiptKey' && k !== 'statement' && k !== 'statementSha256') throw new CloisterError('MALFORMED', `receipt JSON: replica: unknown field ${k}`);
  const key = o['receiptKey'];
  if (typeof key !== 'string') throw new CloisterError('MALFORMED', 'receipt JSON: replica.receiptKey must be a hex string');
  const receiptKey = fromHex(key, 32, 'receipt JSON: replica.receiptKey', 'MALFORMED');
  const statement = o['statement'];
  const detached = o['statementSha256'];
  if ((statement === undefined) === (detached === undefined)) throw new CloisterError('MALFORMED', 'receipt JSON: replica holds exactly one of statement and statementSha256');
  if (detached !== undefined) {
    if (typeof detached !== 'string') throw new CloisterError('MALFORMED', 'receipt JSON: replica.statementSha256 must be a hex string');
    const digest = toHex(fromHex(detached, 32, 'receipt JSON: replica.statementSha256', 'MALFORMED'));
    if (detachedStatement === undefined) throw new CloisterError('NOT_FOUND', `the receipt's replica statement is kept apart (statement-${digest}.cbor) and was not given`, { detail: { file: `statement-${digest}.cbor` } });
    if (toHex(replicaStatementDigest(detachedStatement)) !== digest) throw new CloisterError('RECEIPT_INVALID', `receipt: the statement given does not have the SHA-256 the receipt names (statement-${digest}.cbor)`);
    return { receiptKey, statement: Uint8Array.from(detachedStatement) };
  }
  if (typeof statement !== 'string' || statement.length === 0 || statement.length > Math.ceil(MAX_REPLICA_STATEMENT_BYTES / 3) * 4 || !BASE64_RE.test(statement)) {
    throw new CloisterError('MALFORMED', `receipt JSON: replica.statement must be base64 of 1 to ${MAX_REPLICA_STATEMENT_BYTES} bytes`);
  }
  return { receiptKey, statement: new Uint8Array(Buffer.from(statement, 'base64')) };
}

/**
 * Parses receiptToJson's output strictly (unknown or missing fields, wrong lengths: MALFORMED).
 * A receipt whose replica statement is kept apart needs it as `detachedStatement` (NOT_FOUND
 * without it), with the SHA-256 the receipt names (RECEIPT_INVALID otherwise); a receipt that
 * carries its statement inline ignores it.
 */
export function receiptFromJson(value: unknown, detachedStatement?: Uint8Array): ReceiptRecord {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new CloisterError('MALFORMED', 'receipt JSON must be an object');
  const o = value as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!JSON_FIELDS.includes(k)) throw new CloisterError('MALFORMED', `receipt JSON: unknown field ${k}`);
  if (o['format'] !== 'cloister-receipt') throw new CloisterError('MALFORMED', 'receipt JSON: format must be "cloister-receipt"');
  if (o['version'] !== 1) throw new CloisterError('MALFORMED', 'receipt JSON: version must be 1');
  const keyId = o['keyId'];
  if (typeof keyId !== 'number' || !Number.isInteger(keyId) || keyId < 0 || keyId > 255) throw new CloisterError('MALFORMED', 'receipt JSON: keyId must be an integer 0..255');
  const hex = (k: string, n: number): Uint8Array => {
    const v = o[k];
    if (typeof v !== 'string') throw new CloisterError('MALFORMED', `receipt JSON: ${k} must be a hex string`);
    return fromHex(v, n, `receipt JSON: ${k}`, 'MALFORMED');
  };
  return {
    version: 1,
    keyId,
    keyConfigDigest: hex('keyConfigDigest', DIGEST_LENGTH),
    requestDigest: hex('requestDigest', DIGEST_LENGTH),
    responseDigest: hex('responseDigest', DIGEST_LENGTH),
    signature: hex('signature', RECEIPT_SIGNATURE_LENGTH),
    ...(o['replica'] === undefined ? {} : { replica: replicaFromJson(o['replica'], detachedStatement) }),
  };
}
