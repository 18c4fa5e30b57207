/**
 * Receipts v2 (docs/PROTOCOL.md section 12): a receipt is a leaf in an append-only Merkle log
 * per key generation (RFC 9162 shape, merkle.ts), and the server signs the log's tree head -
 * not each receipt - with the generation's Ed25519 receipt key, on a short period and at
 * session end. A response's final chunk carries its leaf and index and, when the client asks,
 * the inclusion proof to a signed tree head; a client verifies one signature per tree head.
 *
 * The leaf commits to salted hashes of the request and the response (the 32-byte salt comes
 * from the client, so a short prompt cannot be brute-forced from a published leaf; the leaf
 * holds only a commitment to the salt), the model and key config, the policy the server
 * enforced, timestamps and the stream outcome (complete, or aborted after chunk k).
 *
 * Every structure is deterministic CBOR with small integer keys; the decoders are strict
 * (unknown, missing or mistyped fields, wrong lengths, non-canonical encodings and trailing
 * bytes are MALFORMED), so one value has exactly one encoding and a changed byte never
 * decodes to an equal value.
 */
import { createHash } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { CloisterError } from '../errors.js';
import { concatBytes, copyBytes, utf8 } from '../core/bytes.js';
import { timingSafeEqualBytes } from '../crypto/ct.js';
import { decodeCbor, encodeCbor } from '../core/cbor.js';
import type { CborInput, CborKey, CborValue } from '../core/cbor.js';
import { MERKLE_HASH_LENGTH, MAX_PROOF_HASHES, MerkleLog, merkleLeafHash, verifyInclusion } from './merkle.js';
import type { MerkleLogOptions } from './merkle.js';
import { RECEIPT_SIGNATURE_LENGTH, signReceipt, verifyReceipt } from './messages.js';

export const RECEIPT_V2_VERSION = 2;
/** The client's receipt salt: exactly 32 random bytes per request. */
export const RECEIPT_SALT_LENGTH = 32;
const DIGEST = 32;
/** Longest text field in a leaf (model name, engine, route, error code), UTF-8 bytes. */
export const MAX_LEAF_TEXT_BYTES = 256;
/** A leaf's session field: a sessionCommitment, exactly 32 bytes. */
export const SESSION_COMMITMENT_BYTES = 32;
/** Largest encoded leaf, tree head, signed tree head or end receipt accepted by the decoders. */
export const MAX_RECEIPT_V2_BYTES = 8 * 1024;

const LABEL_REQUEST = utf8('cloister/receipt/v2 request\0');
const LABEL_RESPONSE = utf8('cloister/receipt/v2 response\0');
const LABEL_SALT = utf8('cloister/receipt/v2 salt\0');
const LABEL_SESSION = utf8('cloister/receipt/v2 session\0');
/** Signed message = this label || the encoded tree head. */
export const TREE_HEAD_LABEL = utf8('cloister/tree-head/v2\0');

function bad(what: string, why: string): CloisterError {
  return new CloisterError('MALFORMED', `${what}: ${why}`, { detail: { field: what } });
}

function checkSalt(salt: Uint8Array): void {
  if (!(salt instanceof Uint8Array) || salt.byteLength !== RECEIPT_SALT_LENGTH) {
    throw new CloisterError('INVALID_ARGUMENT', `a receipt salt is exactly ${RECEIPT_SALT_LENGTH} bytes`);
  }
}

/** SHA-256("cloister/receipt/v2 request\0" || salt || request plaintext). */
export function saltedRequestHash(salt: Uint8Array, requestPlaintext: Uint8Array): Uint8Array {
  checkSalt(salt);
  return new Uint8Array(createHash('sha256').update(LABEL_REQUEST).update(salt).update(requestPlaintext).digest());
}

/** SHA-256("cloister/receipt/v2 salt\0" || salt): what a leaf holds instead of the salt. */
export function saltCommitment(salt: Uint8Array): Uint8Array {
  checkSalt(salt);
  return new Uint8Array(createHash('sha256').update(LABEL_SALT).update(salt).digest());
}

/** A session's receipt salt: 32 bytes both ends derive from the session secret (session.ts). */
export const SESSION_SALT_LENGTH = 32;

