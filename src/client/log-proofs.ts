/**
 * Later proofs from a server's receipts-v2 log (docs/PROTOCOL.md section 12, "Publishing tree
 * heads"): a receipt that came without its inclusion proof (no `receipt-proof`) is proved after
 * the fact against the newest signed tree head from `GET /v1/log/head`, with the path from
 * `GET /v1/log/proof`; and consistency proofs between two heads from `GET /v1/log/consistency`.
 *
 * Nothing the log endpoint says is trusted: a head must verify under the attested key config's
 * receipt key and name that key config (TreeHeadVerifier), a path must lead from the leaf to
 * that head's root (RFC 9162 section 2.1.3.2) and a consistency proof from one verified head
 * to the other (section 2.1.4.2); RECEIPT_INVALID otherwise. Answers are strict CBOR maps of at
 * most MAX_LOG_ANSWER_BYTES. Used by `CloisterClient.proofFor` and `cloister audit export --server`.
 */
import { CloisterError } from '../errors.js';
import { decodeCbor } from '../core/cbor.js';
import type { CborValue } from '../core/cbor.js';
import { keyGenerationDigest } from '../protocol/key-config.js';
import type { KeyConfig } from '../protocol/key-config.js';
import { MAX_PROOF_HASHES, MERKLE_HASH_LENGTH, merkleLeafHash, verifyConsistency, verifyInclusion } from '../protocol/merkle.js';
import { TreeHeadVerifier, decodeReceiptLeaf, decodeSignedTreeHead } from '../protocol/receipt-v2.js';
import type { InclusionProof, SignedTreeHead, TreeHead } from '../protocol/receipt-v2.js';
import { timingSafeEqualBytes } from '../crypto/ct.js';
import { HttpClientTransport } from './http-transport.js';
import type { TransportLimits } from './transport.js';

/** Largest log answer read (a signed tree head, or a path of at most MAX_PROOF_HASHES hashes). */
export const MAX_LOG_ANSWER_BYTES = 16 * 1024;

/** The http(s) base URL of a server given by its ws(s) or http(s) URL (the log is served over HTTP on the same port). */
export function logBaseUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch (cause) {
    throw new CloisterError('INVALID_ARGUMENT', 'not a URL', { cause });
  }
  if (u.protocol === 'ws:') u.protocol = 'http:';
  else if (u.protocol === 'wss:') u.protocol = 'https:';
  else if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new CloisterError('INVALID_ARGUMENT', `the receipt log is read over http(s); ${u.protocol} URLs have no log endpoint the client can reach (give the server's http(s) URL)`);
  }
  u.search = '';
  u.hash = '';
  return u.toString().replace(/\/+$/, '');
}

function bad(what: string, why: string): CloisterError {
  return new CloisterError('MALFORMED', `log answer ${what}: ${why}`, { detail: { field: what } });
}

export class ReceiptLogClient {
  readonly #tr: HttpClientTransport;
  readonly #keyId: number;
  readonly #digest: Uint8Array;
  readonly verifier: TreeHeadVerifier;

