/**
 * An audit directory on the client's side (`cloister infer --audit DIR`, `cloister gateway
 * --audit-dir DIR`): for each answered request its receipts-v2 audit record (leaf, index,
 * salt, inclusion proof to a signed tree head), and once per key generation the verified
 * evidence file, named so that `cloister audit export` finds the pair:
 *
 *   DIR/evidence-<generation>.cbor                 evidence + key config (client.evidenceFile())
 *   DIR/<generation>-<time>-<run>-<n>.record.cbor  one audit record (encodeAuditRecord)
 *
 * <run> is random per AuditDirectory, so that several processes (or one `cloister infer
 * --audit DIR` after another) can write into one directory in the same second.
 * <generation> is the first 16 hex digits of the key generation digest the leaf names.
 * A server that offers no receipts v2 (a fleet, whose replicas each sign their own receipts;
 * a server from before them) gets its version-1 receipt kept instead, with the evidence of
 * the key config it names (<key> is the first 16 hex digits of that key config's digest),
 * for `cloister receipt verify --evidence DIR/evidence-<key>.cbor --receipt FILE`:
 *
 *   DIR/evidence-<key>.cbor
 *   DIR/<key>-<time>-<run>-<n>.receipt.json       receiptToJson (a fleet's names the replica)
 *   DIR/statement-<sha256>.cbor                     a fleet replica's statement, once (the
 *                                                   receipts name it by its SHA-256)
 *
 * Content-free: salted hashes and the salt; with the salt, a guess at a request's text can be
 * checked, so the directory is created mode 0700 and the files 0600. Nothing is overwritten.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CloisterError } from '../errors.js';
import { toHex } from '../core/hex.js';
import { decodeReceiptLeaf } from '../protocol/receipt-v2.js';
import type { ReceiptV2Record } from '../protocol/response.js';
import { encodeAuditRecord } from '../verifier/audit-bundle.js';
import { receiptToJson, statementFileName } from '../verifier/receipt.js';
import type { ReceiptRecord } from '../verifier/receipt.js';

export interface AuditFiles {
  readonly evidence: string;
  readonly record: string;
}

export class AuditDirectory {
  readonly #dir: string;
  readonly #evidenceWritten = new Set<string>();
  readonly #statementsWritten = new Set<string>();
  readonly #run = randomBytes(4).toString('hex');
  #n = 0;

  private constructor(dir: string) {
    this.#dir = dir;
  }

  /** Creates DIR (mode 0700) when missing. */
  static async open(dir: string): Promise<AuditDirectory> {
    if (dir === '') throw new CloisterError('INVALID_ARGUMENT', 'the audit directory is empty');
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
    } catch (cause) {
      throw new CloisterError('CONFIG_INVALID', `cannot create the audit directory ${dir}`, { cause });
    }
    return new AuditDirectory(dir);
  }

  /**
   * Writes one record (it must carry its inclusion proof) and, the first time its key
   * generation is seen, `evidenceFile` (the client's verified evidence for that generation).
   */
  async write(record: ReceiptV2Record, evidenceFile: Uint8Array): Promise<AuditFiles> {
    if (record.proof === undefined) throw new CloisterError('RECEIPT_INVALID', 'an audit record needs the inclusion proof (receiptProofs)');
    const generation = toHex(decodeReceiptLeaf(record.leaf).keyConfigDigest).slice(0, 16);
    const evidence = join(this.#dir, `evidence-${generation}.cbor`);
    if (!this.#evidenceWritten.has(generation)) {
      await writeNew(evidence, evidenceFile, true);
      this.#evidenceWritten.add(generation);
    }
    const path = join(this.#dir, `${generation}-${stamp()}-${this.#run}-${++this.#n}.record.cbor`);
    await writeNew(path, encodeAuditRecord({ leaf: record.leaf, index: record.index, salt: record.salt, proof: record.proof }), false);
    return { evidence, record: path };
  }

  /** Writes one version-1 receipt (JSON) and, the first time its key config is seen, `evidenceFile`. */
  async writeReceipt(record: ReceiptRecord, evidenceFile: Uint8Array): Promise<AuditFiles> {
    const key = toHex(record.keyConfigDigest).slice(0, 16);
    const evidence = join(this.#dir, `evidence-${key}.cbor`);
    if (!this.#evidenceWritten.has(key)) {
      await writeNew(evidence, evidenceFile, true);
      this.#evidenceWritten.add(key);
    }
    // A replica's statement once, not in every receipt (a replica re-attests it every minute or so).
    const statement = record.replica?.statement;
    if (statement !== undefined) {
      const name = statementFileName(statement);
      if (!this.#statementsWritten.has(name)) {
        await writeNew(join(this.#dir, name), statement, true);
        this.#statementsWritten.add(name);
      }
    }
    const path = join(this.#dir, `${key}-${stamp()}-${this.#run}-${++this.#n}.receipt.json`);
    await writeNew(path, new TextEncoder().encode(`${JSON.stringify(receiptToJson(record, { detachStatement: true }), null, 2)}\n`), false);
    return { evidence, record: path };
  }
}

function stamp(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

/** Writes a new file (0600); an existing evidence file of the same generation is kept when `mayExist`. */
async function writeNew(path: string, bytes: Uint8Array, mayExist: boolean): Promise<void> {
  try {
    await writeFile(path, bytes, { flag: 'wx', mode: 0o600 });
  } catch (cause) {
    const exists = (cause as NodeJS.ErrnoException).code === 'EEXIST';
    if (exists && mayExist) return;
    throw new CloisterError(exists ? 'INVALID_ARGUMENT' : 'CONFIG_INVALID', exists ? `${path} exists; not overwritten` : `cannot write ${path}`, { cause });
  }
}

/** Most audit records waiting to be written (AuditWriter); more are dropped and logged. */
export const MAX_PENDING_AUDIT_WRITES = 256;

/**
 * Writes records in the background, in order, at most `maxPending` waiting (more are dropped,
 * counted in the log: an answer is never held up by its audit record); failures are logged
 * content-free. `cloister gateway --audit-dir`.
 */
export class AuditWriter {
  #chain: Promise<void> = Promise.resolve();
  #pending = 0;
  #dropped = 0;

  constructor(
    private readonly dir: AuditDirectory,
    private readonly log: (line: string) => void,
    private readonly maxPending = MAX_PENDING_AUDIT_WRITES,
  ) {
    if (!Number.isSafeInteger(maxPending) || maxPending < 1) throw new CloisterError('CONFIG_INVALID', 'maxPending must be a positive integer');
  }

  /**
   * `record`: a receipts-v2 record, or a version-1 receipt (a fleet; a server without receipts
   * v2). `evidenceFile`: the client's evidence when the answer verified (before any later reconnect).
   */
  add(record: ReceiptV2Record | ReceiptRecord, evidenceFile: Uint8Array): void {
    if (this.#pending >= this.maxPending) {
      this.#dropped++;
      this.log(`audit: record dropped: ${this.maxPending} writes pending (MAX_PENDING_AUDIT_WRITES); ${this.#dropped} dropped so far`);
      return;
    }
    this.#pending++;
    this.#chain = this.#chain
      .then(() => ('leaf' in record ? this.dir.write(record, evidenceFile) : this.dir.writeReceipt(record, evidenceFile)))
      .then(
        () => undefined,
        (err: unknown) => this.log(`audit: ${err instanceof CloisterError ? `${err.code}: ${err.message}` : 'write failed'}`),
      )
      .finally(() => {
        this.#pending--;
      });
  }

  /** Resolves once every accepted record was written (or its failure logged). */
  idle(): Promise<void> {
    return this.#chain;
  }
}