/**
 * SHA-256("cloister/receipt/v2 session\0" || session salt || I2OSP(seq, 8)): what a leaf of a
 * session request holds (field 11). Without the session's salt (only the client and the
 * server derive it) the leaves of one session cannot be linked to each other or to the
 * session id seen on the wire; with it, an auditor recomputes each leaf's value from the
 * salt and the request's sequence number and sees which receipts came from one session.
 */
export function sessionCommitment(sessionSalt: Uint8Array, seq: number): Uint8Array {
  if (!(sessionSalt instanceof Uint8Array) || sessionSalt.byteLength !== SESSION_SALT_LENGTH) {
    throw new CloisterError('INVALID_ARGUMENT', `a session salt is exactly ${SESSION_SALT_LENGTH} bytes`);
  }
  if (!Number.isSafeInteger(seq) || seq < 1) throw new CloisterError('INVALID_ARGUMENT', 'a session sequence number is a positive integer');
  const n = Buffer.alloc(8);
  n.writeBigUInt64BE(BigInt(seq));
  return new Uint8Array(createHash('sha256').update(LABEL_SESSION).update(sessionSalt).update(n).digest());
}

/** What ties a receipt to its session: the session's salt and the request's sequence number. */
export interface SessionLink {
  readonly salt: Uint8Array;
  readonly seq: number;
}

/**
 * SHA-256("cloister/receipt/v2 response\0" || salt || every response chunk plaintext before
 * the final one, in order). Each chunk plaintext is one CBOR item, so the concatenation is
 * unambiguous. Server and client each run one over the chunks they sealed / opened.
 */
