/**
 * `cloister model seal`: encrypt every file of a model directory under a fresh data key
 * (./format.ts), streaming: one chunk of plaintext is in memory at a time, whatever the
 * file size. The manifest is written last, so a directory without one is an unfinished seal.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { CloisterError } from '../../errors.js';
import { aeadSeal } from '../../crypto/aead.js';
import { toHex } from '../../core/hex.js';
import { timingSafeEqualBytes } from '../../crypto/ct.js';
import { listModelFiles, modelDigest } from '../onnx/digest.js';
import {
  chunkAad,
  chunkCount,
  chunkNonce,
  DATA_DIR,
  DATA_KEY_BYTES,
  DEFAULT_CHUNK_BYTES,
  encodeManifest,
  fileKey,
  MANIFEST_FILE,
  manifestMac,
  MAX_CHUNK_BYTES,
  MAX_SEALED_FILE_BYTES,
  MAX_SEALED_FILES,
  MIN_CHUNK_BYTES,
  SEALED_MODEL_FORMAT,
} from './format.js';
import type { Manifest, SealedFile, Wrapping } from './format.js';

export interface SealModelOptions {
  readonly modelDir: string;
  /** Created; must not exist or be empty. */
  readonly outDir: string;
  /** The fresh 32-byte data key (the caller wraps it: broker or KMS). */
  readonly dataKey: Uint8Array;
  readonly wrapping: Wrapping;
  /** Plaintext bytes per chunk. Default 64 KiB. */
  readonly chunkBytes?: number;
}

export interface SealResult {
  readonly manifest: Manifest;
  readonly modelDigestHex: string;
}

async function sealFile(abs: string, out: string, rel: string, dataKey: Uint8Array, chunkBytes: number): Promise<SealedFile> {
  const salt = toHex(new Uint8Array(randomBytes(32)));
  const key = fileKey(dataKey, salt);
  const input = await open(abs, 'r');
  try {
    const { size } = await input.stat();
    if (size > MAX_SEALED_FILE_BYTES) throw new CloisterError('LIMIT_EXCEEDED', `${rel} is larger than ${MAX_SEALED_FILE_BYTES} bytes`, { detail: { file: rel } });
    await mkdir(dirname(out), { recursive: true });
    const output = await open(out, 'wx', 0o644);
    try {
      const chunks = chunkCount(size, chunkBytes);
      const buf = Buffer.alloc(chunkBytes);
      for (let i = 0; i < chunks; i++) {
        const want = i === chunks - 1 ? size - i * chunkBytes : chunkBytes;
        let got = 0;
        while (got < want) {
          const { bytesRead } = await input.read(buf, got, want - got, i * chunkBytes + got);
          if (bytesRead === 0) throw new CloisterError('CONFIG_INVALID', `${rel} changed while it was being sealed`, { detail: { file: rel } });
          got += bytesRead;
        }
        const sealed = aeadSeal('aes-256-gcm', key, chunkNonce(i), chunkAad(rel, size, chunkBytes, i, i === chunks - 1), buf.subarray(0, want));
        await output.write(sealed);
      }
      buf.fill(0);
      await output.sync();
    } finally {
      await output.close();
    }
    return { path: rel, size, salt };
  } finally {
    key.fill(0);
    await input.close();
  }
}

/** Seal `modelDir` into `outDir`. The plaintext digest is taken before and after: a change in between fails. */
export async function sealModelDirectory(options: SealModelOptions): Promise<SealResult> {
  const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < MIN_CHUNK_BYTES || chunkBytes > MAX_CHUNK_BYTES) {
    throw new CloisterError('INVALID_ARGUMENT', `chunk size must be an integer ${MIN_CHUNK_BYTES}..${MAX_CHUNK_BYTES}`);
  }
  if (!(options.dataKey instanceof Uint8Array) || options.dataKey.byteLength !== DATA_KEY_BYTES) {
    throw new CloisterError('INVALID_ARGUMENT', `the data key must be ${DATA_KEY_BYTES} bytes`);
  }
  const existing = await readdir(options.outDir).catch(() => []);
  if (existing.length > 0) throw new CloisterError('CONFIG_INVALID', `output directory '${options.outDir}' is not empty`);
  const before = await modelDigest(options.modelDir, { maxFiles: MAX_SEALED_FILES });
  const entries = await listModelFiles(options.modelDir, MAX_SEALED_FILES);
  await mkdir(join(options.outDir, DATA_DIR), { recursive: true });
  const files: SealedFile[] = [];
  for (const e of entries) files.push(await sealFile(e.abs, join(options.outDir, DATA_DIR, ...e.rel.split('/')), e.rel, options.dataKey, chunkBytes));
  const after = await modelDigest(options.modelDir, { maxFiles: MAX_SEALED_FILES });
  if (!timingSafeEqualBytes(before, after)) throw new CloisterError('CONFIG_INVALID', `model directory '${options.modelDir}' changed while it was being sealed`);
  const body: Omit<Manifest, 'mac'> = { format: SEALED_MODEL_FORMAT, modelDigest: toHex(after), chunkBytes, files, wrapping: options.wrapping };
  const manifest: Manifest = { ...body, mac: manifestMac(body, options.dataKey) };
  const tmp = join(options.outDir, `${MANIFEST_FILE}.tmp`);
  await writeFile(tmp, encodeManifest(manifest), { mode: 0o644 });
  await rename(tmp, join(options.outDir, MANIFEST_FILE));
  return { manifest, modelDigestHex: manifest.modelDigest };
}
