/**
 * An append-only Merkle log in the shape of RFC 9162 (Certificate Transparency 2.0), section
 * 2.1: SHA-256, leaf hash = H(0x00 || leaf), node hash = H(0x01 || left || right), the tree
 * head MTH of the first n leaves, inclusion proofs (2.1.3) and consistency proofs (2.1.4),
 * and their verification exactly as the RFC's algorithms (2.1.3.2, 2.1.4.2) state them.
 *
 * The log keeps, per level, the hash of every complete, aligned subtree of 2^level leaves
 * (about two hashes per leaf), so appending costs O(log n) hashes and a root, an inclusion
 * proof or a consistency proof for any earlier size costs O(log^2 n). It is bounded by
 * `maxLeaves` (a named option); a full log refuses appends with LIMIT_EXCEEDED, and the
 * server starts the next one with the next key generation.
 */
import { createHash } from 'node:crypto';
import { CloisterError } from '../errors.js';
import { timingSafeEqualBytes } from '../crypto/ct.js';

export const MERKLE_HASH_LENGTH = 32;

/** Default bound on leaves in one log (`MerkleLogOptions.maxLeaves`): 2^18, about 16 MiB of hashes. */
export const DEFAULT_MAX_LOG_LEAVES = 1 << 18;
/** Largest bound a log accepts (2^32 leaves: proofs stay at most 64 hashes). */
export const MAX_LOG_LEAVES_LIMIT = 2 ** 32;
/** Longest proof any verifier accepts: two hashes per level of a 2^32-leaf tree. */
export const MAX_PROOF_HASHES = 64;

const LEAF_PREFIX = Uint8Array.of(0);
const NODE_PREFIX = Uint8Array.of(1);

/** MTH({}) = SHA-256 of the empty string (RFC 9162 section 2.1.1). */
export const EMPTY_TREE_HASH: Uint8Array = new Uint8Array(createHash('sha256').digest());

/** H(0x00 || leaf). */
export function merkleLeafHash(leaf: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(LEAF_PREFIX).update(leaf).digest());
}

/** H(0x01 || left || right). */
export function merkleNodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(NODE_PREFIX).update(left).update(right).digest());
}

/** The largest power of two smaller than n (n > 1), the RFC's k. */
function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

function isPowerOfTwo(n: number): boolean {
  let p = 1;
  while (p < n) p *= 2;
  return p === n;
}

