/**
 * The server code digest: what the SIMULATED platform measures into PCR0 (see
 * src/attester/simulated/attester.ts), so that a development policy pins the exact code
 * that served it, as PCR0 pins the enclave image on Nitro. Real TEEs measure the code in
 * hardware; this digest is never used for them.
 *
 * Construction (version 1), the model digest's file-set construction
 * (src/inference/onnx/digest.ts `digestFileSet`) under its own domain label:
 *
 *   files   = every regular file below <package root>/dist whose name ends in ".js"
 *             (the compiled code that runs; .d.ts and .map files do not run), hashed under
 *             the path "dist/<relative path>", plus "package-lock.json" (it pins the version
 *             and integrity hash of every dependency)
 *   digest  = SHA-256( "cloister/code-digest/v1" || 0x00
 *                      || for each file, in ascending byte order of its path:
 *                         u32be(len(path)) || path || u64be(len(contents)) || contents )
 *
 * A link or special file below dist/ is an error (it could point outside the measured tree),
 * and so is a missing dist/ or lock file: a server that cannot say what code it runs does not
 * start. What this does NOT cover: node_modules contents beyond what the lock file's
 * integrity hashes pin, the Node.js binary, and native addons; the simulated platform
 * protects nothing anyway, the digest is there so a development policy changes when the code does.
 */
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CloisterError } from '../errors.js';
import { digestFileSet } from '../inference/onnx/digest.js';

export const CODE_DIGEST_LABEL = 'cloister/code-digest/v1';
/** Most files measured (LIMIT_EXCEEDED beyond). */
const DEFAULT_MAX_CODE_FILES = 4096;
const MAX_DEPTH = 16;

export interface CodeDigestOptions {
  /** The package root holding dist/ and package-lock.json. Default: this package's root. */
  readonly packageRoot?: string;
  /** Most .js files measured. Default 4096. */
  readonly maxFiles?: number;
}

/** This package's root: two levels above this module, in src/server/ and in dist/server/ alike. */
export function defaultPackageRoot(): string {
  return fileURLToPath(new URL('../..', import.meta.url));
}

async function listJs(distDir: string, maxFiles: number): Promise<{ rel: string; abs: string }[]> {
  const out: { rel: string; abs: string }[] = [];
  const walk = async (dir: string, prefix: readonly string[]): Promise<void> => {
    if (prefix.length > MAX_DEPTH) throw new CloisterError('LIMIT_EXCEEDED', 'dist/ is nested too deeply', { detail: { maxDepth: MAX_DEPTH } });
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const parts = [...prefix, e.name];
      if (e.isDirectory()) {
        await walk(join(dir, e.name), parts);
      } else if (e.isFile()) {
        if (!e.name.endsWith('.js')) continue;
        if (out.length >= maxFiles) throw new CloisterError('LIMIT_EXCEEDED', 'dist/ holds too many code files', { detail: { maxFiles } });
        out.push({ rel: ['dist', ...parts].join('/'), abs: join(dir, e.name) });
      } else {
        throw new CloisterError('CONFIG_INVALID', 'dist/ contains a link or special file', { detail: { path: parts.join('/') } });
      }
    }
  };
  await walk(distDir, []);
  return out;
}

/** SHA-256 code digest of the package (construction above); 32 bytes. */
export async function codeDigest(options: CodeDigestOptions = {}): Promise<Uint8Array> {
  const root = options.packageRoot ?? defaultPackageRoot();
  const maxFiles = options.maxFiles ?? DEFAULT_MAX_CODE_FILES;
  if (!Number.isSafeInteger(maxFiles) || maxFiles < 1) throw new CloisterError('INVALID_ARGUMENT', 'maxFiles must be a positive integer');
  const dist = join(root, 'dist');
  const lock = join(root, 'package-lock.json');
  const distStat = await lstat(dist).catch((cause: unknown) => {
    throw new CloisterError('NOT_FOUND', 'dist/ not found: build the package (npm run build) before measuring it', { cause });
  });
  if (!distStat.isDirectory()) throw new CloisterError('CONFIG_INVALID', 'dist is not a directory');
  const lockStat = await lstat(lock).catch((cause: unknown) => {
    throw new CloisterError('NOT_FOUND', 'package-lock.json not found', { cause });
  });
  if (!lockStat.isFile()) throw new CloisterError('CONFIG_INVALID', 'package-lock.json is not a regular file');
  const files = await listJs(dist, maxFiles);
  if (files.length === 0) throw new CloisterError('NOT_FOUND', 'dist/ holds no .js files: build the package first');
  return digestFileSet(CODE_DIGEST_LABEL, [...files, { rel: 'package-lock.json', abs: lock }]);
}
