/**
 * The RFC 9162 Merkle log (src/protocol/merkle.ts) against (a) the Certificate Transparency
 * reference tree (the eight leaves of the CT test suite and their published roots, inclusion
 * and consistency proofs) and (b) a reference written here straight from the RFC's recursive
 * definitions (MTH, PATH, PROOF/SUBPROOF), for every index and every size pair of trees up to
 * 20 leaves; every flipped byte of a proof, every wrong index or size fails.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  EMPTY_TREE_HASH,
  MerkleLog,
  merkleLeafHash,
  verifyConsistency,
  verifyInclusion,
} from '../../src/protocol/merkle.js';
import { codeOf } from '../helpers/errors.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const unhex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));
const sha = (...parts: Uint8Array[]): Uint8Array => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
};

// --- A reference written from RFC 9162 section 2.1, on arrays of entries -----------------
const refK = (n: number): number => 2 ** Math.ceil(Math.log2(n) - 1);
function refMth(d: readonly Uint8Array[]): Uint8Array {
  if (d.length === 0) return sha();
  if (d.length === 1) return sha(Uint8Array.of(0), d[0] as Uint8Array);
  const k = refK(d.length);
  return sha(Uint8Array.of(1), refMth(d.slice(0, k)), refMth(d.slice(k)));
}
function refPath(m: number, d: readonly Uint8Array[]): Uint8Array[] {
  if (d.length === 1) return [];
  const k = refK(d.length);
  return m < k ? [...refPath(m, d.slice(0, k)), refMth(d.slice(k))] : [...refPath(m - k, d.slice(k)), refMth(d.slice(0, k))];
}
function refSubproof(m: number, d: readonly Uint8Array[], b: boolean): Uint8Array[] {
  if (m === d.length) return b ? [] : [refMth(d)];
  const k = refK(d.length);
  return m <= k ? [...refSubproof(m, d.slice(0, k), b), refMth(d.slice(k))] : [...refSubproof(m - k, d.slice(k), false), refMth(d.slice(0, k))];
}

// --- The Certificate Transparency reference tree ----------------------------------------
const CT_LEAVES = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'].map(unhex);
const CT_ROOTS = [
  'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
];
// [leaf index (0-based), tree size, proof]
const CT_INCLUSION: [number, number, string[]][] = [
  [0, 8, ['96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7', '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4']],
  [5, 8, ['bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b', 'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0', 'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7']],
  [2, 3, ['fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125']],
  [1, 5, ['6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d', '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', 'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b']],
];
const CT_CONSISTENCY: [number, number, string[]][] = [
  [1, 1, []],
  [1, 8, ['96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7', '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4']],
  [6, 8, ['0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a', 'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0', 'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7']],
  [2, 5, ['5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', 'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b']],
];

function ctLog(n = CT_LEAVES.length): MerkleLog {
  const log = new MerkleLog();
  for (const l of CT_LEAVES.slice(0, n)) log.append(l);
  return log;
}

/** Every single-bit flip of every byte of every proof hash. */
function* flippedProofs(proof: readonly Uint8Array[]): Generator<Uint8Array[]> {
  for (let i = 0; i < proof.length; i++) {
    for (let j = 0; j < 32; j++) {
      const copy = proof.map((p) => p.slice());
      (copy[i] as Uint8Array)[j] = ((copy[i] as Uint8Array)[j] as number) ^ 0x01;
      yield copy;
      const high = proof.map((p) => p.slice());
      (high[i] as Uint8Array)[j] = ((high[i] as Uint8Array)[j] as number) ^ 0x80;
      yield high;
    }
  }
}