/** The hashes of one level, in one growing buffer (no object per hash). */
class HashLevel {
  #buf = new Uint8Array(MERKLE_HASH_LENGTH * 16);
  count = 0;
  push(h: Uint8Array): void {
    if ((this.count + 1) * MERKLE_HASH_LENGTH > this.#buf.byteLength) {
      const next = new Uint8Array(this.#buf.byteLength * 2);
      next.set(this.#buf);
      this.#buf = next;
    }
    this.#buf.set(h, this.count * MERKLE_HASH_LENGTH);
    this.count += 1;
  }
  get(i: number): Uint8Array {
    return this.#buf.slice(i * MERKLE_HASH_LENGTH, (i + 1) * MERKLE_HASH_LENGTH);
  }
}

export interface MerkleLogOptions {
  /** Most leaves the log takes (default DEFAULT_MAX_LOG_LEAVES); then append throws LIMIT_EXCEEDED. */
  readonly maxLeaves?: number;
}

/** An append-only RFC 9162 Merkle log held in memory. */
export class MerkleLog {
  readonly maxLeaves: number;
  /** levels[l][i]: the hash of leaves [i * 2^l, (i + 1) * 2^l). */
  readonly #levels: HashLevel[] = [new HashLevel()];

  constructor(options: MerkleLogOptions = {}) {
    const max = options.maxLeaves ?? DEFAULT_MAX_LOG_LEAVES;
    if (!Number.isSafeInteger(max) || max < 1 || max > MAX_LOG_LEAVES_LIMIT) {
      throw new CloisterError('CONFIG_INVALID', `maxLeaves must be an integer 1..${MAX_LOG_LEAVES_LIMIT}`, { detail: { limit: 'maxLeaves', value: String(max) } });
    }
    this.maxLeaves = max;
  }

  get size(): number {
    return (this.#levels[0] as HashLevel).count;
  }

  /** Appends a leaf (its entry bytes, hashed here); returns its index. */
  append(leaf: Uint8Array): number {
    return this.appendHash(merkleLeafHash(leaf));
  }

  /** Appends a leaf by its leaf hash (H(0x00 || entry)); returns its index. */
  appendHash(leafHash: Uint8Array): number {
    if (leafHash.byteLength !== MERKLE_HASH_LENGTH) throw new CloisterError('INVALID_ARGUMENT', 'a leaf hash is 32 bytes');
    const index = this.size;
    if (index >= this.maxLeaves) {
      throw new CloisterError('LIMIT_EXCEEDED', `the Merkle log is full (maxLeaves = ${this.maxLeaves})`, { detail: { limit: 'maxLeaves', value: this.maxLeaves } });
    }
    let h = leafHash;
    let i = index;
    for (let l = 0; ; l++) {
      const level = this.#levels[l] ?? (this.#levels[l] = new HashLevel());
      level.push(h);
      // A right child completes its parent.
      if (i % 2 === 0) break;
      h = merkleNodeHash(level.get(i - 1), h);
      i = (i - 1) / 2;
    }
    return index;
  }

  /** The leaf hash at `index`. */
  leafHash(index: number): Uint8Array {
    this.#checkSize(index + 1, 'index');
    return (this.#levels[0] as HashLevel).get(index);
  }

  /** MTH of the first `size` leaves (default: all). */
  root(size = this.size): Uint8Array {
    this.#checkSize(size, 'size');
    return size === 0 ? EMPTY_TREE_HASH.slice() : this.#subtree(0, size);
  }

  /** PATH(index, D[size]) (RFC 9162 section 2.1.3.1). */
  inclusionProof(index: number, size = this.size): Uint8Array[] {
    this.#checkSize(size, 'size');
    if (!Number.isSafeInteger(index) || index < 0 || index >= size) {
      throw new CloisterError('INVALID_ARGUMENT', `leaf index ${index} is not in a tree of ${size} leaves`);
    }
    const out: Uint8Array[] = [];
    this.#path(index, 0, size, out);
    return out;
  }

  /** PROOF(first, D[second]) (RFC 9162 section 2.1.4.1); empty for first = 0 or first = second. */
  consistencyProof(first: number, second = this.size): Uint8Array[] {
    this.#checkSize(second, 'second');
    if (!Number.isSafeInteger(first) || first < 0 || first > second) {
      throw new CloisterError('INVALID_ARGUMENT', `no consistency proof from size ${first} to ${second}`);
    }
    const out: Uint8Array[] = [];
    if (first > 0 && first < second) this.#subproof(first, 0, second, true, out);
    return out;
  }

  #checkSize(size: number, what: string): void {
    if (!Number.isSafeInteger(size) || size < 0 || size > this.size) {
      throw new CloisterError('INVALID_ARGUMENT', `${what} ${size} is beyond the log (${this.size} leaves)`);
    }
  }

  /** MTH(D[start : start + n]), n >= 1; every left part the recursion meets is a complete aligned subtree. */
  #subtree(start: number, n: number): Uint8Array {
    if (isPowerOfTwo(n) && start % n === 0) {
      const level = Math.log2(n);
      return (this.#levels[level] as HashLevel).get(start / n);
    }
    const k = splitPoint(n);
    return merkleNodeHash(this.#subtree(start, k), this.#subtree(start + k, n - k));
  }

  #path(m: number, start: number, n: number, out: Uint8Array[]): void {
    if (n === 1) return;
    const k = splitPoint(n);
    if (m < k) {
      this.#path(m, start, k, out);
      out.push(this.#subtree(start + k, n - k));
    } else {
      this.#path(m - k, start + k, n - k, out);
      out.push(this.#subtree(start, k));
    }
  }

  #subproof(m: number, start: number, n: number, b: boolean, out: Uint8Array[]): void {
    if (m === n) {
      if (!b) out.push(this.#subtree(start, n));
      return;
    }
    const k = splitPoint(n);
    if (m <= k) {
      this.#subproof(m, start, k, b, out);
      out.push(this.#subtree(start + k, n - k));
    } else {
      this.#subproof(m - k, start + k, n - k, false, out);
      out.push(this.#subtree(start, k));
    }
  }
}

function proofShapeOk(proof: readonly Uint8Array[]): boolean {
  return proof.length <= MAX_PROOF_HASHES && proof.every((p) => p instanceof Uint8Array && p.byteLength === MERKLE_HASH_LENGTH);
}

function validSize(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0 && n <= MAX_LOG_LEAVES_LIMIT;
}

/**
 * RFC 9162 section 2.1.3.2: whether `proof` shows the leaf with hash `leafHash` at `index` in
 * the tree of `size` leaves with root `root`. False on any malformed input; never throws.
 */
export function verifyInclusion(index: number, size: number, leafHash: Uint8Array, proof: readonly Uint8Array[], root: Uint8Array): boolean {
  if (!validSize(size) || !Number.isSafeInteger(index) || index < 0 || index >= size) return false;
  if (leafHash.byteLength !== MERKLE_HASH_LENGTH || root.byteLength !== MERKLE_HASH_LENGTH || !proofShapeOk(proof)) return false;
  // Arithmetic on plain numbers: sizes stay below 2^53, so halving is exact.
  let fn = index;
  let sn = size - 1;
  let r = leafHash;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = merkleNodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = merkleNodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && timingSafeEqualBytes(r, root);
}

/**
 * RFC 9162 section 2.1.4.2: whether `proof` shows that the tree of `first` leaves with root
 * `firstRoot` is a prefix of the tree of `second` leaves with root `secondRoot`. Equal sizes
 * need an empty proof and equal roots; the empty tree is a prefix of every tree (empty proof).
 * False on any malformed input; never throws.
 */
export function verifyConsistency(first: number, second: number, firstRoot: Uint8Array, secondRoot: Uint8Array, proof: readonly Uint8Array[]): boolean {
  if (!validSize(first) || !validSize(second) || first > second) return false;
  if (firstRoot.byteLength !== MERKLE_HASH_LENGTH || secondRoot.byteLength !== MERKLE_HASH_LENGTH || !proofShapeOk(proof)) return false;
  if (first === second) return proof.length === 0 && timingSafeEqualBytes(firstRoot, secondRoot);
  if (first === 0) return proof.length === 0 && timingSafeEqualBytes(firstRoot, EMPTY_TREE_HASH);
  if (proof.length === 0) return false;
  const path = isPowerOfTwo(first) ? [firstRoot, ...proof] : [...proof];
  let fn = first - 1;
  let sn = second - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr = path[0] as Uint8Array;
  let sr = fr;
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = merkleNodeHash(c, fr);
      sr = merkleNodeHash(c, sr);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      sr = merkleNodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && timingSafeEqualBytes(fr, firstRoot) && timingSafeEqualBytes(sr, secondRoot);
}
