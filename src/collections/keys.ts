/**
 * Where the storage keys of sealed collections come from (docs/COLLECTIONS.md, "Keys").
 *
 * `BrokerStorageKeys` (./broker-keys.ts) obtains the master storage key from the key broker
 * (src/keys/), released to this TEE only after attestation, and brings the broker's
 * monotonic counters (rollback protection, docs/COLLECTIONS.md "Rollback"). The fallback,
 * `KeyFileStorageKeys`, reads a 32-byte master key from an operator-supplied file. That file
 * is readable by whoever operates the host, so the host can decrypt the collections, and
 * there is no counter: `serve` says so loudly at start-up. Per collection, the key is
 * HKDF-SHA256(master, salt = collection id, info = "cloister/collection-key/v1"), so one
 * collection's key opens no other.
 */
import { readFile, stat } from 'node:fs/promises';
import { CloisterError } from '../errors.js';
import { hkdfExpand, hkdfExtract } from '../crypto/hkdf.js';
import { utf8 } from '../core/bytes.js';

/**
 * Monotonic counters outside the host's reach (the key broker's), one per collection, named by
 * the collection id (hex). A collection's counter is its last acknowledged version.
 */
export interface VersionCounters {
  /** Every counter, read fresh (the answer is authenticated). */
  readAll(): Promise<ReadonlyMap<string, number>>;
  /** Raise a counter to at least `value`; resolves once that is durable where the counter lives. */
  advance(counter: string, value: number): Promise<void>;
}

export interface StorageKeySource {
  /** Where the key comes from, for the start-up log line ("key-file" or "key-broker"). */
  readonly kind: string;
  /** Whether a host operator can read the master key (true for a key file). */
  readonly hostReadable: boolean;
  /** Rollback counters, where the source has them (the key broker does, a key file does not). */
  readonly counters?: VersionCounters;
  /** The 32-byte AES-256-GCM key of one collection. */
  collectionKey(collectionId: Uint8Array): Uint8Array;
}

const INFO_BYTES = utf8('cloister/collection-key/v1');

/** The key of one collection under `master`. */
export function deriveCollectionKey(master: Uint8Array, collectionId: Uint8Array): Uint8Array {
  return hkdfExpand(hkdfExtract(collectionId, master), INFO_BYTES, 32);
}

const MAX_KEY_FILE_BYTES = 4096;

export class KeyFileStorageKeys implements StorageKeySource {
  readonly kind = 'key-file';
  readonly hostReadable = true;
  readonly #master: Uint8Array;

  private constructor(master: Uint8Array) {
    this.#master = master;
  }

  /** From 32 raw bytes. */
  static fromBytes(master: Uint8Array): KeyFileStorageKeys {
    if (master.byteLength !== 32) throw new CloisterError('CONFIG_INVALID', `a storage master key must be 32 bytes (got ${master.byteLength})`);
    return new KeyFileStorageKeys(Uint8Array.from(master));
  }

  /** From a file holding 64 hex digits (surrounding whitespace ignored) or 32 raw bytes. */
  static async fromFile(path: string): Promise<KeyFileStorageKeys> {
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch (cause) {
      throw new CloisterError('NOT_FOUND', `cannot read the collections key file '${path}'`, { cause });
    }
    if (size > MAX_KEY_FILE_BYTES) throw new CloisterError('CONFIG_INVALID', `the collections key file '${path}' is ${size} bytes (at most ${MAX_KEY_FILE_BYTES}; expected 64 hex digits or 32 bytes)`);
    const bytes = new Uint8Array(await readFile(path));
    if (bytes.byteLength === 32) return KeyFileStorageKeys.fromBytes(bytes);
    const text = Buffer.from(bytes).toString('latin1').trim();
    if (!/^[0-9a-fA-F]{64}$/.test(text)) {
      throw new CloisterError('CONFIG_INVALID', `the collections key file '${path}' must hold 64 hex digits or 32 raw bytes`);
    }
    return KeyFileStorageKeys.fromBytes(Uint8Array.from(Buffer.from(text, 'hex')));
  }

  collectionKey(collectionId: Uint8Array): Uint8Array {
    return deriveCollectionKey(this.#master, collectionId);
  }
}
