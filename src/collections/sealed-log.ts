/**
 * One collection on the host's disk (docs/COLLECTIONS.md, "Storage"): an append-only file of
 * AEAD-sealed records, hash-chained.
 *
 *   file   = header || record*
 *   header = "CLSTRCOL" || 0x01 || collection id (16 bytes)
 *   record = u32 length (big-endian, of what follows) || nonce (12, random) || AES-256-GCM(
 *              key = the collection's key, aad = RECORD_AAD_LABEL || id || u64 index || prev,
 *              plaintext = CBOR record)
 *   prev   = SHA-256 of the previous record's bytes after its length (the header for index 0)
 *
 * Crash safety: a record is acknowledged only after its bytes and an fsync returned. At open,
 * an incomplete or unauthentic LAST record is a write that was never acknowledged: it is cut
 * off (the file truncated to the last good record). Any other failure (a bad header, a bad
 * record before the last, a length over maxRecordBytes) is STORAGE_CORRUPT: the collection is
 * not served. Rewrites (compaction after a delete) go to a temporary file, fsynced, renamed
 * over the old one, and the directory fsynced: the old or the new file, never a mix.
 *
 * What a host can do (docs/COLLECTIONS.md, "Rollback"): drop the last records or put back an
 * older copy of the whole file (rollback); it cannot forge, alter, reorder or splice records,
 * or move them between collections. The record count and chain head (the collection version
 * and head digest) go into every answer's report, so a client that keeps the last version it
 * saw detects a rollback.
 */
import { createHash } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { CloisterError } from '../errors.js';
import { aeadOpen, aeadSeal } from '../crypto/aead.js';
import { concatBytes, utf8 } from '../core/bytes.js';
import { randomBytesPooled } from '../crypto/random.js';

export const LOG_MAGIC = utf8('CLSTRCOL');
export const LOG_FORMAT = 1;
export const COLLECTION_ID_LENGTH = 16;
const HEADER_LENGTH = LOG_MAGIC.byteLength + 1 + COLLECTION_ID_LENGTH;
const NONCE_LENGTH = 12;
/** AES-256-GCM tag length. */
const AEAD_TAG_LENGTH = 16;
const RECORD_AAD_LABEL = utf8('cloister/collection-record/v1\0');
/** Largest sealed record accepted or written (a batch of documents with their vectors). Default 64 MiB. */
export const DEFAULT_MAX_RECORD_BYTES = 64 << 20;

export interface OpenedLog {
  readonly log: SealedLog;
  /** Record plaintexts in order. */
  readonly records: readonly Uint8Array[];
  /** Bytes cut off an unacknowledged last record (0 for a clean file). */
  readonly truncatedBytes: number;
}

function sha256(b: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(b).digest());
}

function u64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}

function header(id: Uint8Array): Uint8Array {
  return concatBytes(LOG_MAGIC, Uint8Array.of(LOG_FORMAT), id);
}

