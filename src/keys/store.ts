/**
 * The key broker's durable state: one append-only log file, every record encrypted under
 * the operator's store key and fsync'ed before the broker answers (docs/KEYS.md "Store").
 *
 *   file    = header || record*
 *   header  = "CLKBLOG1" || salt (16) || check (32)       check = HMAC-SHA256(storeKey, "check" || salt)
 *   record  = u32be(n) || nonce (12) || ciphertext (n - 12, AES-256-GCM, tag last)
 *   aad     = "cloister/key-broker/log/v1" || u64be(sequence) || previous record's tag (16; zeros first)
 *
 * The chained AAD means records cannot be reordered, dropped from the middle or moved
 * between stores; a wrong store key is refused by the header check before anything is read.
 * Crash safety: a record is written with one write() and fsync'ed before it counts; on open,
 * a partial record at the end (a crash mid-write) is cut off, and so is a complete last
 * record that fails authentication (a torn write on power loss). A record before the last
 * that fails is STORE_CORRUPT: the broker refuses to start. What this cannot detect: the
 * removal of whole records from the end (an attacker with the disk can roll the log back).
 */
import { createHmac, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, writeSync, ftruncateSync, existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CloisterError } from '../errors.js';
import { aeadOpen, aeadSeal } from '../crypto/aead.js';
import { utf8 } from '../core/bytes.js';
import { timingSafeEqualBytes } from '../crypto/ct.js';

export const STORE_FILE = 'broker.log';
const MAGIC = utf8('CLKBLOG1');
const HEADER_BYTES = MAGIC.length + 16 + 32;
const AAD_LABEL = utf8('cloister/key-broker/log/v1');
/** Largest single record. */
export const MAX_RECORD_BYTES = 1024 * 1024;
/** Largest store file read at start-up. */
export const DEFAULT_MAX_STORE_BYTES = 512 * 1024 * 1024;

export interface OpenStoreResult {
  readonly store: BrokerStore;
  readonly records: readonly unknown[];
  /** Bytes cut off the end (a crash mid-write), 0 when the log was clean. */
  readonly recoveredBytes: number;
}

function check(storeKey: Uint8Array, salt: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac('sha256', storeKey).update('check').update(salt).digest());
}

function aad(seq: number, prevTag: Uint8Array): Uint8Array {
  const out = Buffer.alloc(AAD_LABEL.length + 8 + 16);
  out.set(AAD_LABEL, 0);
  out.writeBigUInt64BE(BigInt(seq), AAD_LABEL.length);
  out.set(prevTag, AAD_LABEL.length + 8);
  return out;
}

export class BrokerStore {
  readonly path: string;
  readonly #key: Uint8Array;
  #fd: number;
  #seq: number;
  #prevTag: Uint8Array;

  private constructor(path: string, key: Uint8Array, fd: number, seq: number, prevTag: Uint8Array) {
    this.path = path;
    this.#key = key;
    this.#fd = fd;
    this.#seq = seq;
    this.#prevTag = prevTag;
  }

  /** Open (or create) the store in `dir`, returning every record in order. */
  static async open(dir: string, storeKey: Uint8Array, options: { readonly maxStoreBytes?: number } = {}): Promise<OpenStoreResult> {
    if (storeKey.byteLength !== 32) throw new CloisterError('CONFIG_INVALID', 'the store key must be 32 bytes');
    const key = Uint8Array.from(storeKey);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const path = join(dir, STORE_FILE);
    if (!existsSync(path)) {
      const salt = new Uint8Array(randomBytes(16));
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, Buffer.concat([MAGIC, salt, check(key, salt)]));
      fsyncSync(fd);
      closeSync(fd);
    }
    const maxBytes = options.maxStoreBytes ?? DEFAULT_MAX_STORE_BYTES;
    const bytes = readFileSync(path);
    if (bytes.byteLength > maxBytes) throw new CloisterError('LIMIT_EXCEEDED', `store '${path}' is larger than ${maxBytes} bytes (maxStoreBytes)`);
    if (bytes.byteLength < HEADER_BYTES || !timingSafeEqualBytes(bytes.subarray(0, MAGIC.length), MAGIC)) {
      throw new CloisterError('STORE_CORRUPT', `'${path}' is not a key broker store`);
    }
    const salt = bytes.subarray(MAGIC.length, MAGIC.length + 16);
    if (!timingSafeEqualBytes(check(key, salt), bytes.subarray(MAGIC.length + 16, HEADER_BYTES))) {
      throw new CloisterError('STORE_CORRUPT', `the store key does not open '${path}' (wrong --store-key-file?)`);
    }
    const records: unknown[] = [];
    let off = HEADER_BYTES;
    let seq = 0;
    let prevTag: Uint8Array = new Uint8Array(16);
    let goodEnd = off;
    while (off < bytes.byteLength) {
      if (bytes.byteLength - off < 4) break;
      const n = bytes.readUInt32BE(off);
      if (n < 12 + 16 || n > MAX_RECORD_BYTES + 28) {
        if (off + 4 + n >= bytes.byteLength) break;
        throw new CloisterError('STORE_CORRUPT', `'${path}': record ${seq} has an impossible length ${n}`);
      }
      if (off + 4 + n > bytes.byteLength) break;
      const nonce = bytes.subarray(off + 4, off + 16);
      const ct = bytes.subarray(off + 16, off + 4 + n);
      let plain: Uint8Array;
      try {
        plain = aeadOpen('aes-256-gcm', key, nonce, aad(seq, prevTag), ct);
      } catch (cause) {
        if (off + 4 + n === bytes.byteLength) break; // torn last record
        throw new CloisterError('STORE_CORRUPT', `'${path}': record ${seq} fails authentication`, { cause });
      }
      try {
        records.push(JSON.parse(Buffer.from(plain).toString('utf8')));
      } catch (cause) {
        throw new CloisterError('STORE_CORRUPT', `'${path}': record ${seq} is not JSON`, { cause });
      }
      prevTag = Uint8Array.from(ct.subarray(ct.byteLength - 16));
      seq++;
      off += 4 + n;
      goodEnd = off;
    }
    const fd = openSync(path, 'r+');
    const recoveredBytes = bytes.byteLength - goodEnd;
    if (recoveredBytes > 0) {
      ftruncateSync(fd, goodEnd);
      fsyncSync(fd);
    }
    closeSync(fd);
    const appendFd = openSync(path, 'a');
    return { store: new BrokerStore(path, key, appendFd, seq, prevTag), records, recoveredBytes };
  }

  /** Append one record and fsync; only then does it count. */
  append(record: unknown): void {
    if (this.#fd < 0) throw new CloisterError('INTERNAL', 'the store is closed');
    const plain = utf8(JSON.stringify(record));
    if (plain.byteLength > MAX_RECORD_BYTES) throw new CloisterError('LIMIT_EXCEEDED', `a store record is larger than ${MAX_RECORD_BYTES} bytes`);
    const nonce = new Uint8Array(randomBytes(12));
    const ct = aeadSeal('aes-256-gcm', this.#key, nonce, aad(this.#seq, this.#prevTag), plain);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(12 + ct.byteLength, 0);
    const buf = Buffer.concat([head, nonce, ct]);
    let done = 0;
    while (done < buf.byteLength) done += writeSync(this.#fd, buf, done);
    fsyncSync(this.#fd);
    this.#seq++;
    this.#prevTag = Uint8Array.from(ct.subarray(ct.byteLength - 16));
  }

  close(): void {
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#fd = -1;
    this.#key.fill(0);
  }
}
