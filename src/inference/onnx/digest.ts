/**
 * The model digest that goes into the key config (DESIGN.md "Keys and the attestation
 * binding"): a client that verified the evidence learns exactly which model files serve it.
 *
 * Construction (version 1), over every regular file below the model directory:
 *
 *   files   = all regular files, recursively; a symbolic link or any other non-regular entry
 *             is an error (fail closed: a link could point outside the measured tree)
 *   path    = path relative to the model directory, segments joined with "/", UTF-8
 *   order   = ascending byte order of the UTF-8 paths
 *   digest  = SHA-256( "cloister/model-digest/v1" || 0x00
 *                      || for each file: u32be(len(path)) || path || u64be(len(contents)) || contents )
 *
 * Length prefixes make the encoding injective (no two file sets hash the same input), and
 * every file counts - config, tokenizer and weights alike, plus anything else shipped there.
 */
import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

import { CloisterError } from '../../errors.js';

const MODEL_DIGEST_LABEL = 'cloister/model-digest/v1';
export const DEFAULT_MAX_MODEL_FILES = 1024;
const MAX_DEPTH = 16;

interface ModelDigestOptions {
  /** Most files a model directory may hold (LIMIT_EXCEEDED beyond). Default 1024. */
  readonly maxFiles?: number;
}

interface FileEntry {
  readonly rel: string;
  readonly relBytes: Buffer;
  readonly abs: string;
}

/** Every regular file below `root`, sorted by UTF-8 path (the digest's order and rules). */
export async function listModelFiles(root: string, maxFiles: number = DEFAULT_MAX_MODEL_FILES): Promise<readonly { readonly rel: string; readonly abs: string }[]> {
  return listFiles(root, maxFiles);
}

async function listFiles(root: string, maxFiles: number): Promise<FileEntry[]> {
  const out: FileEntry[] = [];
  const walk = async (dir: string, prefix: readonly string[]): Promise<void> => {
    if (prefix.length > MAX_DEPTH) {
      throw new CloisterError('LIMIT_EXCEEDED', 'model directory is nested too deeply', { detail: { maxDepth: MAX_DEPTH } });
    }
    const entries = await readdir(dir, { withFileTypes: true });
    for (const e of entries) {
      const abs = join(dir, e.name);
      const parts = [...prefix, e.name];
      if (e.isDirectory()) {
        await walk(abs, parts);
      } else if (e.isFile()) {
        if (out.length >= maxFiles) {
          throw new CloisterError('LIMIT_EXCEEDED', 'model directory holds too many files', { detail: { maxFiles } });
        }
        const rel = parts.join('/');
        out.push({ rel, relBytes: Buffer.from(rel, 'utf8'), abs });
      } else {
        throw new CloisterError('CONFIG_INVALID', 'model directory contains a link or special file', {
          detail: { path: parts.join('/') },
        });
      }
    }
  };
  await walk(root, []);
  return out.sort((a, b) => Buffer.compare(a.relBytes, b.relBytes));
}

/** SHA-256 model digest (construction above); 32 bytes. */
export async function modelDigest(dir: string, options: ModelDigestOptions = {}): Promise<Uint8Array> {
  const maxFiles = options.maxFiles ?? DEFAULT_MAX_MODEL_FILES;
  if (!Number.isInteger(maxFiles) || maxFiles < 1) throw new CloisterError('INVALID_ARGUMENT', 'maxFiles must be a positive integer');
  const rootStat = await lstat(dir).catch((cause: unknown) => {
    throw new CloisterError('NOT_FOUND', 'model directory not found', { cause });
  });
  if (!rootStat.isDirectory()) throw new CloisterError('CONFIG_INVALID', 'model path is not a directory');

  return digestFileSet(MODEL_DIGEST_LABEL, await listFiles(dir, maxFiles));
}

/** One file's header in the digest: u32 BE path length, the UTF-8 path, u64 BE file size. */
function hashEntryHeader(hash: Hash, relBytes: Buffer, size: number): void {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(relBytes.length, 0);
  hash.update(header);
  hash.update(relBytes);
  const len = Buffer.alloc(8);
  len.writeBigUInt64BE(BigInt(size), 0);
  hash.update(len);
}

/**
 * The construction above over an explicit file list, under another domain label (the
 * server code digest uses it too, see src/server/code-digest.ts). `rel` is the path that is
 * hashed, `abs` where to read it; entries are hashed in ascending byte order of `rel`
 * whatever order they come in, and duplicate paths are an error.
 */
export async function digestFileSet(label: string, entries: readonly { readonly rel: string; readonly abs: string }[]): Promise<Uint8Array> {
  const files = entries
    .map((e) => ({ rel: e.rel, relBytes: Buffer.from(e.rel, 'utf8'), abs: e.abs }))
    .sort((a, b) => Buffer.compare(a.relBytes, b.relBytes));
  for (let i = 1; i < files.length; i++) {
    if (files[i]?.rel === files[i - 1]?.rel) throw new CloisterError('INVALID_ARGUMENT', 'duplicate path in a file set digest');
  }
  const hash = createHash('sha256');
  hash.update(Buffer.from(label, 'utf8'));
  hash.update(Buffer.of(0));
  for (const f of files) {
    const st = await lstat(f.abs);
    hashEntryHeader(hash, f.relBytes, st.size);
    // Stream the file and count what was actually hashed: a file that changes size between
    // the stat and the read must not yield a digest for a length it does not have.
    let read = 0;
    for await (const chunk of createReadStream(f.abs)) {
      const b = chunk as Buffer;
      read += b.length;
      hash.update(b);
    }
    if (read !== st.size) {
      throw new CloisterError('CONFIG_INVALID', 'a file changed while it was being hashed', { detail: { path: f.rel } });
    }
  }
  return new Uint8Array(hash.digest());
}

/**
 * The model digest (construction above) of a model held in memory: `files` maps each
 * relative path to its contents. Gives the same digest as `modelDigest` on a directory
 * holding exactly these files.
 */
export function modelDigestOfFiles(files: ReadonlyMap<string, Uint8Array>): Uint8Array {
  const entries = [...files.entries()].map(([rel, bytes]) => ({ relBytes: Buffer.from(rel, 'utf8'), bytes }));
  entries.sort((a, b) => Buffer.compare(a.relBytes, b.relBytes));
  const hash = createHash('sha256');
  hash.update(Buffer.from(MODEL_DIGEST_LABEL, 'utf8'));
  hash.update(Buffer.of(0));
  for (const e of entries) {
    hashEntryHeader(hash, e.relBytes, e.bytes.byteLength);
    hash.update(e.bytes);
  }
  return new Uint8Array(hash.digest());
}
