/**
 * The sealed model directory (docs/KEYS.md "Sealed models"): what `cloister model seal`
 * writes and what `cloister serve` opens inside the TEE.
 *
 *   <sealed>/manifest.json     this module's Manifest (JSON), MAC'd under the data key
 *   <sealed>/data/<path>       each model file, sealed: chunked AES-256-GCM, see below
 *
 * Per file: key = HKDF-SHA256(ikm = data key, salt = the file's random 32-byte salt,
 * info = "cloister/sealed-model/v1/file"); chunk i (0-based) of `chunkBytes` plaintext bytes
 * (the last one shorter; an empty file is one empty chunk) is AES-256-GCM sealed with
 * nonce = 4 zero bytes || u64be(i) and
 *   aad = "cloister/sealed-model/v1" || 0x00 || u32be(len(path)) || path || u64be(size)
 *         || u32be(chunkBytes) || u64be(i) || u8(final)
 * so a chunk cannot move within a file (index), between files (path, key) or be dropped
 * from the end (the final flag, and the exact sealed size `sealedSize`). This is the STREAM
 * construction (Hoang, Reyhanitabar, Rogaway, Vizar 2015) with a per-file key.
 *
 * What stays visible without the key: the number of files, their relative paths and
 * plaintext sizes, the chunk size, the plaintext model digest (a SHA-256, which names the
 * model but reveals none of its bytes) and how the data key is wrapped (broker URL and key
 * name, or the KMS key id and its ciphertext blob). No plaintext byte is recoverable.
 */
import { createHmac } from 'node:crypto';
import { CloisterError } from '../../errors.js';
import { isRecord } from '../../core/validate.js';
import { timingSafeEqualBytes } from '../../crypto/ct.js';
import { hkdfExpand, hkdfExtract } from '../../crypto/hkdf.js';
import { utf8 } from '../../core/bytes.js';

export const SEALED_MODEL_FORMAT = 'cloister-sealed-model/v1';
export const MANIFEST_FILE = 'manifest.json';
export const DATA_DIR = 'data';
export const DATA_KEY_BYTES = 32;
export const DEFAULT_CHUNK_BYTES = 64 * 1024;
export const MIN_CHUNK_BYTES = 1024;
export const MAX_CHUNK_BYTES = 16 * 1024 * 1024;
export const GCM_TAG_BYTES = 16;
/** Largest manifest accepted (bytes). */
export const MAX_MANIFEST_BYTES = 1024 * 1024;
/** Most files a sealed model may hold (the plaintext model digest allows the same). */
export const MAX_SEALED_FILES = 1024;
/** Largest single file (bytes); unsealed in memory, so bounded. */
export const MAX_SEALED_FILE_BYTES = 64 * 1024 ** 3;

const FILE_KEY_INFO = utf8('cloister/sealed-model/v1/file');
const MAC_KEY_INFO = utf8('cloister/sealed-model/v1/manifest-mac');
const AAD_LABEL = utf8('cloister/sealed-model/v1');

/** How the data key is kept: released by a key broker, or wrapped by AWS KMS. */
export type Wrapping =
  | { readonly kind: 'key-broker'; readonly key: string; readonly version: number }
  | { readonly kind: 'aws-kms'; readonly keyId: string; readonly ciphertextBlob: string };

export interface SealedFile {
  /** Relative path, '/'-separated, as in the plaintext model directory. */
  readonly path: string;
  readonly size: number;
  /** 32 random bytes, hex. */
  readonly salt: string;
}

export interface Manifest {
  readonly format: typeof SEALED_MODEL_FORMAT;
  /** The plaintext model digest (src/inference/onnx/digest.ts), hex: what the key config will carry. */
  readonly modelDigest: string;
  readonly chunkBytes: number;
  readonly files: readonly SealedFile[];
  readonly wrapping: Wrapping;
  /** HMAC-SHA256 over the canonical manifest without this field, under a key derived from the data key; hex. */
  readonly mac: string;
}

function invalid(message: string, path?: string): CloisterError {
  return new CloisterError('SEALED_MODEL_INVALID', message, path === undefined ? {} : { detail: { file: path } });
}


