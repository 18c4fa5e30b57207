/**
 * Opening a sealed model inside the TEE (./format.ts): every file is decrypted into memory
 * (one buffer of its plaintext size, filled chunk by chunk), the plaintext model digest is
 * recomputed over what was decrypted and compared with the manifest. Any failure zeroes
 * everything decrypted so far and throws a coded error naming the file: nothing
 * half-opened ever reaches an engine.
 */
import { lstat, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CloisterError } from '../../errors.js';
import { aeadOpen } from '../../crypto/aead.js';
import { toHex } from '../../core/hex.js';
import { timingSafeEqualBytes } from '../../crypto/ct.js';
import { modelDigestOfFiles } from '../onnx/digest.js';
import {
  checkManifestMac,
  chunkAad,
  chunkCount,
  chunkNonce,
  DATA_DIR,
  DATA_KEY_BYTES,
  fileKey,
  GCM_TAG_BYTES,
  MANIFEST_FILE,
  MAX_MANIFEST_BYTES,
  parseManifest,
  sealedSize,
} from './format.js';
import type { Manifest } from './format.js';

export interface UnsealedModel {
  /** Relative path -> plaintext, in memory only. */
  readonly files: ReadonlyMap<string, Uint8Array>;
  /** The plaintext model digest (equal to the manifest's). */
  readonly digest: Uint8Array;
}

/** True when `dir` holds a sealed model manifest (a directory that is a sealed model). */
export async function isSealedModelDir(dir: string): Promise<boolean> {
  const st = await lstat(join(dir, MANIFEST_FILE)).catch(() => undefined);
  return st?.isFile() === true;
}

/** Read and parse `<dir>/manifest.json` (not yet authenticated: that needs the data key). */
export async function readManifest(dir: string): Promise<Manifest> {
  const path = join(dir, MANIFEST_FILE);
  const st = await lstat(path).catch((cause: unknown) => {
    throw new CloisterError('NOT_FOUND', `no sealed model manifest at '${path}'`, { cause, detail: { file: path } });
  });
  if (!st.isFile()) throw new CloisterError('SEALED_MODEL_INVALID', `'${path}' is not a regular file`, { detail: { file: path } });
  if (st.size > MAX_MANIFEST_BYTES) throw new CloisterError('SEALED_MODEL_INVALID', `'${path}' is larger than ${MAX_MANIFEST_BYTES} bytes`, { detail: { file: path } });
  try {
    return parseManifest(await readFile(path));
  } catch (err) {
    if (err instanceof CloisterError) throw new CloisterError(err.code, `${path}: ${err.message}`, { cause: err, detail: { file: path } });
    throw err;
  }
}

async function openFile(dir: string, m: Manifest, index: number, dataKey: Uint8Array): Promise<Uint8Array> {
  const f = m.files[index];
  if (f === undefined) throw new CloisterError('INTERNAL', 'file index out of range');
  const path = join(dir, DATA_DIR, ...f.path.split('/'));
  const st = await lstat(path).catch((cause: unknown) => {
    throw new CloisterError('SEALED_MODEL_TRUNCATED', `sealed file '${path}' is missing`, { cause, detail: { file: path } });
  });
  if (!st.isFile()) throw new CloisterError('SEALED_MODEL_INVALID', `sealed file '${path}' is not a regular file`, { detail: { file: path } });
  const expected = sealedSize(f.size, m.chunkBytes);
  if (st.size !== expected) {
    throw new CloisterError('SEALED_MODEL_TRUNCATED', `sealed file '${path}' has ${st.size} bytes; its manifest entry needs exactly ${expected}`, {
      detail: { file: path, expected, actual: st.size },
    });
  }
  const out = new Uint8Array(f.size);
  const key = fileKey(dataKey, f.salt);
  const fh = await open(path, 'r');
  const chunk = Buffer.alloc(Math.min(m.chunkBytes, Math.max(f.size, 0)) + GCM_TAG_BYTES);
  try {
    const chunks = chunkCount(f.size, m.chunkBytes);
    let pos = 0;
    for (let i = 0; i < chunks; i++) {
      const plain = i === chunks - 1 ? f.size - i * m.chunkBytes : m.chunkBytes;
      const want = plain + GCM_TAG_BYTES;
      let got = 0;
      while (got < want) {
        const { bytesRead } = await fh.read(chunk, got, want - got, pos + got);
        if (bytesRead === 0) throw new CloisterError('SEALED_MODEL_TRUNCATED', `sealed file '${path}' ended early`, { detail: { file: path } });
        got += bytesRead;
      }
      let opened: Uint8Array;
      try {
        opened = aeadOpen('aes-256-gcm', key, chunkNonce(i), chunkAad(f.path, f.size, m.chunkBytes, i, i === chunks - 1), chunk.subarray(0, want));
      } catch (cause) {
        throw new CloisterError('SEALED_MODEL_TAMPERED', `sealed file '${path}' fails authentication at chunk ${i}`, { cause, detail: { file: path, chunk: i } });
      }
      out.set(opened, i * m.chunkBytes);
      opened.fill(0);
      pos += want;
    }
    return out;
  } catch (err) {
    out.fill(0);
    throw err;
  } finally {
    chunk.fill(0);
    key.fill(0);
    await fh.close();
  }
}

/**
 * Decrypt the sealed model in `dir` with `dataKey`: the manifest MAC first
 * (SEALED_MODEL_KEY_MISMATCH), then each file (SEALED_MODEL_TRUNCATED, SEALED_MODEL_TAMPERED),
 * then the plaintext digest (SEALED_MODEL_DIGEST_MISMATCH). Each error names the file.
 */
export async function unsealModel(dir: string, manifest: Manifest, dataKey: Uint8Array): Promise<UnsealedModel> {
  if (!(dataKey instanceof Uint8Array) || dataKey.byteLength !== DATA_KEY_BYTES) {
    throw new CloisterError('SEALED_MODEL_KEY_MISMATCH', `the data key must be ${DATA_KEY_BYTES} bytes`, { detail: { file: join(dir, MANIFEST_FILE) } });
  }
  try {
    checkManifestMac(manifest, dataKey);
  } catch (err) {
    if (err instanceof CloisterError) throw new CloisterError(err.code, `${join(dir, MANIFEST_FILE)}: ${err.message}`, { detail: { file: join(dir, MANIFEST_FILE) } });
    throw err;
  }
  const files = new Map<string, Uint8Array>();
  try {
    for (let i = 0; i < manifest.files.length; i++) {
      const f = manifest.files[i];
      if (f !== undefined) files.set(f.path, await openFile(dir, manifest, i, dataKey));
    }
    const digest = modelDigestOfFiles(files);
    if (!timingSafeEqualBytes(digest, Buffer.from(manifest.modelDigest, 'hex'))) {
      throw new CloisterError('SEALED_MODEL_DIGEST_MISMATCH', `the model unsealed from '${dir}' has digest ${toHex(digest)}; its manifest records ${manifest.modelDigest}`, {
        detail: { file: dir },
      });
    }
    return { files, digest };
  } catch (err) {
    for (const b of files.values()) b.fill(0);
    throw err;
  }
}
