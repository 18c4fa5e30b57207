/**
 * Sealed document collections (docs/COLLECTIONS.md): their text, chunks, embeddings and index
 * exist in plaintext only in this process (inside the TEE); on the host's disk each is one
 * sealed log (sealed-log.ts) under its own key (keys.ts).
 *
 * Access: `create` returns a capability secret (32 random bytes, base64url) that every later
 * operation must present inside the sealed request; the store keeps only its SHA-256 and
 * compares in constant time. An unknown collection and a wrong capability give the same
 * error (CAPABILITY_INVALID): a client learns nothing about collections it cannot open.
 *
 * Changes to one collection run one at a time (a per-collection queue); a change is
 * acknowledged only after its record is on disk. Deleting documents appends a delete record
 * and then rewrites the file without them (their text and vectors are no longer on disk in
 * any live file; see docs/COLLECTIONS.md, "Erasure", for what the host may still hold).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CloisterError } from '../errors.js';
import { timingSafeEqualBytes } from '../crypto/ct.js';
import { toHex } from '../core/hex.js';
import type { GuardPolicy } from '../guard/policy.js';
import { DEFAULT_GUARD_POLICY, isGuardPolicy } from '../guard/policy.js';
import { checkChunking, chunkText } from './chunking.js';
import type { ChunkingOptions } from './chunking.js';
import type { StorageKeySource } from './keys.js';
import { decodeRecord, encodeRecord } from './records.js';
import type { CollectionRecord, Metadata, StoredDocument } from './records.js';
import { COLLECTION_ID_LENGTH, DEFAULT_MAX_RECORD_BYTES, SealedLog } from './sealed-log.js';
import { DEFAULT_ANN_THRESHOLD, HybridIndex } from './vector-index.js';
import type { AnnOptions } from './vector-index.js';

/** A capability as `create` returns it: 32 bytes, base64url without padding, canonical. */
const CAPABILITY_RE = /^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/;

export interface CollectionLimits {
  /** Collections on this server (LIMIT_EXCEEDED beyond). */
  readonly maxCollections: number;
  /** Documents in one collection. */
  readonly maxDocumentsPerCollection: number;
  /** Chunks in one collection. */
  readonly maxChunksPerCollection: number;
  /** Documents in one add request. */
  readonly maxDocumentsPerAdd: number;
  /** Longest document text, UTF-16 code units. */
  readonly maxDocumentChars: number;
  /** Longest document id, characters. */
  readonly maxDocumentIdChars: number;
  /** Largest metadata of one document, as JSON characters. */
  readonly maxMetadataChars: number;
  /** Most chunks one retrieval returns. */
  readonly maxTopK: number;
  /** Chunks from which a collection is searched with the HNSW index (vector-index.ts). */
  readonly annThreshold: number;
  /** Largest sealed record on disk (sealed-log.ts). */
  readonly maxRecordBytes: number;
}

export const DEFAULT_COLLECTION_LIMITS: CollectionLimits = Object.freeze({
  maxCollections: 64,
  maxDocumentsPerCollection: 100_000,
  maxChunksPerCollection: 1_000_000,
  maxDocumentsPerAdd: 1024,
  maxDocumentChars: 200_000,
  maxDocumentIdChars: 256,
  maxMetadataChars: 4096,
  maxTopK: 50,
  annThreshold: DEFAULT_ANN_THRESHOLD,
  maxRecordBytes: DEFAULT_MAX_RECORD_BYTES,
});

/** Embeds texts into unit vectors (the in-TEE embedder). */
export type EmbedFn = (texts: readonly string[], signal: AbortSignal) => Promise<Float32Array[]>;

export interface NewDocument {
  readonly id: string;
  readonly text: string;
  readonly metadata?: Metadata;
}

export interface RetrievedChunk {
  readonly document: string;
  readonly start: number;
  readonly end: number;
  readonly score: number;
  readonly text: string;
  /** SHA-256 of the chunk's UTF-8 text (what a receipt lists). */
  readonly digest: Uint8Array;
  readonly metadata: Metadata;
}

/** A collection's public state: id, version (changes so far) and the file's chain head. */
export interface CollectionVersion {
  readonly id: string;
  readonly version: number;
  readonly head: string;
}

interface ChunkRef {
  readonly doc: string;
  readonly start: number;
  readonly end: number;
}

