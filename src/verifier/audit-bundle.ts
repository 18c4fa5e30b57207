/**
 * The audit bundle (docs/PROTOCOL.md section 12, "Audit bundles"): everything an auditor needs,
 * offline, to check what a server did for one request or one session - the evidence file
 * (evidence, key config, SNP certificates / TDX collateral, nonce), the signed tree heads, each
 * receipt leaf with its index, the client's salt and its inclusion proof, and the consistency
 * proofs that chain the tree heads. `cloister audit export` writes one, `cloister audit verify`
 * (audit.ts) checks it.
 *
 * And the audit record: what the client keeps per answered request (leaf, index, salt, the
 * inclusion proof to a signed tree head, and any consistency proofs it obtained), from which a
 * bundle is built.
 *
 * Both are deterministic CBOR maps with text keys, decoded strictly (unknown or missing fields,
 * wrong types or lengths, non-canonical encodings, trailing bytes: MALFORMED), so every byte of
 * a bundle is either fixed by the format or checked by verification.
 */
import { CloisterError } from '../errors.js';
import { decodeEvidenceFile, MAX_EVIDENCE_FILE_BYTES } from './evidence-file.js';
import { decodeCbor, encodeCbor } from '../core/cbor.js';
import type { CborInput, CborValue } from '../core/cbor.js';
import { MAX_PROOF_HASHES, MERKLE_HASH_LENGTH } from '../protocol/merkle.js';
import {
  RECEIPT_SALT_LENGTH,
  SESSION_SALT_LENGTH,
  decodeReceiptLeaf,
  decodeSignedTreeHead,
  decodeTreeHead,
  encodeSignedTreeHead,
} from '../protocol/receipt-v2.js';
import type { InclusionProof, SessionLink, SignedTreeHead } from '../protocol/receipt-v2.js';

export const AUDIT_BUNDLE_FORMAT = 'cloister-audit';
export const AUDIT_RECORD_FORMAT = 'cloister-audit-record';
export const AUDIT_BUNDLE_VERSION = 1;
/** Most receipts in one bundle (a session's worth). */
export const MAX_AUDIT_ENTRIES = 4096;
/** Most signed tree heads in one bundle. */
export const MAX_AUDIT_HEADS = 256;
/** Largest bundle read or written. */
export const MAX_AUDIT_BUNDLE_BYTES = MAX_EVIDENCE_FILE_BYTES + 8 * 1024 * 1024;
/** Largest audit record read. */
export const MAX_AUDIT_RECORD_BYTES = 64 * 1024;

/** A consistency proof between two tree sizes of one log. */
export interface ConsistencyProof {
  readonly first: number;
  readonly second: number;
  readonly path: readonly Uint8Array[];
}

/** What a client keeps per answered request. */
export interface AuditRecord {
  readonly leaf: Uint8Array;
  readonly index: number;
  readonly salt: Uint8Array;
  /**
   * The inclusion proof to a signed tree head; absent for a receipt that came without it
   * (`cloister audit export --server URL` or `client.proofFor` fetches it later).
   */
  readonly proof?: InclusionProof;
  /** Consistency proofs the client obtained (e.g. from its previous tree head to this one). */
  readonly consistency?: readonly ConsistencyProof[];
  /** The request came in a session: its session salt and sequence number (the leaf commits to them). */
  readonly session?: SessionLink;
}

export interface AuditEntry {
  readonly leaf: Uint8Array;
  readonly index: number;
  readonly salt: Uint8Array;
  /** Index into `heads` of the head the proof leads to. */
  readonly head: number;
  readonly path: readonly Uint8Array[];
  /** The session link (salt, sequence number) when the client disclosed it. */
  readonly session?: SessionLink;
}

export interface AuditBundle {
  /** An evidence file (format version 1), as `cloister attest --out` and the SDK write it. */
  readonly evidence: Uint8Array;
  /** Encoded signed tree heads, in strictly ascending tree size. */
  readonly heads: readonly Uint8Array[];
  /** Receipts, in strictly ascending leaf index. */
  readonly entries: readonly AuditEntry[];
  /** consistency[i]: the proof from heads[i] to heads[i + 1]. */
  readonly consistency: readonly (readonly Uint8Array[])[];
}

function bad(what: string, why: string): CloisterError {
  return new CloisterError('MALFORMED', `audit ${what}: ${why}`, { detail: { field: what } });
}