function onlyKeys(o: Record<string, unknown>, keys: readonly string[], where: string): void {
  for (const k of Object.keys(o)) if (!keys.includes(k)) throw invalid(`manifest: unknown field ${JSON.stringify(k)} in ${where}`);
  for (const k of keys) if (!(k in o)) throw invalid(`manifest: ${where} lacks ${k}`);
}

function hexField(v: unknown, bytes: number, where: string): string {
  if (typeof v !== 'string' || v.length !== bytes * 2 || !/^[0-9a-f]+$/.test(v)) throw invalid(`manifest: ${where} must be ${bytes * 2} lower-case hex digits`);
  return v;
}

/** A safe relative path: no empty, '.', '..' or absolute segment, no backslash or NUL. */
export function checkRelativePath(p: unknown): string {
  if (typeof p !== 'string' || p.length === 0 || p.length > 1024) throw invalid('manifest: a file path is empty or too long');
  const segments = p.split('/');
  if (segments.some((s) => s === '' || s === '.' || s === '..' || /[\\\0]/.test(s))) throw invalid(`manifest: unsafe file path ${JSON.stringify(p)}`, p);
  return p;
}

function parseWrapping(v: unknown): Wrapping {
  if (!isRecord(v)) throw invalid('manifest: wrapping must be an object');
  if (v['kind'] === 'key-broker') {
    onlyKeys(v, ['kind', 'key', 'version'], 'wrapping');
    const key = v['key'];
    const version = v['version'];
    if (typeof key !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(key)) throw invalid('manifest: wrapping.key is not a key name');
    if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1) throw invalid('manifest: wrapping.version must be a positive integer');
    return { kind: 'key-broker', key, version };
  }
  if (v['kind'] === 'aws-kms') {
    onlyKeys(v, ['kind', 'keyId', 'ciphertextBlob'], 'wrapping');
    const keyId = v['keyId'];
    const blob = v['ciphertextBlob'];
    if (typeof keyId !== 'string' || keyId.length === 0 || keyId.length > 2048) throw invalid('manifest: wrapping.keyId is not a KMS key id');
    if (typeof blob !== 'string' || blob.length === 0 || blob.length > 16384 || !/^[A-Za-z0-9+/]+={0,2}$/.test(blob)) throw invalid('manifest: wrapping.ciphertextBlob must be base64');
    return { kind: 'aws-kms', keyId, ciphertextBlob: blob };
  }
  throw invalid('manifest: wrapping.kind must be key-broker or aws-kms');
}

/** Strict parse of manifest.json bytes (SEALED_MODEL_INVALID on anything unexpected). */
export function parseManifest(bytes: Uint8Array): Manifest {
  if (bytes.byteLength > MAX_MANIFEST_BYTES) throw invalid(`manifest is larger than ${MAX_MANIFEST_BYTES} bytes`, MANIFEST_FILE);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (cause) {
    throw new CloisterError('SEALED_MODEL_INVALID', 'manifest is not valid UTF-8 JSON', { cause, detail: { file: MANIFEST_FILE } });
  }
  if (!isRecord(json)) throw invalid('manifest must be a JSON object');
  onlyKeys(json, ['format', 'modelDigest', 'chunkBytes', 'files', 'wrapping', 'mac'], 'the manifest');
  if (json['format'] !== SEALED_MODEL_FORMAT) throw invalid(`manifest: format must be ${SEALED_MODEL_FORMAT}`);
  const chunkBytes = json['chunkBytes'];
  if (typeof chunkBytes !== 'number' || !Number.isSafeInteger(chunkBytes) || chunkBytes < MIN_CHUNK_BYTES || chunkBytes > MAX_CHUNK_BYTES) {
    throw invalid(`manifest: chunkBytes must be an integer ${MIN_CHUNK_BYTES}..${MAX_CHUNK_BYTES}`);
  }
  const filesIn = json['files'];
  if (!Array.isArray(filesIn) || filesIn.length === 0 || filesIn.length > MAX_SEALED_FILES) throw invalid(`manifest: files must list 1..${MAX_SEALED_FILES} files`);
  const seen = new Set<string>();
  const files: SealedFile[] = filesIn.map((f: unknown) => {
    if (!isRecord(f)) throw invalid('manifest: each file must be an object');
    onlyKeys(f, ['path', 'size', 'salt'], 'a file entry');
    const path = checkRelativePath(f['path']);
    if (seen.has(path)) throw invalid(`manifest: file ${path} is listed twice`, path);
    seen.add(path);
    const size = f['size'];
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0 || size > MAX_SEALED_FILE_BYTES) throw invalid(`manifest: size of ${path} is out of range`, path);
    return { path, size, salt: hexField(f['salt'], 32, `salt of ${path}`) };
  });
  return {
    format: SEALED_MODEL_FORMAT,
    modelDigest: hexField(json['modelDigest'], 32, 'modelDigest'),
    chunkBytes,
    files,
    wrapping: parseWrapping(json['wrapping']),
    mac: hexField(json['mac'], 32, 'mac'),
  };
}