async function fsyncDir(path: string): Promise<void> {
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

function corrupt(path: string, why: string): CloisterError {
  return new CloisterError('STORAGE_CORRUPT', `collection file '${path}': ${why}`, { detail: { file: path } });
}

export class SealedLog {
  readonly path: string;
  readonly id: Uint8Array;
  readonly #key: Uint8Array;
  readonly #maxRecordBytes: number;
  #fd: FileHandle;
  #index: number;
  #prev: Uint8Array;
  #size: number;
  #tail: Promise<void> = Promise.resolve();

  private constructor(path: string, id: Uint8Array, key: Uint8Array, fd: FileHandle, index: number, prev: Uint8Array, size: number, maxRecordBytes: number) {
    this.path = path;
    this.id = id;
    this.#key = key;
    this.#fd = fd;
    this.#index = index;
    this.#prev = prev;
    this.#size = size;
    this.#maxRecordBytes = maxRecordBytes;
  }

  /** Records in the file (the collection's record count, part of its version). */
  get records(): number {
    return this.#index;
  }

  /** SHA-256 chain head: the digest of the last record (of the header when empty). */
  get head(): Uint8Array {
    return this.#prev;
  }

  #seal(index: number, prev: Uint8Array, plaintext: Uint8Array): Uint8Array {
    const nonce = randomBytesPooled(NONCE_LENGTH);
    const aad = concatBytes(RECORD_AAD_LABEL, this.id, u64(index), prev);
    const body = concatBytes(nonce, aeadSeal('aes-256-gcm', this.#key, nonce, aad, plaintext));
    if (body.byteLength > this.#maxRecordBytes) {
      throw new CloisterError('LIMIT_EXCEEDED', `a collection record of ${body.byteLength} bytes exceeds maxRecordBytes (${this.#maxRecordBytes})`, {
        detail: { limit: 'maxRecordBytes', max: this.#maxRecordBytes, public: true },
      });
    }
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, body.byteLength);
    return concatBytes(len, body);
  }

  /** Writes a new file holding `records` (temporary file, fsync, rename, directory fsync). */
  static async create(path: string, id: Uint8Array, key: Uint8Array, records: readonly Uint8Array[], maxRecordBytes = DEFAULT_MAX_RECORD_BYTES): Promise<SealedLog> {
    if (id.byteLength !== COLLECTION_ID_LENGTH) throw new CloisterError('INVALID_ARGUMENT', 'a collection id is 16 bytes');
    const head = header(id);
    const tmp = `${path}.tmp`;
    const fd = await open(tmp, 'w', 0o600);
    const log = new SealedLog(path, id, key, fd, 0, sha256(head), head.byteLength, maxRecordBytes);
    try {
      const parts: Uint8Array[] = [head];
      for (const r of records) parts.push(log.#next(r));
      await fd.writeFile(concatBytes(...parts));
      await fd.sync();
      await fd.close();
      await rename(tmp, path);
      await fsyncDir(path);
    } catch (err) {
      await fd.close().catch(() => undefined);
      await rm(tmp, { force: true });
      throw err;
    }
    log.#fd = await open(path, 'r+');
    return log;
  }

  /** The framed bytes of the next record; advances the chain. */
  #next(plaintext: Uint8Array): Uint8Array {
    const framed = this.#seal(this.#index, this.#prev, plaintext);
    this.#prev = sha256(framed.subarray(4));
    this.#index++;
    this.#size += framed.byteLength;
    return framed;
  }

  /** Opens and authenticates every record; cuts off an unacknowledged last record. */
  static async open(path: string, key: Uint8Array, maxRecordBytes = DEFAULT_MAX_RECORD_BYTES): Promise<OpenedLog> {
    const fd = await open(path, 'r+');
    try {
      const bytes = new Uint8Array(await fd.readFile());
      if (bytes.byteLength < HEADER_LENGTH || !Buffer.from(bytes.subarray(0, LOG_MAGIC.byteLength)).equals(LOG_MAGIC) || bytes[LOG_MAGIC.byteLength] !== LOG_FORMAT) {
        throw corrupt(path, 'not a collection file of format 1');
      }
      const id = bytes.slice(LOG_MAGIC.byteLength + 1, HEADER_LENGTH);
      let prev = sha256(bytes.subarray(0, HEADER_LENGTH));
      let at = HEADER_LENGTH;
      let index = 0;
      const records: Uint8Array[] = [];
      let truncatedBytes = 0;
      while (at < bytes.byteLength) {
        const rest = bytes.byteLength - at;
        const len = rest >= 4 ? new DataView(bytes.buffer, bytes.byteOffset + at, 4).getUint32(0) : -1;
        if (len > maxRecordBytes) throw corrupt(path, `record ${index} of ${len} bytes exceeds maxRecordBytes (${maxRecordBytes})`);
        const complete = len >= NONCE_LENGTH + AEAD_TAG_LENGTH && rest >= 4 + len;
        let plaintext: Uint8Array | undefined;
        if (complete) {
          const body = bytes.subarray(at + 4, at + 4 + len);
          const aad = concatBytes(RECORD_AAD_LABEL, id, u64(index), prev);
          try {
            plaintext = aeadOpen('aes-256-gcm', key, body.subarray(0, NONCE_LENGTH), aad, body.subarray(NONCE_LENGTH));
          } catch {
            plaintext = undefined;
          }
        }
        if (plaintext === undefined) {
          // Only the last record may be bad: a write cut by a crash, never acknowledged.
          const last = !complete || at + 4 + len === bytes.byteLength;
          if (!last) throw corrupt(path, `record ${index} does not authenticate`);
          truncatedBytes = rest;
          await fd.truncate(at);
          await fd.sync();
          break;
        }
        records.push(plaintext);
        prev = sha256(bytes.subarray(at + 4, at + 4 + len));
        at += 4 + len;
        index++;
      }
      return { log: new SealedLog(path, id, key, fd, index, prev, at, maxRecordBytes), records, truncatedBytes };
    } catch (err) {
      await fd.close().catch(() => undefined);
      if (err instanceof CloisterError) throw err;
      throw new CloisterError('STORAGE_CORRUPT', `collection file '${path}' could not be read`, { cause: err, detail: { file: path } });
    }
  }

  /** Appends one record; resolves once it is on disk (fsync). Appends run one at a time. */
  append(plaintext: Uint8Array): Promise<void> {
    const run = this.#tail.then(async () => {
      const index = this.#index;
      const prev = this.#prev;
      const size = this.#size;
      const framed = this.#next(plaintext);
      try {
        await this.#fd.write(framed, 0, framed.byteLength, size);
        await this.#fd.sync();
      } catch (err) {
        // Not acknowledged: the chain goes back, the partial bytes are cut off.
        this.#index = index;
        this.#prev = prev;
        this.#size = size;
        await this.#fd.truncate(size).catch(() => undefined);
        throw new CloisterError('INTERNAL', `cannot write collection file '${this.path}'`, { cause: err, detail: { file: this.path } });
      }
    });
    this.#tail = run.catch(() => undefined);
    return run;
  }

  /** Replaces the file with one holding exactly `records` (compaction); the log continues there. */
  async rewrite(records: readonly Uint8Array[]): Promise<void> {
    const run = this.#tail.then(async () => {
      const next = await SealedLog.create(this.path, this.id, this.#key, records, this.#maxRecordBytes);
      await this.#fd.close().catch(() => undefined);
      this.#fd = next.#fd;
      this.#index = next.#index;
      this.#prev = next.#prev;
      this.#size = next.#size;
    });
    this.#tail = run.catch(() => undefined);
    return run;
  }

  async close(): Promise<void> {
    await this.#tail;
    await this.#fd.close().catch(() => undefined);
  }
}