export class SaltedResponseHasher {
  readonly #hash = createHash('sha256');
  #chunks = 0;
  #done = false;
  constructor(salt: Uint8Array) {
    checkSalt(salt);
    this.#hash.update(LABEL_RESPONSE).update(salt);
  }
  update(chunkPlaintext: Uint8Array): void {
    if (this.#done) throw new CloisterError('PROTOCOL_VIOLATION', 'response hash already computed');
    this.#hash.update(chunkPlaintext);
    this.#chunks += 1;
  }
  /** Chunks hashed so far (the `k` of an aborted outcome). */
  get chunks(): number {
    return this.#chunks;
  }
  digest(): Uint8Array {
    if (this.#done) throw new CloisterError('PROTOCOL_VIOLATION', 'response hash already computed');
    this.#done = true;
    return new Uint8Array(this.#hash.digest());
  }
}

/** Over every response chunk plaintext at once (auditors holding the bytes). */
export function saltedResponseHash(salt: Uint8Array, chunks: readonly Uint8Array[]): Uint8Array {
  const h = new SaltedResponseHasher(salt);
  for (const c of chunks) h.update(c);
  return h.digest();
}

// --- The leaf ---------------------------------------------------------------------------

/** What the server enforced for this request. */
export interface EnforcedPolicy {
  /** Data handling: only "none" (nothing about content is kept) is defined. */
  readonly retention: 'none';
  /** Engine identity, e.g. "onnx" or "upstream vllm <model> <image digest>". */
  readonly engine: string;
  /** The routing decision, e.g. "local" or "upstream". */
  readonly route: string;
}

export type StreamOutcome =
  | { readonly status: 'complete'; readonly chunks: number }
  /** The response ended after `chunks` chunks (in-band: an error chunk follows them), with `code`. */
  | { readonly status: 'aborted'; readonly chunks: number; readonly code: string };

export interface ReceiptLeaf {
  readonly version: 2;
  /** SHA-256 of the exact key config bytes of the generation that served the request. */
  readonly keyConfigDigest: Uint8Array;
  /** The model served, and its digest from the key config. */
  readonly model: { readonly name: string; readonly digest: Uint8Array };
  readonly requestHash: Uint8Array;
  readonly responseHash: Uint8Array;
  /** saltCommitment(salt). */
  readonly saltCommitment: Uint8Array;
  readonly policy: EnforcedPolicy;
  /** Server time the request was opened, and the final chunk sealed (Unix ms). */
  readonly receivedAt: number;
  readonly completedAt: number;
  readonly outcome: StreamOutcome;
  /** The request came in a session: sessionCommitment(session salt, sequence number). */
  readonly session?: Uint8Array;
}

const LEAF_KEYS = { version: 1, keyConfigDigest: 2, model: 3, requestHash: 4, responseHash: 5, saltCommitment: 6, policy: 7, receivedAt: 8, completedAt: 9, outcome: 10, session: 11 } as const;

function checkMap(v: CborValue | undefined, what: string, required: readonly CborKey[], optional: readonly CborKey[] = []): Map<CborKey, CborValue> {
  if (!(v instanceof Map)) throw bad(what, 'must be a map');
  for (const k of v.keys()) if (!required.includes(k) && !optional.includes(k)) throw bad(what, `unknown key ${String(k)}`);
  for (const k of required) if (!v.has(k)) throw bad(what, `missing key ${String(k)}`);
  return v;
}
function checkBytes(v: CborValue | undefined, what: string, len: number): Uint8Array {
  if (!(v instanceof Uint8Array) || v.byteLength !== len) throw bad(what, `must be ${len} bytes`);
  return v;
}
function checkText(v: CborValue | undefined, what: string): string {
  if (typeof v !== 'string' || v.length === 0 || Buffer.byteLength(v) > MAX_LEAF_TEXT_BYTES) throw bad(what, `must be text of 1 to ${MAX_LEAF_TEXT_BYTES} bytes`);
  return v;
}
function checkUint(v: CborValue | undefined, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw bad(what, 'must be an unsigned integer');
  return v;
}

function validateLeaf(l: ReceiptLeaf, err: (what: string, why: string) => CloisterError): void {
  if (l.version !== RECEIPT_V2_VERSION) throw err('leaf.version', `must be ${RECEIPT_V2_VERSION}`);
  for (const [k, v] of [['keyConfigDigest', l.keyConfigDigest], ['model.digest', l.model.digest], ['requestHash', l.requestHash], ['responseHash', l.responseHash], ['saltCommitment', l.saltCommitment]] as const) {
    if (!(v instanceof Uint8Array) || v.byteLength !== DIGEST) throw err(`leaf.${k}`, `must be ${DIGEST} bytes`);
  }
  for (const [k, v] of [['model.name', l.model.name], ['policy.engine', l.policy.engine], ['policy.route', l.policy.route]] as const) {
    if (typeof v !== 'string' || v.length === 0 || Buffer.byteLength(v) > MAX_LEAF_TEXT_BYTES) throw err(`leaf.${k}`, `must be text of 1 to ${MAX_LEAF_TEXT_BYTES} bytes`);
  }
  if (l.policy.retention !== 'none') throw err('leaf.policy.retention', 'only "none" is defined');
  for (const [k, v] of [['receivedAt', l.receivedAt], ['completedAt', l.completedAt], ['outcome.chunks', l.outcome.chunks]] as const) {
    if (!Number.isSafeInteger(v) || v < 0) throw err(`leaf.${k}`, 'must be an unsigned integer');
  }
  if (l.completedAt < l.receivedAt) throw err('leaf.completedAt', 'is before receivedAt');
  if (l.outcome.status !== 'complete' && l.outcome.status !== 'aborted') throw err('leaf.outcome.status', 'must be "complete" or "aborted"');
  if (l.outcome.status === 'aborted') {
    const code = l.outcome.code;
    if (typeof code !== 'string' || !/^[A-Z][A-Z_]{0,63}$/.test(code)) throw err('leaf.outcome.code', 'must be an error code');
  }
  if (l.session !== undefined && (!(l.session instanceof Uint8Array) || l.session.byteLength !== SESSION_COMMITMENT_BYTES)) {
    throw err('leaf.session', `must be ${SESSION_COMMITMENT_BYTES} bytes (a session commitment)`);
  }
}

export function encodeReceiptLeaf(l: ReceiptLeaf): Uint8Array {
  validateLeaf(l, (what, why) => new CloisterError('INVALID_ARGUMENT', `${what}: ${why}`));
  const k = LEAF_KEYS;
  return encodeCbor(new Map<CborKey, CborInput>([
    [k.version, RECEIPT_V2_VERSION],
    [k.keyConfigDigest, l.keyConfigDigest],
    [k.model, new Map<CborKey, CborInput>([[1, l.model.name], [2, l.model.digest]])],
    [k.requestHash, l.requestHash],
    [k.responseHash, l.responseHash],
    [k.saltCommitment, l.saltCommitment],
    [k.policy, new Map<CborKey, CborInput>([[1, l.policy.retention], [2, l.policy.engine], [3, l.policy.route]])],
    [k.receivedAt, l.receivedAt],
    [k.completedAt, l.completedAt],
    [k.outcome, new Map<CborKey, CborInput>([[1, l.outcome.status], [2, l.outcome.chunks], ...(l.outcome.status === 'aborted' ? [[3, l.outcome.code] as [CborKey, CborInput]] : [])])],
    ...(l.session === undefined ? [] : [[k.session, l.session] as [CborKey, CborInput]]),
  ]));
}

function decodeStrict(bytes: Uint8Array, what: string): CborValue {
  if (!(bytes instanceof Uint8Array)) throw new CloisterError('INVALID_ARGUMENT', `${what} must be bytes`);
  if (bytes.byteLength > MAX_RECEIPT_V2_BYTES) {
    throw new CloisterError('LIMIT_EXCEEDED', `${what} of ${bytes.byteLength} bytes exceeds MAX_RECEIPT_V2_BYTES = ${MAX_RECEIPT_V2_BYTES}`);
  }
  try {
    return decodeCbor(bytes, { maxDepth: 4, maxItems: 4 * MAX_PROOF_HASHES + 64, maxBytes: MAX_RECEIPT_V2_BYTES });
  } catch (cause) {
    throw new CloisterError('MALFORMED', `${what} is not canonical CBOR: ${cause instanceof Error ? cause.message : 'unknown'}`, { cause });
  }
}

/** Strict decoding of an encoded leaf. */
export function decodeReceiptLeaf(bytes: Uint8Array): ReceiptLeaf {
  const k = LEAF_KEYS;
  const m = checkMap(decodeStrict(bytes, 'receipt leaf'), 'leaf', [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [11]);
  if (m.get(k.version) !== RECEIPT_V2_VERSION) {
    throw new CloisterError('VERSION_UNSUPPORTED', `receipt leaf version ${String(m.get(k.version))} (this side reads ${RECEIPT_V2_VERSION})`);
  }
  const model = checkMap(m.get(k.model), 'leaf.model', [1, 2]);
  const policy = checkMap(m.get(k.policy), 'leaf.policy', [1, 2, 3]);
  const outcome = checkMap(m.get(k.outcome), 'leaf.outcome', [1, 2], [3]);
  const status = outcome.get(1);
  const chunks = checkUint(outcome.get(2), 'leaf.outcome.chunks');
  let out: StreamOutcome;
  if (status === 'complete') {
    if (outcome.has(3)) throw bad('leaf.outcome', 'a complete outcome has no code');
    out = { status, chunks };
  } else if (status === 'aborted') {
    const code = outcome.get(3);
    if (typeof code !== 'string') throw bad('leaf.outcome.code', 'an aborted outcome names its code');
    out = { status, chunks, code };
  } else {
    throw bad('leaf.outcome.status', 'must be "complete" or "aborted"');
  }
  const retention = policy.get(1);
  if (retention !== 'none') throw bad('leaf.policy.retention', 'only "none" is defined');
  const rawSession = m.get(k.session);
  const session = rawSession === undefined ? undefined : checkBytes(rawSession, 'leaf.session', SESSION_COMMITMENT_BYTES);
  const leaf: ReceiptLeaf = {
    version: RECEIPT_V2_VERSION,
    keyConfigDigest: checkBytes(m.get(k.keyConfigDigest), 'leaf.keyConfigDigest', DIGEST),
    model: { name: checkText(model.get(1), 'leaf.model.name'), digest: checkBytes(model.get(2), 'leaf.model.digest', DIGEST) },
    requestHash: checkBytes(m.get(k.requestHash), 'leaf.requestHash', DIGEST),
    responseHash: checkBytes(m.get(k.responseHash), 'leaf.responseHash', DIGEST),
    saltCommitment: checkBytes(m.get(k.saltCommitment), 'leaf.saltCommitment', DIGEST),
    policy: { retention, engine: checkText(policy.get(2), 'leaf.policy.engine'), route: checkText(policy.get(3), 'leaf.policy.route') },
    receivedAt: checkUint(m.get(k.receivedAt), 'leaf.receivedAt'),
    completedAt: checkUint(m.get(k.completedAt), 'leaf.completedAt'),
    outcome: out,
    ...(session === undefined ? {} : { session }),
  };
  validateLeaf(leaf, bad);
  return leaf;
}

// --- Tree heads ---------------------------------------------------------------------------

export interface TreeHead {
  readonly version: 2;
  /** The key generation whose log this is (SHA-256 of its exact key config bytes). */
  readonly keyConfigDigest: Uint8Array;
  readonly treeSize: number;
  readonly rootHash: Uint8Array;
  /** Server time of signing, Unix ms. */
  readonly timestamp: number;
}

export interface SignedTreeHead {
  /** The encoded tree head (what is signed, after TREE_HEAD_LABEL). */
  readonly head: Uint8Array;
  readonly signature: Uint8Array;
}

export function encodeTreeHead(h: TreeHead): Uint8Array {
  if (h.version !== RECEIPT_V2_VERSION) throw new CloisterError('INVALID_ARGUMENT', 'tree head version must be 2');
  if (h.keyConfigDigest.byteLength !== DIGEST || h.rootHash.byteLength !== MERKLE_HASH_LENGTH) throw new CloisterError('INVALID_ARGUMENT', 'tree head digests are 32 bytes');
  if (!Number.isSafeInteger(h.treeSize) || h.treeSize < 0 || !Number.isSafeInteger(h.timestamp) || h.timestamp < 0) {
    throw new CloisterError('INVALID_ARGUMENT', 'tree head size and timestamp are unsigned integers');
  }
  return encodeCbor(new Map<CborKey, CborInput>([[1, RECEIPT_V2_VERSION], [2, h.keyConfigDigest], [3, h.treeSize], [4, h.rootHash], [5, h.timestamp]]));
}

export function decodeTreeHead(bytes: Uint8Array): TreeHead {
  const m = checkMap(decodeStrict(bytes, 'tree head'), 'treeHead', [1, 2, 3, 4, 5]);
  if (m.get(1) !== RECEIPT_V2_VERSION) throw new CloisterError('VERSION_UNSUPPORTED', `tree head version ${String(m.get(1))} (this side reads ${RECEIPT_V2_VERSION})`);
  return {
    version: RECEIPT_V2_VERSION,
    keyConfigDigest: checkBytes(m.get(2), 'treeHead.keyConfigDigest', DIGEST),
    treeSize: checkUint(m.get(3), 'treeHead.treeSize'),
    rootHash: checkBytes(m.get(4), 'treeHead.rootHash', MERKLE_HASH_LENGTH),
    timestamp: checkUint(m.get(5), 'treeHead.timestamp'),
  };
}

export function treeHeadMessage(head: Uint8Array): Uint8Array {
  return concatBytes(TREE_HEAD_LABEL, head);
}

export function encodeSignedTreeHead(s: SignedTreeHead): Uint8Array {
  if (s.signature.byteLength !== RECEIPT_SIGNATURE_LENGTH) throw new CloisterError('INVALID_ARGUMENT', 'a tree head signature is 64 bytes');
  decodeTreeHead(s.head);
  return encodeCbor(new Map<CborKey, CborInput>([[1, s.head], [2, s.signature]]));
}

export function decodeSignedTreeHead(bytes: Uint8Array): SignedTreeHead {
  const m = checkMap(decodeStrict(bytes, 'signed tree head'), 'signedTreeHead', [1, 2]);
  const head = m.get(1);
  if (!(head instanceof Uint8Array)) throw bad('signedTreeHead.head', 'must be bytes');
  decodeTreeHead(head);
  return { head, signature: checkBytes(m.get(2), 'signedTreeHead.signature', RECEIPT_SIGNATURE_LENGTH) };
}

/** Signs a tree head with a receipt key (Ed25519). */
export function signTreeHead(privateKey: KeyObject | ((message: Uint8Array) => Uint8Array), h: TreeHead): SignedTreeHead {
  const head = encodeTreeHead(h);
  const message = treeHeadMessage(head);
  const signature = typeof privateKey === 'function' ? privateKey(message) : signReceipt(privateKey, message);
  return { head, signature };
}

/**
 * Verifies signed tree heads of one key generation: the signature under its receipt key,
 * the key config digest, once per distinct head (a bounded cache of verified heads, so a
 * client verifies one signature per tree head, not per request). RECEIPT_INVALID otherwise.
 */
export class TreeHeadVerifier {
  readonly #publicKey: Uint8Array;
  readonly #keyConfigDigest: Uint8Array;
  readonly #maxCached: number;
  readonly #verified = new Map<string, TreeHead>();
  /** Signatures checked so far (tests and benchmarks count them). */
  signaturesVerified = 0;

  constructor(receiptPublicKey: Uint8Array, keyConfigDigest: Uint8Array, options: { readonly maxCached?: number } = {}) {
    if (receiptPublicKey.byteLength !== 32 || keyConfigDigest.byteLength !== DIGEST) throw new CloisterError('INVALID_ARGUMENT', 'receipt key and key config digest are 32 bytes');
    this.#publicKey = copyBytes(receiptPublicKey);
    this.#keyConfigDigest = copyBytes(keyConfigDigest);
    this.#maxCached = options.maxCached ?? 64;
    if (!Number.isSafeInteger(this.#maxCached) || this.#maxCached < 1) throw new CloisterError('CONFIG_INVALID', 'maxCached must be a positive integer');
  }

  verify(sth: SignedTreeHead): TreeHead {
    const key = Buffer.from(concatBytes(sth.head, sth.signature)).toString('base64');
    const cached = this.#verified.get(key);
    if (cached !== undefined) return cached;
    const head = decodeTreeHead(sth.head);
    if (!timingSafeEqualBytes(head.keyConfigDigest, this.#keyConfigDigest)) {
      throw new CloisterError('RECEIPT_INVALID', 'the tree head is for another key config', { detail: { step: 'tree-head' } });
    }
    this.signaturesVerified += 1;
    if (!verifyReceipt(this.#publicKey, treeHeadMessage(sth.head), sth.signature)) {
      throw new CloisterError('RECEIPT_INVALID', 'the tree head signature does not verify under the key config\'s receipt key', { detail: { step: 'tree-head' } });
    }
    if (this.#verified.size >= this.#maxCached) {
      const oldest = this.#verified.keys().next().value;
      if (oldest !== undefined) this.#verified.delete(oldest);
    }
    this.#verified.set(key, head);
    return head;
  }
}

// --- What the final chunk carries ----------------------------------------------------------

export interface InclusionProof {
  /** The signed tree head the proof leads to. */
  readonly treeHead: SignedTreeHead;
  /** PATH(index, D[treeSize]) (RFC 9162 section 2.1.3.1). */
  readonly path: readonly Uint8Array[];
}

/** The receipt in a v2 final chunk: the leaf, its index in the log, and (when asked) the proof. */
export interface EndReceipt {
  readonly leaf: Uint8Array;
  readonly index: number;
  readonly proof?: InclusionProof;
}

function checkPath(v: CborValue | undefined, what: string): Uint8Array[] {
  if (!Array.isArray(v) || v.length > MAX_PROOF_HASHES) throw bad(what, `must be an array of at most ${MAX_PROOF_HASHES} hashes`);
  return v.map((h) => checkBytes(h, what, MERKLE_HASH_LENGTH));
}

export function encodeEndReceipt(r: EndReceipt): Uint8Array {
  decodeReceiptLeaf(r.leaf);
  if (!Number.isSafeInteger(r.index) || r.index < 0) throw new CloisterError('INVALID_ARGUMENT', 'leaf index must be an unsigned integer');
  const proof = r.proof === undefined ? undefined : new Map<CborKey, CborInput>([[1, r.proof.treeHead.head], [2, r.proof.treeHead.signature], [3, [...r.proof.path]]]);
  return encodeCbor(new Map<CborKey, CborInput>([[1, r.leaf], [2, r.index], ...(proof === undefined ? [] : [[3, proof] as [CborKey, CborInput]])]));
}

export function decodeEndReceipt(bytes: Uint8Array): EndReceipt {
  const m = checkMap(decodeStrict(bytes, 'end receipt'), 'receipt', [1, 2], [3]);
  const leaf = m.get(1);
  if (!(leaf instanceof Uint8Array)) throw bad('receipt.leaf', 'must be bytes');
  decodeReceiptLeaf(leaf);
  const index = checkUint(m.get(2), 'receipt.index');
  const p = m.get(3);
  if (p === undefined) return { leaf, index };
  const pm = checkMap(p, 'receipt.proof', [1, 2, 3]);
  const head = pm.get(1);
  if (!(head instanceof Uint8Array)) throw bad('receipt.proof.head', 'must be bytes');
  decodeTreeHead(head);
  return { leaf, index, proof: { treeHead: { head, signature: checkBytes(pm.get(2), 'receipt.proof.signature', RECEIPT_SIGNATURE_LENGTH) }, path: checkPath(pm.get(3), 'receipt.proof.path') } };
}

/** What a client expects of a leaf it received for its own request. */
export interface LeafExpectation {
  readonly keyConfigDigest: Uint8Array;
  readonly salt: Uint8Array;
  /** saltedRequestHash(salt, the request plaintext it sealed). */
  readonly requestHash: Uint8Array;
  /** The salted hash over the response chunks it opened. */
  readonly responseHash: Uint8Array;
  /** The model it asked for, and that model's digest in the verified key config. */
  readonly model: { readonly name: string; readonly digest: Uint8Array };
  /** Chunks it opened before the final one. */
  readonly chunks: number;
  /** Whether the response ended in an error chunk (aborted) or not. */
  readonly aborted: boolean;
  readonly session?: Uint8Array;
}

function invalid(why: string): CloisterError {
  return new CloisterError('RECEIPT_INVALID', `receipt: ${why}`, { detail: { step: 'leaf' } });
}

/**
 * Checks that a leaf describes exactly the exchange the client saw: same key config, salt,
 * request and response hashes, model, chunk count and outcome, session. RECEIPT_INVALID
 * names the first difference.
 */
export function checkLeaf(leafBytes: Uint8Array, expect: LeafExpectation): ReceiptLeaf {
  const leaf = decodeReceiptLeaf(leafBytes);
  if (!timingSafeEqualBytes(leaf.keyConfigDigest, expect.keyConfigDigest)) throw invalid('the leaf names another key config');
  if (!timingSafeEqualBytes(leaf.saltCommitment, saltCommitment(expect.salt))) throw invalid('the leaf commits to another salt');
  if (!timingSafeEqualBytes(leaf.requestHash, expect.requestHash)) throw invalid('the leaf is for another request');
  if (!timingSafeEqualBytes(leaf.responseHash, expect.responseHash)) throw invalid('the leaf is for another response');
  if (leaf.model.name !== expect.model.name || !timingSafeEqualBytes(leaf.model.digest, expect.model.digest)) throw invalid('the leaf names another model');
  if (leaf.outcome.chunks !== expect.chunks) throw invalid(`the leaf counts ${leaf.outcome.chunks} chunks, the client opened ${expect.chunks}`);
  if ((leaf.outcome.status === 'aborted') !== expect.aborted) throw invalid(`the leaf says ${leaf.outcome.status}, the client saw ${expect.aborted ? 'an error' : 'a complete answer'}`);
  const s = expect.session;
  if ((s === undefined) !== (leaf.session === undefined) || (s !== undefined && leaf.session !== undefined && !timingSafeEqualBytes(s, leaf.session))) {
    throw invalid('the leaf names another session');
  }
  return leaf;
}

/** Checks an inclusion proof of a leaf to a signed tree head (verified through `verifier`). */
export function checkInclusion(verifier: TreeHeadVerifier, leaf: Uint8Array, index: number, proof: InclusionProof): TreeHead {
  const head = verifier.verify(proof.treeHead);
  if (!verifyInclusion(index, head.treeSize, merkleLeafHash(leaf), proof.path, head.rootHash)) {
    throw new CloisterError('RECEIPT_INVALID', `receipt: the inclusion proof of leaf ${index} does not lead to the signed tree head of size ${head.treeSize}`, { detail: { step: 'inclusion' } });
  }
  return head;
}

// --- The server's log, one per key generation --------------------------------------------

/** Default period between signed tree heads (`ReceiptLogOptions.treeHeadIntervalMs`). */
export const DEFAULT_TREE_HEAD_INTERVAL_MS = 1000;
/** Default number of signed tree heads kept for later proofs (`ReceiptLogOptions.maxRetainedHeads`). */
export const DEFAULT_MAX_RETAINED_HEADS = 4096;

export interface ReceiptLogOptions extends MerkleLogOptions {
  /** Sign a new tree head at most this often when leaves were added (`headIfDue`). Default 1000 ms. */
  readonly treeHeadIntervalMs?: number;
  /** Signed tree heads kept (oldest dropped first). Default 4096. */
  readonly maxRetainedHeads?: number;
  readonly now?: () => number;
}

/**
 * The server side: one append-only log per key generation, tree heads signed with that
 * generation's receipt key. Signatures are amortised: `headIfDue` signs at most once per
 * `treeHeadIntervalMs`, `signHead` on demand (session end, a proof asked for in-band).
 */
export class ReceiptLog {
  readonly #log: MerkleLog;
  readonly #sign: (message: Uint8Array) => Uint8Array;
  readonly #keyConfigDigest: Uint8Array;
  readonly #intervalMs: number;
  readonly #maxHeads: number;
  readonly #now: () => number;
  readonly #heads: { readonly size: number; readonly sth: SignedTreeHead }[] = [];
  /** Tree heads signed so far (tests and benchmarks count them). */
  signatures = 0;

  constructor(keyConfigDigest: Uint8Array, sign: (message: Uint8Array) => Uint8Array, options: ReceiptLogOptions = {}) {
    if (keyConfigDigest.byteLength !== DIGEST) throw new CloisterError('INVALID_ARGUMENT', 'key config digest is 32 bytes');
    this.#log = new MerkleLog(options);
    this.#sign = sign;
    this.#keyConfigDigest = copyBytes(keyConfigDigest);
    this.#intervalMs = options.treeHeadIntervalMs ?? DEFAULT_TREE_HEAD_INTERVAL_MS;
    this.#maxHeads = options.maxRetainedHeads ?? DEFAULT_MAX_RETAINED_HEADS;
    this.#now = options.now ?? Date.now;
    if (!Number.isSafeInteger(this.#intervalMs) || this.#intervalMs < 1) throw new CloisterError('CONFIG_INVALID', 'treeHeadIntervalMs must be a positive integer');
    if (!Number.isSafeInteger(this.#maxHeads) || this.#maxHeads < 1) throw new CloisterError('CONFIG_INVALID', 'maxRetainedHeads must be a positive integer');
  }

  get size(): number {
    return this.#log.size;
  }

  /** The key config (generation) whose log this is. */
  get keyConfigDigest(): Uint8Array {
    return this.#keyConfigDigest.slice();
  }

  /** Appends an encoded leaf (strictly decoded first); returns its index. LIMIT_EXCEEDED when full. */
  append(leaf: Uint8Array): number {
    const l = decodeReceiptLeaf(leaf);
    if (!timingSafeEqualBytes(l.keyConfigDigest, this.#keyConfigDigest)) throw new CloisterError('INTERNAL', 'a leaf of another key generation');
    return this.#log.append(leaf);
  }

  /** The newest signed tree head, if any. */
  latest(): SignedTreeHead | undefined {
    return this.#heads[this.#heads.length - 1]?.sth;
  }

  /** Signs a head over every leaf so far (returns the newest one when nothing was added). */
  signHead(): SignedTreeHead {
    const last = this.#heads[this.#heads.length - 1];
    if (last !== undefined && last.size === this.#log.size) return last.sth;
    const sth = signTreeHead(this.#sign, { version: RECEIPT_V2_VERSION, keyConfigDigest: this.#keyConfigDigest, treeSize: this.#log.size, rootHash: this.#log.root(), timestamp: this.#now() });
    this.signatures += 1;
    this.#heads.push({ size: this.#log.size, sth });
    if (this.#heads.length > this.#maxHeads) this.#heads.shift();
    return sth;
  }

  /** The periodic head: signs when leaves were added and the interval passed since the last one. */
  headIfDue(): SignedTreeHead | undefined {
    const last = this.#heads[this.#heads.length - 1];
    if (last !== undefined && last.size === this.#log.size) return undefined;
    if (last !== undefined && this.#now() - decodeTreeHead(last.sth.head).timestamp < this.#intervalMs) return undefined;
    return this.#log.size === 0 ? undefined : this.signHead();
  }

  /** The inclusion proof of leaf `index` to the newest retained head covering it (signing one if none does). */
  proofFor(index: number): InclusionProof {
    let head = this.latest();
    let size = this.#heads[this.#heads.length - 1]?.size ?? 0;
    if (head === undefined || index >= size) {
      head = this.signHead();
      size = this.#log.size;
    }
    return { treeHead: head, path: this.#log.inclusionProof(index, size) };
  }

  /** PATH(index, D[size]) for a later proof request (to a head of `size` the client holds). */
  inclusionProof(index: number, size: number): Uint8Array[] {
    return this.#log.inclusionProof(index, size);
  }

  /** PROOF(first, D[second]) between two sizes (both at most the log's size). */
  consistencyProof(first: number, second: number): Uint8Array[] {
    return this.#log.consistencyProof(first, second);
  }
}