interface DocState {
  readonly stored: StoredDocument;
  readonly keys: readonly number[];
}

const FILE_SUFFIX = '.col';
const EMBED_BATCH = 32;

function limit(name: keyof CollectionLimits, max: number, what: string): CloisterError {
  return new CloisterError('LIMIT_EXCEEDED', `${what} exceeds ${name} (${max})`, { detail: { limit: name, max, public: true } });
}

function invalid(message: string): CloisterError {
  return new CloisterError('INVALID_ARGUMENT', message, { detail: { public: true } });
}

function sha256(b: Uint8Array | string): Uint8Array {
  return new Uint8Array(createHash('sha256').update(b).digest());
}

class Collection {
  readonly id: Uint8Array;
  readonly idHex: string;
  readonly log: SealedLog;
  readonly capHash: Uint8Array;
  readonly chunking: ChunkingOptions;
  readonly policy: GuardPolicy;
  readonly dims: number;
  version: number;
  readonly docs = new Map<string, DocState>();
  readonly chunks = new Map<number, ChunkRef>();
  readonly index: HybridIndex;
  nextKey = 1;
  /** The version the rollback counter holds (keys.counters); -1 before it was confirmed. */
  counted = -1;
  /** While the file is replayed at load: the HNSW graph is built once, at the end. */
  loading = false;
  queue: Promise<void> = Promise.resolve();

  constructor(log: SealedLog, create: Extract<CollectionRecord, { t: 'create' }>, annThreshold: number, ann: AnnOptions) {
    this.id = log.id;
    this.idHex = toHex(log.id);
    this.log = log;
    this.capHash = create.cap;
    this.chunking = create.chunking;
    this.policy = create.policy;
    this.dims = create.dims;
    this.version = create.v;
    this.index = new HybridIndex(create.dims, annThreshold, ann);
  }

  get state(): CollectionVersion {
    return { id: this.idHex, version: this.version, head: toHex(this.log.head) };
  }

  apply(r: CollectionRecord): void {
    if (r.v < this.version) throw new CloisterError('STORAGE_CORRUPT', `collection file '${this.log.path}': version goes back (${r.v} after ${this.version})`);
    this.version = r.v;
    if (r.t === 'add') {
      this.index.beginBulk();
      for (const d of r.docs) {
        const keys: number[] = [];
        d.chunks.forEach(([start, end], i) => {
          const key = this.nextKey++;
          this.chunks.set(key, { doc: d.id, start, end });
          this.index.add(key, d.vectors.subarray(i * this.dims, (i + 1) * this.dims));
          keys.push(key);
        });
        this.docs.set(d.id, { stored: d, keys });
      }
      if (!this.loading) this.index.endBulk();
    } else if (r.t === 'delete') {
      for (const id of r.ids) {
        const doc = this.docs.get(id);
        if (doc === undefined) continue;
        for (const k of doc.keys) {
          this.index.remove(k);
          this.chunks.delete(k);
        }
        this.docs.delete(id);
      }
    }
  }

  /** Runs `fn` after every earlier change of this collection. */
  serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn);
    this.queue = run.then(() => undefined, () => undefined);
    return run;
  }

  /** The records of a compacted file: the create record and the live documents, at the current version. */
  snapshot(maxRecordBytes: number): Uint8Array[] {
    const out: Uint8Array[] = [encodeRecord({ t: 'create', v: this.version, cap: this.capHash, chunking: this.chunking, policy: this.policy, dims: this.dims })];
    let batch: StoredDocument[] = [];
    let bytes = 0;
    const budget = Math.floor(maxRecordBytes / 2);
    for (const { stored } of this.docs.values()) {
      const size = stored.text.length * 3 + stored.vectors.byteLength + 1024;
      if (batch.length > 0 && bytes + size > budget) {
        out.push(encodeRecord({ t: 'add', v: this.version, docs: batch }));
        batch = [];
        bytes = 0;
      }
      batch.push(stored);
      bytes += size;
    }
    if (batch.length > 0) out.push(encodeRecord({ t: 'add', v: this.version, docs: batch }));
    return out;
  }
}

export interface CollectionStoreOptions {
  /** Directory on the host's disk for the sealed collection files. */
  readonly dir: string;
  readonly keys: StorageKeySource;
  readonly embed: EmbedFn;
  /** Dimensions of the embedder's vectors. */
  readonly dims: number;
  readonly limits?: Partial<CollectionLimits>;
  readonly ann?: AnnOptions;
}