  /** `url`: the server (ws, wss, http or https); `keyConfig`: the verified key config whose log is read. */
  constructor(url: string, keyConfig: KeyConfig, options: { readonly verifier?: TreeHeadVerifier; readonly limits?: TransportLimits } = {}) {
    this.#tr = new HttpClientTransport(logBaseUrl(url), options.limits);
    this.#keyId = keyConfig.keyId;
    this.#digest = keyGenerationDigest(keyConfig);
    this.verifier = options.verifier ?? new TreeHeadVerifier(keyConfig.receiptPublicKey, this.#digest);
  }

  async #read(path: string, t: string, field: 'sth' | 'path'): Promise<CborValue> {
    const bytes = await this.#tr.get(`${path}${path.includes('?') ? '&' : '?'}key=${this.#keyId}`, MAX_LOG_ANSWER_BYTES);
    let m: CborValue;
    try {
      m = decodeCbor(bytes, { maxDepth: 3, maxItems: MAX_PROOF_HASHES + 16, maxBytes: MAX_LOG_ANSWER_BYTES });
    } catch (cause) {
      throw new CloisterError('MALFORMED', `log answer to ${path.split('?')[0] ?? path} is not canonical CBOR`, { cause });
    }
    if (!(m instanceof Map)) throw bad(t, 'must be a map');
    for (const k of m.keys()) if (k !== 't' && k !== 'keyId' && k !== field) throw bad(t, `unknown key ${String(k)}`);
    if (m.get('t') !== t) throw bad('t', `must be "${t}"`);
    if (m.get('keyId') !== this.#keyId) throw bad('keyId', `must be ${this.#keyId}, the key config's`);
    const v = m.get(field);
    if (v === undefined) throw bad(field, 'missing');
    return v;
  }

  #path(v: CborValue): Uint8Array[] {
    if (!Array.isArray(v) || v.length > MAX_PROOF_HASHES) throw bad('path', `must be an array of at most ${MAX_PROOF_HASHES} hashes`);
    return v.map((h) => {
      if (!(h instanceof Uint8Array) || h.byteLength !== MERKLE_HASH_LENGTH) throw bad('path', `hashes are ${MERKLE_HASH_LENGTH} bytes`);
      return h;
    });
  }

  /** The newest signed tree head, verified. */
  async head(): Promise<{ readonly sth: SignedTreeHead; readonly head: TreeHead }> {
    const v = await this.#read('/v1/log/head', 'log-head', 'sth');
    if (!(v instanceof Uint8Array)) throw bad('sth', 'must be bytes');
    const sth = decodeSignedTreeHead(v);
    return { sth, head: this.verifier.verify(sth) };
  }

  /** PATH(index, D[size]), unchecked (prove() and the callers check it against a verified head). */
  async inclusion(index: number, size: number): Promise<Uint8Array[]> {
    return this.#path(await this.#read(`/v1/log/proof?index=${index}&size=${size}`, 'log-proof', 'path'));
  }

  /** PROOF(first, D[second]) between two verified heads, checked (RECEIPT_INVALID when it does not hold). */
  async consistency(first: TreeHead, second: TreeHead): Promise<Uint8Array[]> {
    const path = this.#path(await this.#read(`/v1/log/consistency?first=${first.treeSize}&second=${second.treeSize}`, 'log-consistency', 'path'));
    if (!verifyConsistency(first.treeSize, second.treeSize, first.rootHash, second.rootHash, path)) {
      throw new CloisterError('RECEIPT_INVALID', `the log of size ${first.treeSize} is not a prefix of the log of size ${second.treeSize}: the server showed inconsistent logs`, { detail: { step: 'consistency' } });
    }
    return path;
  }

  /**
   * The inclusion proof of `leaf` at `index` to the newest signed tree head, verified.
   * NOT_FOUND while no head covers the leaf yet (the server signs one at most once per
   * treeHeadIntervalMs, and at the end of the leaf's session): ask again after that.
   */
  async prove(leaf: Uint8Array, index: number): Promise<InclusionProof> {
    if (!Number.isSafeInteger(index) || index < 0) throw new CloisterError('INVALID_ARGUMENT', 'leaf index must be an unsigned integer');
    const l = decodeReceiptLeaf(leaf);
    if (!timingSafeEqualBytes(l.keyConfigDigest, this.#digest)) throw new CloisterError('INVALID_ARGUMENT', 'the leaf is from another key generation than the key config given');
    const { sth, head } = await this.head();
    if (head.treeSize <= index) {
      throw new CloisterError('NOT_FOUND', `no signed tree head covers leaf ${index} yet (the newest has size ${head.treeSize}); ask again after the server's tree head interval`, {
        detail: { index, treeSize: head.treeSize },
      });
    }
    const path = await this.inclusion(index, head.treeSize);
    if (!verifyInclusion(index, head.treeSize, merkleLeafHash(leaf), path, head.rootHash)) {
      throw new CloisterError('RECEIPT_INVALID', `the log's inclusion proof of leaf ${index} does not lead to its signed tree head of size ${head.treeSize}`, { detail: { step: 'inclusion' } });
    }
    return { treeHead: sth, path };
  }
}
