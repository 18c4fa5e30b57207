/**
 * Chunk search (docs/COLLECTIONS.md, "Index"): vectors are unit-length (the embedder
 * normalises), the score is the cosine similarity (dot product).
 * - ExactIndex: every vector scored; exact top-k. Used below `annThreshold` chunks.
 * - UsearchIndex: HNSW from usearch (prebuilt binaries, no compile step), used from
 *   `annThreshold` chunks; candidates it returns are re-scored exactly, so scores are exact
 *   and only recall is approximate (measured by `npm run bench:rag`).
 * - HybridIndex: keeps the vectors (the exact index) and builds the HNSW graph the first time
 *   the collection reaches the threshold; deletes go to both.
 */
import { Index as UsearchNative, MetricKind, ScalarKind } from 'usearch';
import { CloisterError } from '../errors.js';

export interface Hit {
  readonly key: number;
  readonly score: number;
}

export interface VectorIndex {
  readonly size: number;
  add(key: number, vector: Float32Array): void;
  remove(key: number): void;
  search(query: Float32Array, k: number): Hit[];
}

/** Top-k insertion into a small sorted array (descending score, then ascending key). */
function pushTop(top: Hit[], hit: Hit, k: number): void {
  if (top.length === k) {
    const last = top[k - 1] as Hit;
    if (hit.score < last.score || (hit.score === last.score && hit.key > last.key)) return;
    top.pop();
  }
  let i = top.length;
  while (i > 0) {
    const p = top[i - 1] as Hit;
    if (p.score > hit.score || (p.score === hit.score && p.key < hit.key)) break;
    i--;
  }
  top.splice(i, 0, hit);
}

export class ExactIndex implements VectorIndex {
  readonly dims: number;
  readonly #vectors = new Map<number, Float32Array>();

  constructor(dims: number) {
    this.dims = dims;
  }

  get size(): number {
    return this.#vectors.size;
  }

  vector(key: number): Float32Array | undefined {
    return this.#vectors.get(key);
  }

  entries(): IterableIterator<[number, Float32Array]> {
    return this.#vectors.entries();
  }

  add(key: number, vector: Float32Array): void {
    if (vector.length !== this.dims) throw new CloisterError('INVALID_ARGUMENT', `a vector of ${vector.length} dimensions in an index of ${this.dims}`);
    this.#vectors.set(key, vector);
  }

  remove(key: number): void {
    this.#vectors.delete(key);
  }

  score(query: Float32Array, key: number): number | undefined {
    const v = this.#vectors.get(key);
    if (v === undefined) return undefined;
    let s = 0;
    for (let i = 0; i < v.length; i++) s += (v[i] as number) * (query[i] as number);
    return s;
  }

  search(query: Float32Array, k: number): Hit[] {
    const top: Hit[] = [];
    const d = this.dims;
    for (const [key, v] of this.#vectors) {
      let s = 0;
      for (let i = 0; i < d; i++) s += (v[i] as number) * (query[i] as number);
      pushTop(top, { key, score: s }, k);
    }
    return top;
  }
}

export interface AnnOptions {
  /** HNSW connectivity (M). Default 16. */
  readonly connectivity?: number;
  /** Candidate list size while building. Default 128. */
  readonly expansionAdd?: number;
  /** Candidate list size while searching. Default 128. */
  readonly expansionSearch?: number;
}

export class UsearchIndex implements VectorIndex {
  readonly #index: UsearchNative;

  constructor(dims: number, options: AnnOptions = {}) {
    this.#index = new UsearchNative({
      dimensions: dims,
      metric: MetricKind.IP,
      quantization: ScalarKind.F32,
      connectivity: options.connectivity ?? 16,
      expansion_add: options.expansionAdd ?? 128,
      expansion_search: options.expansionSearch ?? 128,
      multi: false,
    });
  }

  get size(): number {
    return this.#index.size();
  }

  add(key: number, vector: Float32Array): void {
    this.#index.add(BigInt(key), vector);
  }

  /** Many vectors in one call (usearch builds with its own threads). */
  addMany(entries: readonly (readonly [number, Float32Array])[]): void {
    if (entries.length === 0) return;
    const dims = entries[0]?.[1].length ?? 0;
    const keys = new BigUint64Array(entries.length);
    const matrix = new Float32Array(entries.length * dims);
    entries.forEach(([k, v], i) => {
      keys[i] = BigInt(k);
      matrix.set(v, i * dims);
    });
    this.#index.add(keys, matrix);
  }

  remove(key: number): void {
    this.#index.remove(BigInt(key));
  }

  search(query: Float32Array, k: number): Hit[] {
    const m = this.#index.search(query, k, 1);
    const out: Hit[] = [];
    for (let i = 0; i < m.keys.length; i++) out.push({ key: Number(m.keys[i]), score: 1 - (m.distances[i] as number) });
    return out;
  }
}

export const DEFAULT_ANN_THRESHOLD = 20_000;
/**
 * The HNSW graph is asked for this many times k candidates (at least ANN_MIN_CANDIDATES), and
 * they are re-scored exactly: recall@10 at 100k chunks went from 0.63 (k candidates) to the
 * value bench:rag reports.
 */
export const ANN_CANDIDATE_FACTOR = 8;
export const ANN_MIN_CANDIDATES = 64;

export class HybridIndex implements VectorIndex {
  readonly exact: ExactIndex;
  readonly #threshold: number;
  readonly #ann: AnnOptions;
  #graph: UsearchIndex | undefined;
  #bulk: [number, Float32Array][] | undefined;

  constructor(dims: number, annThreshold = DEFAULT_ANN_THRESHOLD, ann: AnnOptions = {}) {
    this.exact = new ExactIndex(dims);
    this.#threshold = annThreshold;
    this.#ann = ann;
  }

  get size(): number {
    return this.exact.size;
  }

  /** Which search answers now. */
  get mode(): 'exact' | 'ann' {
    return this.#graph === undefined ? 'exact' : 'ann';
  }

  /**
   * Adds made until `endBulk` go to the graph in one batched call (usearch builds with its
   * own threads): loading a collection or a large add does not insert one vector at a time.
   */
  beginBulk(): void {
    this.#bulk ??= [];
  }

  endBulk(): void {
    const pending = this.#bulk;
    this.#bulk = undefined;
    if (pending === undefined) return;
    if (this.#graph !== undefined) this.#graph.addMany(pending.filter(([k]) => this.exact.vector(k) !== undefined));
    else this.#maybeBuild();
  }

  #maybeBuild(): void {
    if (this.#graph === undefined && this.exact.size >= this.#threshold) {
      const g = new UsearchIndex(this.exact.dims, this.#ann);
      g.addMany([...this.exact.entries()]);
      this.#graph = g;
    }
  }

  add(key: number, vector: Float32Array): void {
    this.exact.add(key, vector);
    if (this.#bulk !== undefined) {
      if (this.#graph !== undefined) this.#bulk.push([key, vector]);
      return;
    }
    if (this.#graph !== undefined) this.#graph.add(key, vector);
    else this.#maybeBuild();
  }

  remove(key: number): void {
    this.exact.remove(key);
    this.#graph?.remove(key);
  }

  search(query: Float32Array, k: number): Hit[] {
    if (this.#graph === undefined) return this.exact.search(query, k);
    const top: Hit[] = [];
    for (const h of this.#graph.search(query, Math.max(k * ANN_CANDIDATE_FACTOR, ANN_MIN_CANDIDATES))) {
      const s = this.exact.score(query, h.key);
      if (s !== undefined) pushTop(top, { key: h.key, score: s }, k);
    }
    return top;
  }
}
