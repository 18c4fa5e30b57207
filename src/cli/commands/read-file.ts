/** The CLI's one bounded file reader: every file a command reads goes through it. */
import { readFile, stat } from 'node:fs/promises';
import { CloisterError } from '../../errors.js';

/** The limit for the small files a command reads (policies, roots, PEM, key configs). */
export const MAX_CLI_FILE_BYTES = 1024 * 1024;

/**
 * A file's bytes, refused before reading when it is bigger than `max` (LIMIT_EXCEEDED naming
 * the file, its size and the limit); NOT_FOUND naming it when it cannot be read.
 */
export async function readFileLimited(path: string, max: number, what: string): Promise<Uint8Array> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (cause) {
    throw new CloisterError('NOT_FOUND', `${what} ${path} cannot be read`, { cause });
  }
  if (size > max) throw new CloisterError('LIMIT_EXCEEDED', `${what} ${path} is ${size} bytes; the limit is ${max}`);
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(path));
  } catch (cause) {
    throw new CloisterError('NOT_FOUND', `${what} ${path} cannot be read`, { cause });
  }
  // The file may have grown between stat and read.
  if (bytes.byteLength > max) throw new CloisterError('LIMIT_EXCEEDED', `${what} ${path} is ${bytes.byteLength} bytes; the limit is ${max}`);
  return bytes;
}

/** `readFileLimited` as UTF-8 text. */
export async function readTextLimited(path: string, max: number, what: string): Promise<string> {
  return new TextDecoder().decode(await readFileLimited(path, max, what));
}
