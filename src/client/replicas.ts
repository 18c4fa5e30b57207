/**
 * The SDK's side of per-replica receipts (src/protocol/replica.ts): against a fleet key config
 * (`replicaReceipts`) every request declares the `replica` capability and lists the replica
 * statements this client verified before; the final chunk names the replica that answered,
 * by its statement or by a listed digest. The reader checks the binding and the receipt
 * signature under the replica's key at once (`ReplicaCheck.resolve`); the statement's
 * evidence is verified against the client's policy before the last results and the receipt
 * are handed out (`ReplicaCheck.settle`). A verified statement is kept by its SHA-256, so a
 * replica's evidence crosses the wire and is verified about once per replica and refresh.
 */
import { CloisterError } from '../errors.js';
import { toHex } from '../core/hex.js';
import { timingSafeEqualBytes } from '../crypto/ct.js';
import { decodeEvidenceFile } from '../verifier/evidence-file.js';
import type { EvidenceBundle } from '../core/types.js';
import { keyGenerationDigest } from '../protocol/key-config.js';
import type { KeyConfig } from '../protocol/key-config.js';
import { MAX_KNOWN_REPLICAS, replicaReceiptKey, replicaStatementDigest } from '../protocol/replica.js';
import type { ReplicaRef } from '../protocol/replica.js';
import type { ReplicaReceipt } from '../verifier/receipt.js';

/** Verified statements kept (all fleets and generations together), and how long each. */
export const MAX_CACHED_REPLICA_STATEMENTS = 64;
export const REPLICA_STATEMENT_CACHE_MS = 15 * 60 * 1000;

interface Entry {
  readonly digest: Uint8Array;
  readonly statement: Uint8Array;
  readonly receiptKey: Uint8Array;
  /** keyGenerationDigest of the fleet key config the statement is for (hex). */
  readonly generation: string;
  readonly verifiedAt: number;
}

/** Verifies a statement's evidence against the client's policy (throws its code). */
export type StatementVerifier = (bundle: EvidenceBundle) => Promise<void>;

export class ReplicaStatements {
  readonly #entries = new Map<string, Entry>();
  readonly #inFlight = new Map<string, Promise<Entry>>();

  constructor(
    private readonly verify: StatementVerifier,
    private readonly now: () => number = Date.now,
  ) {}

  /** Number of verified statements held. */
  get size(): number {
    return this.#entries.size;
  }

  /** A request's check against fleet key config `fleet`; its `known` digests go into the request. */
  check(fleet: KeyConfig): ReplicaCheck {
    const generation = toHex(keyGenerationDigest(fleet));
    const now = this.now();
    const known: Entry[] = [];
    // Newest last in the map: list the most recently verified statements of this generation.
    for (const [k, e] of this.#entries) {
      if (now - e.verifiedAt >= REPLICA_STATEMENT_CACHE_MS) this.#entries.delete(k);
      else if (e.generation === generation) known.push(e);
    }
    return new ReplicaCheck(this, fleet, generation, known.slice(-MAX_KNOWN_REPLICAS));
  }

  /** Verifies a statement seen for the first time (one verification per digest at a time). */
  verified(digest: Uint8Array, statement: Uint8Array, receiptKey: Uint8Array, generation: string): Promise<Entry> {
    const k = toHex(digest);
    const have = this.#entries.get(k);
    if (have !== undefined) return Promise.resolve(have);
    let p = this.#inFlight.get(k);
    if (p === undefined) {
      p = (async () => {
        await this.verify(decodeEvidenceFile(statement).bundle);
        const entry: Entry = { digest, statement, receiptKey, generation, verifiedAt: this.now() };
        this.#entries.set(k, entry);
        for (const old of this.#entries.keys()) if (this.#entries.size > MAX_CACHED_REPLICA_STATEMENTS) this.#entries.delete(old);
        return entry;
      })().finally(() => this.#inFlight.delete(k));
      this.#inFlight.set(k, p);
    }
    return p;
  }
}

/** One request's replica check: `resolve` inside the reader, `settle` once it completed. */
export class ReplicaCheck {
  #pending: { readonly digest: Uint8Array; readonly statement: Uint8Array; readonly receiptKey: Uint8Array; readonly entry?: Entry } | undefined;

  constructor(
    private readonly cache: ReplicaStatements,
    private readonly fleet: KeyConfig,
    private readonly generation: string,
    private readonly knownEntries: readonly Entry[],
  ) {}

  /** Whether the final chunk named a replica (an error answer refused before that names none). */
  get named(): boolean {
    return this.#pending !== undefined;
  }

  /** The digests to list in the request's `replicas` (undefined when none). */
  get known(): Uint8Array[] | undefined {
    return this.knownEntries.length === 0 ? undefined : this.knownEntries.map((e) => e.digest);
  }

  /** The receipt key of the replica the final chunk names (binding checked; RECEIPT_INVALID otherwise). */
  resolve(ref: ReplicaRef): Uint8Array {
    if (ref.digest !== undefined) {
      // Only a statement this request listed: the client verified it, and holds it for the record.
      const entry = this.knownEntries.find((e) => timingSafeEqualBytes(e.digest, ref.digest));
      if (entry === undefined) throw new CloisterError('RECEIPT_INVALID', 'receipt: the replica names a statement by a digest this request did not list');
      this.#pending = { digest: entry.digest, statement: entry.statement, receiptKey: entry.receiptKey, entry };
      return entry.receiptKey;
    }
    let keyConfig: Uint8Array;
    try {
      keyConfig = decodeEvidenceFile(ref.evidence).bundle.keyConfig;
    } catch (cause) {
      throw new CloisterError('RECEIPT_INVALID', 'receipt: the replica statement is not an evidence file', { cause });
    }
    const receiptKey = replicaReceiptKey(this.fleet, keyConfig);
    this.#pending = { digest: replicaStatementDigest(ref.evidence), statement: Uint8Array.from(ref.evidence), receiptKey };
    return receiptKey;
  }

  /**
   * The replica for the receipt record, once its statement's evidence verified against the
   * client's policy (at once for a listed one). Throws the verifier's code (POLICY_MISMATCH,
   * EVIDENCE_INVALID, ...) when it does not: the answer is then refused.
   */
  async settle(): Promise<ReplicaReceipt> {
    const p = this.#pending;
    if (p === undefined) throw new CloisterError('RECEIPT_INVALID', 'receipt: no replica was named');
    const entry = p.entry ?? (await this.cache.verified(p.digest, p.statement, p.receiptKey, this.generation));
    return { receiptKey: entry.receiptKey, statement: entry.statement };
  }
}