function strictMap(v: CborValue, what: string, required: readonly string[], optional: readonly string[] = []): Map<string, CborValue> {
  if (!(v instanceof Map)) throw bad(what, 'must be a map');
  for (const k of v.keys()) if (typeof k !== 'string' || (!required.includes(k) && !optional.includes(k))) throw bad(what, `unknown field ${String(k)}`);
  for (const k of required) if (!v.has(k)) throw bad(what, `missing field ${k}`);
  return v as Map<string, CborValue>;
}
function bytesOf(v: CborValue | undefined, what: string, len?: number): Uint8Array {
  if (!(v instanceof Uint8Array) || (len !== undefined && v.byteLength !== len)) throw bad(what, len === undefined ? 'must be bytes' : `must be ${len} bytes`);
  return v;
}
function uintOf(v: CborValue | undefined, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw bad(what, 'must be an unsigned integer');
  return v;
}
function pathOf(v: CborValue | undefined, what: string): Uint8Array[] {
  if (!Array.isArray(v) || v.length > MAX_PROOF_HASHES) throw bad(what, `must be an array of at most ${MAX_PROOF_HASHES} hashes`);
  return v.map((h) => bytesOf(h, what, MERKLE_HASH_LENGTH));
}
function sessionToCbor(l: SessionLink | undefined): CborInput | undefined {
  if (l === undefined) return undefined;
  if (l.salt.byteLength !== SESSION_SALT_LENGTH || !Number.isSafeInteger(l.seq) || l.seq < 1) throw new CloisterError('INVALID_ARGUMENT', `a session link is a ${SESSION_SALT_LENGTH}-byte salt and a positive sequence number`);
  return { salt: l.salt, seq: l.seq };
}
function sessionFromCbor(v: CborValue | undefined, what: string): { session?: SessionLink } {
  if (v === undefined) return {};
  const m = strictMap(v, what, ['salt', 'seq']);
  const seq = uintOf(m.get('seq'), `${what}.seq`);
  if (seq < 1) throw bad(`${what}.seq`, 'must be a positive integer');
  return { session: { salt: bytesOf(m.get('salt'), `${what}.salt`, SESSION_SALT_LENGTH), seq } };
}
function decodeTop(bytes: Uint8Array, what: string, maxBytes: number, maxItems: number): CborValue {
  if (!(bytes instanceof Uint8Array)) throw new CloisterError('INVALID_ARGUMENT', `${what} must be bytes`);
  if (bytes.byteLength > maxBytes) throw new CloisterError('LIMIT_EXCEEDED', `${what} of ${bytes.byteLength} bytes exceeds its limit of ${maxBytes}`);
  try {
    return decodeCbor(bytes, { maxDepth: 4, maxItems, maxBytes });
  } catch (cause) {
    throw new CloisterError('MALFORMED', `${what} is not canonical CBOR: ${cause instanceof Error ? cause.message : 'unknown'}`, { cause });
  }
}
function checkFormat(m: Map<string, CborValue>, format: string, what: string): void {
  if (m.get('format') !== format) throw bad(what, `format must be "${format}"`);
  const v = m.get('version');
  if (v !== AUDIT_BUNDLE_VERSION) throw new CloisterError('VERSION_UNSUPPORTED', `${what} version ${String(v)} (this side reads ${AUDIT_BUNDLE_VERSION})`);
}

// --- Records ----------------------------------------------------------------------------------

function consistencyToCbor(c: ConsistencyProof): CborInput {
  return { first: c.first, second: c.second, path: [...c.path] };
}
function consistencyFromCbor(v: CborValue, what: string): ConsistencyProof {
  const m = strictMap(v, what, ['first', 'second', 'path']);
  const first = uintOf(m.get('first'), `${what}.first`);
  const second = uintOf(m.get('second'), `${what}.second`);
  if (first >= second) throw bad(what, 'first must be below second');
  return { first, second, path: pathOf(m.get('path'), `${what}.path`) };
}

export function encodeAuditRecord(r: AuditRecord): Uint8Array {
  decodeReceiptLeaf(r.leaf);
  if (r.salt.byteLength !== RECEIPT_SALT_LENGTH) throw new CloisterError('INVALID_ARGUMENT', `salt must be ${RECEIPT_SALT_LENGTH} bytes`);
  return encodeCbor({
    format: AUDIT_RECORD_FORMAT,
    version: AUDIT_BUNDLE_VERSION,
    leaf: r.leaf,
    index: r.index,
    salt: r.salt,
    head: r.proof === undefined ? undefined : encodeSignedTreeHead(r.proof.treeHead),
    path: r.proof === undefined ? undefined : [...r.proof.path],
    consistency: r.consistency === undefined || r.consistency.length === 0 ? undefined : r.consistency.map(consistencyToCbor),
    session: sessionToCbor(r.session),
  });
}