export interface LoadReport {
  readonly collections: number;
  readonly documents: number;
  /** Files not served: failed authentication or not well formed (STORAGE_CORRUPT). */
  readonly corrupt: readonly string[];
  /** Collections whose file ended in an unacknowledged (cut) record. */
  readonly truncated: number;
  /** Collections rewritten at load because a delete had not been compacted. */
  readonly compacted: number;
  /** Files older than their rollback counter (an older copy put back): not served (STORAGE_ROLLBACK). */
  readonly rolledBack: readonly string[];
  /** Collections the rollback counter knows whose file is gone (STORAGE_ROLLBACK). */
  readonly missing: readonly string[];
}

export function resolveCollectionLimits(partial: Partial<CollectionLimits> = {}): CollectionLimits {
  const out: Record<string, number> = { ...DEFAULT_COLLECTION_LIMITS };
  for (const [k, v] of Object.entries(partial)) {
    if (v === undefined) continue;
    if (!Object.prototype.hasOwnProperty.call(DEFAULT_COLLECTION_LIMITS, k)) throw new CloisterError('CONFIG_INVALID', `unknown collection limit '${k}'`);
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw new CloisterError('CONFIG_INVALID', `collection limit '${k}' must be a positive integer`);
    out[k] = v;
  }
  return Object.freeze(out) as unknown as CollectionLimits;
}

export class CollectionStore {
  readonly limits: CollectionLimits;
  readonly #opts: CollectionStoreOptions;
  readonly #collections = new Map<string, Collection>();
  readonly #corrupt = new Set<string>();
  /** Collection id -> why it is refused as rolled back ('older' or 'missing'). */
  readonly #rolledBack = new Map<string, 'older' | 'missing'>();

  constructor(options: CollectionStoreOptions) {
    this.#opts = options;
    this.limits = resolveCollectionLimits(options.limits);
  }

  get size(): number {
    return this.#collections.size;
  }

