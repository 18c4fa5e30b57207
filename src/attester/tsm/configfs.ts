/**
 * Linux configfs-tsm report interface (Documentation/ABI/testing/configfs-tsm):
 *
 *   mkdir  /sys/kernel/config/tsm/report/<entry>
 *   write  <entry>/inblob      up to 64 bytes of report data (we always write exactly 64)
 *   read   <entry>/outblob     the SNP report / TDX quote for the last inblob
 *   read   <entry>/auxblob     SNP: the certificate table (may be absent or empty)
 *   read   <entry>/generation  incremented by every write to inblob or an option
 *   read   <entry>/provider    "sev_guest" or "tdx_guest"
 *   rmdir  <entry>
 *
 * Another process that knows the entry name could write inblob between our write and our
 * read; `generation` exposes that: we read it after our write (it must be exactly one more
 * than before) and again after reading the blobs (it must not have moved). On a mismatch the
 * whole exchange is retried, a bounded number of times, then it fails.
 *
 * File access goes through `TsmFileSystem` so that tests can run the attester against a fake
 * tree that behaves like the kernel's.
 */
import { randomBytes } from 'node:crypto';
import { open, mkdir, rmdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CloisterError } from '../../errors.js';

export const DEFAULT_CONFIGFS_TSM_ROOT = '/sys/kernel/config/tsm/report';
const TSM_INBLOB_BYTES = 64;

export interface TsmFileSystem {
  mkdir(path: string): Promise<void>;
  rmdir(path: string): Promise<void>;
  /** Read a whole file; fails with LIMIT_EXCEEDED when it is longer than maxBytes. */
  readFile(path: string, maxBytes: number): Promise<Uint8Array>;
  writeFile(path: string, data: Uint8Array): Promise<void>;
  /** True when the path exists (a missing optional attribute is not an error). */
  exists(path: string): Promise<boolean>;
}

async function readBounded(path: string, maxBytes: number): Promise<Uint8Array> {
  const fh = await open(path, 'r');
  try {
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const buf = new Uint8Array(Math.min(64 * 1024, maxBytes + 1 - total));
      const { bytesRead } = await fh.read(buf, 0, buf.byteLength, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > maxBytes) {
        throw new CloisterError('LIMIT_EXCEEDED', 'configfs-tsm attribute is larger than allowed', { detail: { max: maxBytes } });
      }
      chunks.push(buf.slice(0, bytesRead));
    }
    const out = new Uint8Array(total);
    let off = 0;
    for (const c of chunks) {
      out.set(c, off);
      off += c.byteLength;
    }
    return out;
  } finally {
    await fh.close();
  }
}

/** The real filesystem. */
export const NODE_TSM_FS: TsmFileSystem = {
  mkdir: async (p) => {
    await mkdir(p);
  },
  rmdir: (p) => rmdir(p),
  readFile: readBounded,
  writeFile: (p, d) => writeFile(p, d),
  exists: async (p) => {
    try {
      await stat(p);
      return true;
    } catch {
      return false;
    }
  },
};

export interface ConfigfsTsmOptions {
  /** Default /sys/kernel/config/tsm/report. */
  readonly root?: string;
  readonly fs?: TsmFileSystem;
  /** Exchanges retried after a concurrent writer was detected. Default 3 (4 attempts). */
  readonly maxRetries?: number;
  /** Largest outblob accepted. Default 64 KiB (an SNP report is 1184 bytes, a TDX quote ~5 KiB). */
  readonly maxOutblobBytes?: number;
  /** Largest auxblob accepted. Default 64 KiB. */
  readonly maxAuxblobBytes?: number;
  /** Entry directory name generator (tests). */
  readonly entryName?: () => string;
}

interface TsmReport {
  readonly provider: string;
  readonly outblob: Uint8Array;
  /** Present when the provider wrote a non-empty auxblob. */
  readonly auxblob?: Uint8Array;
  readonly generation: number;
}

function parseGeneration(b: Uint8Array): number {
  const s = new TextDecoder().decode(b).trim();
  if (!/^\d{1,15}$/.test(s)) throw new CloisterError('ATTESTER_FAILED', 'configfs-tsm generation is not a number');
  return Number(s);
}