/** The bytes the MAC covers: the manifest without `mac`, keys in a fixed order. */
function macInput(m: Omit<Manifest, 'mac'>): Uint8Array {
  return utf8(
    JSON.stringify({
      format: m.format,
      modelDigest: m.modelDigest,
      chunkBytes: m.chunkBytes,
      files: m.files.map((f) => ({ path: f.path, size: f.size, salt: f.salt })),
      wrapping: m.wrapping.kind === 'key-broker' ? { kind: m.wrapping.kind, key: m.wrapping.key, version: m.wrapping.version } : { kind: m.wrapping.kind, keyId: m.wrapping.keyId, ciphertextBlob: m.wrapping.ciphertextBlob },
    }),
  );
}

function macKey(dataKey: Uint8Array): Uint8Array {
  return hkdfExpand(hkdfExtract(new Uint8Array(32), dataKey), MAC_KEY_INFO, 32);
}

export function manifestMac(m: Omit<Manifest, 'mac'>, dataKey: Uint8Array): string {
  const key = macKey(dataKey);
  try {
    return createHmac('sha256', key).update(macInput(m)).digest('hex');
  } finally {
    key.fill(0);
  }
}

/** SEALED_MODEL_KEY_MISMATCH when the MAC does not verify under this data key. */
export function checkManifestMac(m: Manifest, dataKey: Uint8Array): void {
  const expected = Buffer.from(manifestMac(m, dataKey), 'hex');
  if (!timingSafeEqualBytes(expected, Buffer.from(m.mac, 'hex'))) {
    throw new CloisterError('SEALED_MODEL_KEY_MISMATCH', `the data key does not open ${MANIFEST_FILE} (wrong key, or the manifest was changed)`, { detail: { file: MANIFEST_FILE } });
  }
}

export function encodeManifest(m: Manifest): string {
  return `${JSON.stringify(m, null, 2)}\n`;
}

export function fileKey(dataKey: Uint8Array, saltHex: string): Uint8Array {
  return hkdfExpand(hkdfExtract(Buffer.from(saltHex, 'hex'), dataKey), FILE_KEY_INFO, 32);
}

export function chunkCount(size: number, chunkBytes: number): number {
  return size === 0 ? 1 : Math.ceil(size / chunkBytes);
}

/** The exact size of a sealed file. */
export function sealedSize(size: number, chunkBytes: number): number {
  return size + chunkCount(size, chunkBytes) * GCM_TAG_BYTES;
}

export function chunkNonce(index: number): Uint8Array {
  const n = Buffer.alloc(12);
  n.writeBigUInt64BE(BigInt(index), 4);
  return n;
}

export function chunkAad(path: string, size: number, chunkBytes: number, index: number, final: boolean): Uint8Array {
  const p = Buffer.from(path, 'utf8');
  const out = Buffer.alloc(AAD_LABEL.length + 1 + 4 + p.length + 8 + 4 + 8 + 1);
  let o = 0;
  out.set(AAD_LABEL, o);
  o += AAD_LABEL.length + 1;
  o = out.writeUInt32BE(p.length, o);
  out.set(p, o);
  o += p.length;
  o = out.writeBigUInt64BE(BigInt(size), o);
  o = out.writeUInt32BE(chunkBytes, o);
  o = out.writeBigUInt64BE(BigInt(index), o);
  out.writeUInt8(final ? 1 : 0, o);
  return out;
}