  /** Opens every collection file in the directory (creating the directory if needed). */
  async load(): Promise<LoadReport> {
    await mkdir(this.#opts.dir, { recursive: true, mode: 0o700 });
    let documents = 0;
    let truncated = 0;
    let compacted = 0;
    const counters = this.#opts.keys.counters;
    let known: ReadonlyMap<string, number> = new Map();
    if (counters !== undefined) {
      try {
        known = await counters.readAll();
      } catch (cause) {
        throw new CloisterError('ROLLBACK_COUNTER_FAILED', `cannot read the rollback counters of the collections in '${this.#opts.dir}'`, { cause });
      }
    }
    const seen = new Set<string>();
    for (const name of (await readdir(this.#opts.dir)).sort()) {
      const path = join(this.#opts.dir, name);
      // A rewrite that never reached its rename: the old file is still complete.
      if (name.endsWith(`${FILE_SUFFIX}.tmp`)) {
        await rm(path, { force: true });
        continue;
      }
      if (!name.endsWith(FILE_SUFFIX)) continue;
      const idHex = name.slice(0, -FILE_SUFFIX.length);
      if (!/^[0-9a-f]{32}$/.test(idHex)) continue;
      seen.add(idHex);
      try {
        const id = Uint8Array.from(Buffer.from(idHex, 'hex'));
        const opened = await SealedLog.open(path, this.#opts.keys.collectionKey(id), this.limits.maxRecordBytes);
        if (!timingSafeEqualBytes(opened.log.id, id)) throw new CloisterError('STORAGE_CORRUPT', `collection file '${path}' holds another collection`);
        const [first, ...rest] = opened.records;
        if (first === undefined) throw new CloisterError('STORAGE_CORRUPT', `collection file '${path}' has no create record`);
        const create = decodeRecord(first);
        if (create.t !== 'create') throw new CloisterError('STORAGE_CORRUPT', `collection file '${path}' does not start with a create record`);
        const c = new Collection(opened.log, create, this.limits.annThreshold, this.#opts.ann ?? {});
        let deletes = false;
        c.loading = true;
        c.index.beginBulk();
        for (const r of rest) {
          const rec = decodeRecord(r, c.dims);
          if (rec.t === 'create') throw new CloisterError('STORAGE_CORRUPT', `collection file '${path}' has a second create record`);
          if (rec.t === 'delete') deletes = true;
          c.apply(rec);
        }
        c.loading = false;
        const counted = known.get(idHex);
        if (counted !== undefined && c.version < counted) {
          await opened.log.close();
          throw new CloisterError('STORAGE_ROLLBACK', `collection file '${path}' is at version ${c.version}, its rollback counter at ${counted}: an older copy was put back`, { detail: { file: path } });
        }
        c.counted = counted ?? -1;
        c.index.endBulk();
        if (deletes) {
          // A delete acknowledged before a crash, whose rewrite did not happen: erase now.
          await c.log.rewrite(c.snapshot(this.limits.maxRecordBytes));
          compacted++;
        }
        if (opened.truncatedBytes > 0) truncated++;
        // A change written but not yet counted (a crash between the two): count it now.
        await this.#confirm(c);
        this.#collections.set(idHex, c);
        documents += c.docs.size;
      } catch (err) {
        if (err instanceof CloisterError && err.code === 'STORAGE_ROLLBACK') {
          this.#rolledBack.set(idHex, 'older');
          continue;
        }
        if (!(err instanceof CloisterError) || err.code !== 'STORAGE_CORRUPT') throw err;
        this.#corrupt.add(idHex);
      }
    }
    for (const id of known.keys()) if (!seen.has(id)) this.#rolledBack.set(id, 'missing');
    const rolled = (why: 'older' | 'missing'): string[] => [...this.#rolledBack].filter(([, w]) => w === why).map(([id]) => id);
    return { collections: this.#collections.size, documents, corrupt: [...this.#corrupt], truncated, compacted, rolledBack: rolled('older'), missing: rolled('missing') };
  }

  /** Raises the collection's rollback counter to its version, when the keys have counters. */
  async #confirm(c: Collection): Promise<void> {
    const counters = this.#opts.keys.counters;
    if (counters === undefined || c.counted >= c.version) return;
    const version = c.version;
    try {
      await counters.advance(c.idHex, version);
    } catch (cause) {
      throw new CloisterError('ROLLBACK_COUNTER_FAILED', `the rollback counter of a collection could not be advanced to version ${version}: the change is on the host's disk but not acknowledged`, {
        cause,
        detail: { public: true },
      });
    }
    c.counted = Math.max(c.counted, version);
  }

  async close(): Promise<void> {
    for (const c of this.#collections.values()) await c.log.close();
    this.#collections.clear();
  }

  /** A new, empty collection; its capability is returned once and never stored. */
  async create(options: { readonly chunking?: Partial<ChunkingOptions>; readonly policy?: unknown } = {}): Promise<CollectionVersion & { readonly capability: string }> {
    if (this.#collections.size >= this.limits.maxCollections) throw limit('maxCollections', this.limits.maxCollections, 'a new collection');
    const chunking = checkChunking(options.chunking);
    const policy = options.policy ?? DEFAULT_GUARD_POLICY;
    if (!isGuardPolicy(policy)) throw invalid('policy must be allow, redact or block');
    const id = new Uint8Array(randomBytes(COLLECTION_ID_LENGTH));
    const capBytes = new Uint8Array(randomBytes(32));
    const capability = Buffer.from(capBytes).toString('base64url');
    const record: CollectionRecord = { t: 'create', v: 0, cap: sha256(capBytes), chunking, policy, dims: this.#opts.dims };
    const path = join(this.#opts.dir, `${toHex(id)}${FILE_SUFFIX}`);
    const log = await SealedLog.create(path, id, this.#opts.keys.collectionKey(id), [encodeRecord(record)], this.limits.maxRecordBytes);
    const c = new Collection(log, record, this.limits.annThreshold, this.#opts.ann ?? {});
    try {
      await this.#confirm(c);
    } catch (err) {
      // Not acknowledged: no capability was handed out, so the file could never be opened.
      await log.close();
      await rm(path, { force: true });
      throw err;
    }
    this.#collections.set(c.idHex, c);
    return { ...c.state, capability };
  }

  /** The collection, when `capability` opens it (CAPABILITY_INVALID otherwise, whichever failed). */
  #open(id: unknown, capability: unknown): Collection {
    const fail = (): CloisterError => new CloisterError('CAPABILITY_INVALID', undefined, { detail: { public: true } });
    // 32 bytes in base64url, canonically: the last character carries 4 bits and 2 zero bits, so
    // only one spelling of a capability opens the collection.
    if (typeof id !== 'string' || typeof capability !== 'string' || !CAPABILITY_RE.test(capability)) throw fail();
    const c = this.#collections.get(id);
    // Hash the presented capability either way: no timing difference between the two failures.
    const presented = sha256(Buffer.from(capability, 'base64url'));
    if (c === undefined) {
      const rolled = this.#rolledBack.get(id);
      if (rolled !== undefined) {
        throw new CloisterError('STORAGE_ROLLBACK', rolled === 'older' ? 'this collection\'s file on the host is older than its rollback counter and is not served' : 'this collection\'s file is missing from the host disk', { detail: { public: true } });
      }
      if (this.#corrupt.has(id)) throw new CloisterError('STORAGE_CORRUPT', 'this collection failed authentication on the host disk and is not served', { detail: { public: true } });
      throw fail();
    }
    if (!timingSafeEqualBytes(presented, c.capHash)) throw fail();
    return c;
  }

  /** Policy floor of a collection (for the output guard). */
  policyOf(id: unknown, capability: unknown): GuardPolicy {
    return this.#open(id, capability).policy;
  }

  versionOf(id: unknown, capability: unknown): CollectionVersion {
    return this.#open(id, capability).state;
  }

  async add(id: unknown, capability: unknown, docs: readonly NewDocument[], signal: AbortSignal): Promise<CollectionVersion & { readonly added: number; readonly chunks: number }> {
    const c = this.#open(id, capability);
    const l = this.limits;
    if (docs.length === 0) throw invalid('documents must not be empty');
    if (docs.length > l.maxDocumentsPerAdd) throw limit('maxDocumentsPerAdd', l.maxDocumentsPerAdd, `${docs.length} documents in one add`);
    const seen = new Set<string>();
    const prepared: { doc: NewDocument; meta: Metadata; chunks: [number, number][]; texts: string[] }[] = [];
    for (const d of docs) {
      if (typeof d.id !== 'string' || d.id.length === 0) throw invalid('every document needs a non-empty id');
      if (d.id.length > l.maxDocumentIdChars) throw limit('maxDocumentIdChars', l.maxDocumentIdChars, `a document id of ${d.id.length} characters`);
      if (seen.has(d.id)) throw invalid('two documents in one add have the same id');
      seen.add(d.id);
      if (typeof d.text !== 'string' || d.text.trim().length === 0) throw invalid('every document needs a non-empty text');
      if (d.text.length > l.maxDocumentChars) throw limit('maxDocumentChars', l.maxDocumentChars, `a document of ${d.text.length} characters`);
      const meta = d.metadata ?? {};
      if (typeof meta !== 'object' || meta === null || Array.isArray(meta) || !Object.values(meta).every((v) => ['string', 'number', 'boolean'].includes(typeof v))) {
        throw invalid('metadata must be an object of strings, numbers and booleans');
      }
      if (JSON.stringify(meta).length > l.maxMetadataChars) throw limit('maxMetadataChars', l.maxMetadataChars, 'a document metadata');
      const chunks = chunkText(d.text, c.chunking);
      prepared.push({ doc: d, meta, chunks: chunks.map((x) => [x.start, x.end]), texts: chunks.map((x) => x.text) });
    }
    // Embedding runs before the collection's queue: other changes are not held up by it.
    const texts = prepared.flatMap((p) => p.texts);
    const vectors: Float32Array[] = [];
    for (let i = 0; i < texts.length; i += EMBED_BATCH) vectors.push(...(await this.#opts.embed(texts.slice(i, i + EMBED_BATCH), signal)));
    if (vectors.length !== texts.length || vectors.some((v) => v.length !== c.dims)) throw new CloisterError('ENGINE_FAILED', 'the embedder returned vectors of an unexpected shape');
    let at = 0;
    const stored: StoredDocument[] = prepared.map((p) => {
      const vec = new Float32Array(p.chunks.length * c.dims);
      for (let i = 0; i < p.chunks.length; i++) vec.set(vectors[at + i] as Float32Array, i * c.dims);
      at += p.chunks.length;
      return { id: p.doc.id, meta: p.meta, text: p.doc.text, chunks: p.chunks, vectors: vec };
    });
    return c.serial(async () => {
      if (signal.aborted) throw new CloisterError('CANCELLED');
      for (const d of stored) if (c.docs.has(d.id)) throw invalid('a document with this id exists in the collection; delete it first');
      if (c.docs.size + stored.length > l.maxDocumentsPerCollection) throw limit('maxDocumentsPerCollection', l.maxDocumentsPerCollection, 'the collection');
      if (c.chunks.size + texts.length > l.maxChunksPerCollection) throw limit('maxChunksPerCollection', l.maxChunksPerCollection, 'the collection');
      await this.#confirm(c);
      const record: CollectionRecord = { t: 'add', v: c.version + 1, docs: stored };
      await c.log.append(encodeRecord(record));
      c.apply(record);
      await this.#confirm(c);
      return { ...c.state, added: stored.length, chunks: texts.length };
    });
  }

  /** Deletes documents (absent ids are reported, not an error); erases them from the file. */
  async delete(id: unknown, capability: unknown, ids: readonly string[]): Promise<CollectionVersion & { readonly deleted: readonly string[]; readonly missing: readonly string[]; readonly erased: boolean }> {
    const c = this.#open(id, capability);
    if (!Array.isArray(ids) || ids.length === 0 || !ids.every((x) => typeof x === 'string')) throw invalid('ids must be a non-empty array of document ids');
    if (ids.length > this.limits.maxDocumentsPerAdd) throw limit('maxDocumentsPerAdd', this.limits.maxDocumentsPerAdd, `${ids.length} ids in one delete`);
    return c.serial(async () => {
      const deleted = [...new Set(ids)].filter((x) => c.docs.has(x));
      const missing = [...new Set(ids)].filter((x) => !c.docs.has(x));
      if (deleted.length === 0) return { ...c.state, deleted, missing, erased: true };
      await this.#confirm(c);
      const record: CollectionRecord = { t: 'delete', v: c.version + 1, ids: deleted };
      await c.log.append(encodeRecord(record));
      c.apply(record);
      // Counted before the rewrite: the older copy that still holds the document is refused from now on.
      await this.#confirm(c);
      let erased = true;
      try {
        await c.log.rewrite(c.snapshot(this.limits.maxRecordBytes));
      } catch {
        // The delete record is on disk: the next load rewrites the file (LoadReport.compacted).
        erased = false;
      }
      return { ...c.state, deleted, missing, erased };
    });
  }

  list(id: unknown, capability: unknown): CollectionVersion & { readonly documents: readonly { readonly id: string; readonly metadata: Metadata; readonly chars: number; readonly chunks: number }[] } {
    const c = this.#open(id, capability);
    const documents = [...c.docs.values()].map(({ stored }) => ({ id: stored.id, metadata: stored.meta, chars: stored.text.length, chunks: stored.chunks.length }));
    return { ...c.state, documents };
  }

  /** The top-k chunks for `query`, best first, with cosine scores. */
  async retrieve(id: unknown, capability: unknown, query: string, k: number, signal: AbortSignal): Promise<CollectionVersion & { readonly mode: 'exact' | 'ann'; readonly chunks: readonly RetrievedChunk[] }> {
    const c = this.#open(id, capability);
    if (typeof query !== 'string' || query.trim().length === 0) throw invalid('query must be a non-empty text');
    if (query.length > this.limits.maxDocumentChars) throw limit('maxDocumentChars', this.limits.maxDocumentChars, `a query of ${query.length} characters`);
    if (!Number.isSafeInteger(k) || k < 1) throw invalid('top_k must be a positive integer');
    if (k > this.limits.maxTopK) throw limit('maxTopK', this.limits.maxTopK, `top_k ${k}`);
    const [q] = await this.#opts.embed([query], signal);
    if (q === undefined || q.length !== c.dims) throw new CloisterError('ENGINE_FAILED', 'the embedder returned a vector of an unexpected shape');
    const hits = c.index.search(q, k);
    const chunks: RetrievedChunk[] = [];
    for (const h of hits) {
      const ref = c.chunks.get(h.key);
      const doc = ref === undefined ? undefined : c.docs.get(ref.doc);
      if (ref === undefined || doc === undefined) continue;
      const text = doc.stored.text.slice(ref.start, ref.end);
      chunks.push({ document: ref.doc, start: ref.start, end: ref.end, score: h.score, text, digest: sha256(text), metadata: doc.stored.meta });
    }
    return { ...c.state, mode: c.index.mode, chunks };
  }
}