describe('Merkle log: the CT reference tree', () => {
  it('has the published root at every size 0..8 (the empty tree is SHA-256 of nothing)', () => {
    expect(hex(EMPTY_TREE_HASH)).toBe(CT_ROOTS[0]);
    const log = new MerkleLog();
    expect(hex(log.root())).toBe(CT_ROOTS[0]);
    for (let n = 1; n <= 8; n++) {
      log.append(CT_LEAVES[n - 1] as Uint8Array);
      expect(hex(log.root())).toBe(CT_ROOTS[n]);
      expect(hex(refMth(CT_LEAVES.slice(0, n)))).toBe(CT_ROOTS[n]);
    }
    // Roots of earlier sizes stay available after later appends.
    for (let n = 0; n <= 8; n++) expect(hex(log.root(n))).toBe(CT_ROOTS[n]);
  });

  it('produces and verifies the published inclusion proofs', () => {
    const log = ctLog();
    for (const [index, size, proof] of CT_INCLUSION) {
      expect(log.inclusionProof(index, size).map(hex)).toEqual(proof);
      expect(verifyInclusion(index, size, merkleLeafHash(CT_LEAVES[index] as Uint8Array), proof.map(unhex), unhex(CT_ROOTS[size] as string))).toBe(true);
    }
  });

  it('produces and verifies the published consistency proofs', () => {
    const log = ctLog();
    for (const [first, second, proof] of CT_CONSISTENCY) {
      expect(log.consistencyProof(first, second).map(hex)).toEqual(proof);
      expect(verifyConsistency(first, second, unhex(CT_ROOTS[first] as string), unhex(CT_ROOTS[second] as string), proof.map(unhex))).toBe(true);
    }
  });
});

describe('Merkle log: every index and size up to 20 leaves against the RFC definitions', () => {
  const N = 20;
  const entries = Array.from({ length: N }, (_, i) => sha(Uint8Array.of(i)).subarray(0, i % 7));
  const log = new MerkleLog();
  for (const e of entries) log.append(e);
  const roots = Array.from({ length: N + 1 }, (_, n) => refMth(entries.slice(0, n)));

  it('roots match MTH for every size', () => {
    for (let n = 0; n <= N; n++) expect(hex(log.root(n))).toBe(hex(roots[n] as Uint8Array));
  });

  it('inclusion proofs match PATH and verify for every index of every size; tampering fails', () => {
    let flips = 0;
    for (let n = 1; n <= N; n++) {
      const root = roots[n] as Uint8Array;
      for (let m = 0; m < n; m++) {
        const proof = log.inclusionProof(m, n);
        expect(proof.map(hex)).toEqual(refPath(m, entries.slice(0, n)).map(hex));
        const leaf = log.leafHash(m);
        expect(verifyInclusion(m, n, leaf, proof, root)).toBe(true);
        // Wrong index, wrong leaf, wrong root, a hash more or less. (A proof does not bind
        // the tree size on its own - a size with the same path shape passes: the signed tree
        // head binds size and root together, and verifiers take both from it.)
        if (n > 1) expect(verifyInclusion((m + 1) % n, n, leaf, proof, root)).toBe(false);
        expect(verifyInclusion(m, n, merkleLeafHash(Uint8Array.of(0xff, m)), proof, root)).toBe(false);
        expect(verifyInclusion(m, n, leaf, proof, roots[n - 1] as Uint8Array)).toBe(false);
        expect(verifyInclusion(m, n, leaf, [...proof, root], root)).toBe(false);
        if (proof.length > 0) expect(verifyInclusion(m, n, leaf, proof.slice(1), root)).toBe(false);
        for (const bad of flippedProofs(proof)) {
          expect(verifyInclusion(m, n, leaf, bad, root)).toBe(false);
          flips++;
        }
      }
    }
    expect(flips).toBeGreaterThan(10_000);
  });

  it('consistency proofs match PROOF and verify for every size pair; tampering fails', () => {
    for (let second = 0; second <= N; second++) {
      for (let first = 0; first <= second; first++) {
        const proof = log.consistencyProof(first, second);
        const expected = first === 0 || first === second ? [] : refSubproof(first, entries.slice(0, second), true);
        expect(proof.map(hex)).toEqual(expected.map(hex));
        const r1 = roots[first] as Uint8Array;
        const r2 = roots[second] as Uint8Array;
        expect(verifyConsistency(first, second, r1, r2, proof)).toBe(true);
        if (first > 0 && first < second) {
          expect(verifyConsistency(first, second, roots[first - 1] as Uint8Array, r2, proof)).toBe(false);
          expect(verifyConsistency(first, second, r1, roots[second - 1] as Uint8Array, proof)).toBe(false);
          expect(verifyConsistency(first, second, r1, r2, proof.slice(1))).toBe(false);
          expect(verifyConsistency(first, second, r1, r2, [])).toBe(false);
          for (const bad of flippedProofs(proof)) expect(verifyConsistency(first, second, r1, r2, bad)).toBe(false);
        }
      }
    }
  });

  it('a forked log (one leaf changed) is caught by a consistency check against the old head', () => {
    const fork = new MerkleLog();
    entries.forEach((e, i) => fork.append(i === 3 ? Uint8Array.of(0xee) : e));
    const oldRoot = log.root(10);
    expect(verifyConsistency(10, N, oldRoot, fork.root(), fork.consistencyProof(10, N))).toBe(false);
    expect(verifyConsistency(10, N, oldRoot, log.root(), log.consistencyProof(10, N))).toBe(true);
  });
});