export function decodeAuditRecord(bytes: Uint8Array): AuditRecord {
  const m = strictMap(decodeTop(bytes, 'audit record', MAX_AUDIT_RECORD_BYTES, 4096), 'record', ['format', 'version', 'leaf', 'index', 'salt'], ['head', 'path', 'consistency', 'session']);
  if (m.has('head') !== m.has('path')) throw bad('record', 'head and path go together (an inclusion proof), or neither');
  checkFormat(m, AUDIT_RECORD_FORMAT, 'record');
  const leaf = bytesOf(m.get('leaf'), 'record.leaf');
  decodeReceiptLeaf(leaf);
  const c = m.get('consistency');
  if (c !== undefined && (!Array.isArray(c) || c.length === 0 || c.length > MAX_AUDIT_HEADS)) throw bad('record.consistency', `must be 1 to ${MAX_AUDIT_HEADS} proofs`);
  return {
    leaf,
    index: uintOf(m.get('index'), 'record.index'),
    salt: bytesOf(m.get('salt'), 'record.salt', RECEIPT_SALT_LENGTH),
    ...(m.has('head') ? { proof: { treeHead: decodeSignedTreeHead(bytesOf(m.get('head'), 'record.head')), path: pathOf(m.get('path'), 'record.path') } } : {}),
    ...(c === undefined ? {} : { consistency: (c as CborValue[]).map((x, i) => consistencyFromCbor(x, `record.consistency[${i}]`)) }),
    ...sessionFromCbor(m.get('session'), 'record.session'),
  };
}

// --- Bundles ----------------------------------------------------------------------------------

export function encodeAuditBundle(b: AuditBundle): Uint8Array {
  const out = encodeCbor({
    format: AUDIT_BUNDLE_FORMAT,
    version: AUDIT_BUNDLE_VERSION,
    evidence: b.evidence,
    heads: [...b.heads],
    entries: b.entries.map((e) => ({ leaf: e.leaf, index: e.index, salt: e.salt, head: e.head, path: [...e.path], session: sessionToCbor(e.session) })),
    consistency: b.consistency.map((p) => [...p]),
  });
  decodeAuditBundle(out);
  return out;
}

/**
 * Strict decoding, with the structural rules a verifier relies on: a version-1 evidence file,
 * 1..MAX_AUDIT_HEADS heads in strictly ascending tree size, 1..MAX_AUDIT_ENTRIES entries in
 * strictly ascending index each naming an existing head, one consistency proof per pair of
 * neighbouring heads. Cryptographic checks are the verifier's.
 */
export function decodeAuditBundle(bytes: Uint8Array): AuditBundle {
  const m = strictMap(
    decodeTop(bytes, 'audit bundle', MAX_AUDIT_BUNDLE_BYTES, 16 * MAX_AUDIT_ENTRIES + 2 * MAX_PROOF_HASHES * (MAX_AUDIT_ENTRIES + MAX_AUDIT_HEADS)),
    'bundle',
    ['format', 'version', 'evidence', 'heads', 'entries', 'consistency'],
  );
  checkFormat(m, AUDIT_BUNDLE_FORMAT, 'bundle');
  const evidence = bytesOf(m.get('evidence'), 'bundle.evidence');
  if (decodeEvidenceFile(evidence).version !== 1) throw bad('bundle.evidence', 'must be an evidence file of format version 1');
  const headsRaw = m.get('heads');
  if (!Array.isArray(headsRaw) || headsRaw.length === 0 || headsRaw.length > MAX_AUDIT_HEADS) throw bad('bundle.heads', `must be 1 to ${MAX_AUDIT_HEADS} signed tree heads`);
  const heads = headsRaw.map((h, i) => bytesOf(h, `bundle.heads[${i}]`));
  let lastSize = -1;
  for (const [i, h] of heads.entries()) {
    const size = decodeTreeHead(decodeSignedTreeHead(h).head).treeSize;
    if (size <= lastSize) throw bad(`bundle.heads[${i}]`, 'heads must be in strictly ascending tree size (two heads of one size are a fork: report them, do not bundle them)');
    lastSize = size;
  }
  const entriesRaw = m.get('entries');
  if (!Array.isArray(entriesRaw) || entriesRaw.length === 0 || entriesRaw.length > MAX_AUDIT_ENTRIES) throw bad('bundle.entries', `must be 1 to ${MAX_AUDIT_ENTRIES} receipts`);
  let lastIndex = -1;
  const entries = entriesRaw.map((v, i): AuditEntry => {
    const what = `bundle.entries[${i}]`;
    const e = strictMap(v, what, ['leaf', 'index', 'salt', 'head', 'path'], ['session']);
    const index = uintOf(e.get('index'), `${what}.index`);
    if (index <= lastIndex) throw bad(what, 'entries must be in strictly ascending leaf index');
    lastIndex = index;
    const head = uintOf(e.get('head'), `${what}.head`);
    if (head >= heads.length) throw bad(`${what}.head`, `names head ${head} of ${heads.length}`);
    const leaf = bytesOf(e.get('leaf'), `${what}.leaf`);
    decodeReceiptLeaf(leaf);
    return { leaf, index, salt: bytesOf(e.get('salt'), `${what}.salt`, RECEIPT_SALT_LENGTH), head, path: pathOf(e.get('path'), `${what}.path`), ...sessionFromCbor(e.get('session'), `${what}.session`) };
  });
  const consRaw = m.get('consistency');
  if (!Array.isArray(consRaw) || consRaw.length !== heads.length - 1) throw bad('bundle.consistency', `must hold ${heads.length - 1} proofs (one per pair of neighbouring heads)`);
  const consistency = consRaw.map((p, i) => pathOf(p, `bundle.consistency[${i}]`));
  return { evidence, heads, entries, consistency };
}