/** One configfs-tsm report exchange at a time per instance. */
export class ConfigfsTsm {
  readonly root: string;
  readonly #fs: TsmFileSystem;
  readonly #maxRetries: number;
  readonly #maxOut: number;
  readonly #maxAux: number;
  readonly #entryName: () => string;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(options: ConfigfsTsmOptions = {}) {
    this.root = options.root ?? DEFAULT_CONFIGFS_TSM_ROOT;
    this.#fs = options.fs ?? NODE_TSM_FS;
    this.#maxRetries = options.maxRetries ?? 3;
    this.#maxOut = options.maxOutblobBytes ?? 64 * 1024;
    this.#maxAux = options.maxAuxblobBytes ?? 64 * 1024;
    this.#entryName = options.entryName ?? (() => `cloister-${process.pid}-${randomBytes(8).toString('hex')}`);
    if (!Number.isInteger(this.#maxRetries) || this.#maxRetries < 0 || this.#maxRetries > 100) {
      throw new CloisterError('INVALID_ARGUMENT', 'maxRetries must be an integer 0..100');
    }
  }

  /** True when the configfs-tsm report directory exists. */
  available(): Promise<boolean> {
    return this.#fs.exists(this.root);
  }

  /** The provider name ("sev_guest", "tdx_guest"), read from a short-lived probe entry. */
  async provider(): Promise<string> {
    return this.#withEntry(async (dir) => this.#readProvider(dir));
  }

  /** Produce a report for exactly 64 bytes of report data. */
  report(reportData: Uint8Array): Promise<TsmReport> {
    if (!(reportData instanceof Uint8Array) || reportData.byteLength !== TSM_INBLOB_BYTES) {
      return Promise.reject(new CloisterError('INVALID_ARGUMENT', 'configfs-tsm report data must be exactly 64 bytes'));
    }
    const data = new Uint8Array(reportData);
    // Serialize: one exchange at a time keeps the generation bookkeeping simple.
    const run = this.#queue.then(
      () => this.#withEntry((dir) => this.#exchange(dir, data)),
      () => this.#withEntry((dir) => this.#exchange(dir, data)),
    );
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #readProvider(dir: string): Promise<string> {
    const p = new TextDecoder().decode(await this.#fs.readFile(join(dir, 'provider'), 256)).trim();
    if (!/^[a-z0-9_]{1,64}$/.test(p)) throw new CloisterError('ATTESTER_FAILED', 'configfs-tsm provider name is malformed');
    return p;
  }

  async #withEntry<T>(fn: (dir: string) => Promise<T>): Promise<T> {
    const name = this.#entryName();
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(name) || name === '.' || name === '..') {
      throw new CloisterError('INVALID_ARGUMENT', 'configfs-tsm entry name is not a plain name');
    }
    const dir = join(this.root, name);
    try {
      await this.#fs.mkdir(dir);
    } catch (cause) {
      throw new CloisterError('PLATFORM_UNAVAILABLE', 'cannot create a configfs-tsm report entry', { cause });
    }
    try {
      return await fn(dir);
    } finally {
      // Always remove the entry, even when the exchange failed.
      await this.#fs.rmdir(dir).catch(() => undefined);
    }
  }

  async #exchange(dir: string, reportData: Uint8Array): Promise<TsmReport> {
    const provider = await this.#readProvider(dir);
    const genPath = join(dir, 'generation');
    for (let attempt = 0; attempt <= this.#maxRetries; attempt++) {
      const before = parseGeneration(await this.#fs.readFile(genPath, 32));
      try {
        await this.#fs.writeFile(join(dir, 'inblob'), reportData);
      } catch (cause) {
        throw new CloisterError('ATTESTER_FAILED', 'configfs-tsm rejected the report data', { cause });
      }
      const written = parseGeneration(await this.#fs.readFile(genPath, 32));
      if (written !== before + 1) continue; // someone else wrote too: our inblob may be gone
      let outblob: Uint8Array;
      try {
        outblob = await this.#fs.readFile(join(dir, 'outblob'), this.#maxOut);
      } catch (cause) {
        if (cause instanceof CloisterError) throw cause;
        throw new CloisterError('ATTESTER_FAILED', 'configfs-tsm did not produce a report', { cause });
      }
      let auxblob: Uint8Array | undefined;
      const auxPath = join(dir, 'auxblob');
      if (await this.#fs.exists(auxPath)) {
        const aux = await this.#fs.readFile(auxPath, this.#maxAux);
        if (aux.byteLength > 0) auxblob = aux;
      }
      const after = parseGeneration(await this.#fs.readFile(genPath, 32));
      if (after !== written) continue; // the blobs we read may belong to another writer's inblob
      if (outblob.byteLength === 0) throw new CloisterError('ATTESTER_FAILED', 'configfs-tsm produced an empty report');
      return { provider, outblob, generation: after, ...(auxblob === undefined ? {} : { auxblob }) };
    }
    throw new CloisterError('ATTESTER_FAILED', 'configfs-tsm report kept changing under a concurrent writer', {
      detail: { retries: this.#maxRetries },
    });
  }
}