describe('Merkle log: bounds and arguments', () => {
  it('refuses the append past maxLeaves with LIMIT_EXCEEDED naming the limit', () => {
    const log = new MerkleLog({ maxLeaves: 3 });
    for (let i = 0; i < 3; i++) expect(log.append(Uint8Array.of(i))).toBe(i);
    let err: unknown;
    try {
      log.append(Uint8Array.of(3));
    } catch (e) {
      err = e;
    }
    expect(codeOf(() => {
      throw err;
    })).toBe('LIMIT_EXCEEDED');
    expect(String(err)).toContain('maxLeaves = 3');
    expect(log.size).toBe(3);
  });

  it('refuses bad options and out-of-range requests', () => {
    expect(codeOf(() => new MerkleLog({ maxLeaves: 0 }))).toBe('CONFIG_INVALID');
    expect(codeOf(() => new MerkleLog({ maxLeaves: 1.5 }))).toBe('CONFIG_INVALID');
    const log = ctLog(4);
    expect(codeOf(() => log.root(5))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => log.inclusionProof(4, 4))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => log.consistencyProof(3, 2))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => log.appendHash(new Uint8Array(31)))).toBe('INVALID_ARGUMENT');
  });

  it('verifiers return false, never throw, on malformed input', () => {
    const r = unhex(CT_ROOTS[4] as string);
    const leaf = merkleLeafHash(CT_LEAVES[0] as Uint8Array);
    expect(verifyInclusion(-1, 4, leaf, [], r)).toBe(false);
    expect(verifyInclusion(0, 0, leaf, [], r)).toBe(false);
    expect(verifyInclusion(0, 4, leaf, [new Uint8Array(31)], r)).toBe(false);
    expect(verifyInclusion(0, 4, leaf, Array.from({ length: 65 }, () => new Uint8Array(32)), r)).toBe(false);
    expect(verifyInclusion(0, 4, leaf.subarray(1), [], r)).toBe(false);
    expect(verifyConsistency(5, 4, r, r, [])).toBe(false);
    expect(verifyConsistency(0, 4, r, r, [])).toBe(false);
    expect(verifyConsistency(0, 4, EMPTY_TREE_HASH, r, [])).toBe(true);
    expect(verifyConsistency(2, 4, r, r, [])).toBe(false);
  });

  it('a 2^12-leaf log proves its last leaf with 12 hashes', () => {
    const log = new MerkleLog();
    for (let i = 0; i < 4096; i++) log.append(Uint8Array.of(i & 0xff, i >> 8));
    const proof = log.inclusionProof(4095);
    expect(proof).toHaveLength(12);
    expect(verifyInclusion(4095, 4096, log.leafHash(4095), proof, log.root())).toBe(true);
    expect(verifyConsistency(1000, 4096, log.root(1000), log.root(), log.consistencyProof(1000))).toBe(true);
  });
});