/**
 * Builds a bundle from an evidence file and the client's audit records (one request or a
 * session). Heads are deduplicated and ordered by size; each pair of neighbouring heads needs
 * a consistency proof among the records' (`consistency`) or `extraConsistency`
 * (NOT_FOUND names the missing pair otherwise).
 */
export function buildAuditBundle(evidenceFile: Uint8Array, records: readonly AuditRecord[], extraConsistency: readonly ConsistencyProof[] = []): Uint8Array {
  if (records.length === 0) throw new CloisterError('INVALID_ARGUMENT', 'an audit bundle needs at least one receipt');
  const proved = records.map((r) => {
    if (r.proof === undefined) throw new CloisterError('NOT_FOUND', `the record of leaf ${r.index} has no inclusion proof; fetch it from the server's log (cloister audit export --server URL, or client.proofFor)`);
    return { ...r, proof: r.proof };
  });
  const headsBySize = new Map<number, SignedTreeHead>();
  for (const r of proved) {
    const size = decodeTreeHead(r.proof.treeHead.head).treeSize;
    const known = headsBySize.get(size);
    if (known !== undefined && Buffer.compare(encodeSignedTreeHead(known), encodeSignedTreeHead(r.proof.treeHead)) !== 0) {
      // Two different signed heads of one size: either a fork or a re-signed head; keep the first only if the roots agree.
      if (Buffer.compare(decodeTreeHead(known.head).rootHash, decodeTreeHead(r.proof.treeHead.head).rootHash) !== 0) {
        throw new CloisterError('RECEIPT_INVALID', `two signed tree heads of size ${size} with different roots: the server showed two different logs`);
      }
      throw new CloisterError('INVALID_ARGUMENT', `two different signed tree heads of size ${size}; give records that share one`);
    }
    headsBySize.set(size, r.proof.treeHead);
  }
  const sizes = [...headsBySize.keys()].sort((a, b) => a - b);
  const heads = sizes.map((s) => encodeSignedTreeHead(headsBySize.get(s) as SignedTreeHead));
  const proofs = [...proved.flatMap((r) => r.consistency ?? []), ...extraConsistency];
  const consistency = sizes.slice(1).map((second, i) => {
    const first = sizes[i] as number;
    const p = proofs.find((c) => c.first === first && c.second === second);
    if (p === undefined) throw new CloisterError('NOT_FOUND', `no consistency proof from tree size ${first} to ${second}; ask the server for it`);
    return p.path;
  });
  const entries = [...proved]
    .sort((a, b) => a.index - b.index)
    .map((r) => ({ leaf: r.leaf, index: r.index, salt: r.salt, head: sizes.indexOf(decodeTreeHead(r.proof.treeHead.head).treeSize), path: r.proof.path, ...(r.session === undefined ? {} : { session: r.session }) }));
  return encodeAuditBundle({ evidence: evidenceFile, heads, entries, consistency });
}
