/**
 * A deterministic cpio "newc" (SVR4, no CRC) writer for initramfs images, the format the Linux
 * kernel unpacks (Documentation/driver-api/early-userspace/buffer-format.rst):
 *
 *   "070701" then 13 fields of 8 hex digits: ino mode uid gid nlink mtime filesize devmajor
 *   devminor rdevmajor rdevminor namesize check; then the NUL-terminated name, padded to a
 *   multiple of 4 bytes (header included); then the data, padded to 4; the archive ends with
 *   an entry named "TRAILER!!!".
 *
 * Determinism: entries are written in byte order of their paths (so every directory comes
 * before its contents), inode numbers are assigned 0, 1, 2, ... in that order, every entry gets
 * the same mtime, a directory's nlink is 2 plus its subdirectories, hard links are written as
 * separate files (nlink 1), and nothing of the machine (device, atime, the host's inode
 * numbers) reaches the archive. For a tree without hard links this is byte for byte what
 * GNU `cpio -o -H newc --reproducible` writes for the same sorted list, without the zero
 * padding GNU cpio adds up to its 512-byte block (test/image/eif/cpio.test.ts).
 */
import { CloisterError } from '../../errors.js';

type CpioEntryType = 'file' | 'directory' | 'symlink' | 'char' | 'block' | 'fifo';

export interface CpioEntry {
  /** Relative path, '/'-separated, no leading '/', no '.' or '..' components. */
  readonly path: string;
  readonly type: CpioEntryType;
  /** Permission bits (0o7777 at most). */
  readonly mode: number;
  readonly uid?: number;
  readonly gid?: number;
  /** File contents, or the symlink's target. Absent for the other types. */
  readonly data?: Uint8Array;
  /** Device numbers for 'char' and 'block'. */
  readonly rdevMajor?: number;
  readonly rdevMinor?: number;
}

const TYPE_BITS: Record<CpioEntryType, number> = {
  file: 0o100000,
  directory: 0o040000,
  symlink: 0o120000,
  char: 0o020000,
  block: 0o060000,
  fifo: 0o010000,
};

const CPIO_TRAILER = 'TRAILER!!!';
const HEADER_BYTES = 110;
const U32_MAX = 0xffffffff;

function bad(message: string): CloisterError {
  return new CloisterError('INVALID_ARGUMENT', `cpio: ${message}`);
}

function hex8(n: number, what: string, path: string): string {
  if (!Number.isInteger(n) || n < 0 || n > U32_MAX) throw bad(`${what} ${n} of ${path} does not fit in 32 bits`);
  return n.toString(16).toUpperCase().padStart(8, '0');
}

const pad4 = (n: number): number => (4 - (n % 4)) % 4;

function checkPath(path: string): void {
  if (path === '' || path.startsWith('/') || path.endsWith('/') || path.includes('\0')) throw bad(`bad path ${JSON.stringify(path)}`);
  for (const part of path.split('/')) if (part === '' || part === '.' || part === '..') throw bad(`bad path ${JSON.stringify(path)}`);
}

/** Byte-wise comparison of UTF-8 paths (what `LC_ALL=C sort` does). */
function comparePaths(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function header(fields: number[], path: string, nameBytes: number): Buffer {
  const names = ['ino', 'mode', 'uid', 'gid', 'nlink', 'mtime', 'filesize', 'devmajor', 'devminor', 'rdevmajor', 'rdevminor'];
  const parts = fields.map((f, i) => hex8(f, names[i] ?? 'field', path));
  return Buffer.from(`070701${parts.join('')}${hex8(nameBytes, 'namesize', path)}00000000`, 'latin1');
}

interface CpioOptions {
  /** mtime of every entry, seconds since the epoch (default 0). */
  readonly mtime?: number;
}

/**
 * Writes `entries` (in any order; they are sorted) as one newc archive, calling `write` with
 * consecutive chunks. Duplicate paths and a parent that is not a directory are refused.
 * Returns the archive's length.
 */
export function writeCpio(entries: readonly CpioEntry[], write: (chunk: Uint8Array) => void, options: CpioOptions = {}): number {
  const mtime = options.mtime ?? 0;
  const sorted = [...entries].sort((a, b) => comparePaths(a.path, b.path));
  const types = new Map<string, CpioEntryType>();
  let total = 0;
  const emit = (b: Uint8Array): void => {
    if (b.byteLength === 0) return;
    write(b);
    total += b.byteLength;
  };
  const subdirs = new Map<string, number>();
  for (const e of sorted) {
    const slash = e.path.lastIndexOf('/');
    if (e.type === 'directory' && slash > 0) subdirs.set(e.path.slice(0, slash), (subdirs.get(e.path.slice(0, slash)) ?? 0) + 1);
  }
  let ino = -1;
  for (const e of sorted) {
    checkPath(e.path);
    if (types.has(e.path)) throw bad(`duplicate path ${e.path}`);
    const slash = e.path.lastIndexOf('/');
    if (slash > 0) {
      const parentType = types.get(e.path.slice(0, slash));
      if (parentType !== undefined && parentType !== 'directory') throw bad(`parent of ${e.path} is a ${parentType}, not a directory`);
    }
    types.set(e.path, e.type);
    if (!Number.isInteger(e.mode) || e.mode < 0 || e.mode > 0o7777) throw bad(`mode of ${e.path} must be 0..0o7777`);
    const hasData = e.type === 'file' || e.type === 'symlink';
    if (hasData !== (e.data !== undefined)) throw bad(`${e.path}: ${hasData ? 'data required' : 'no data allowed'} for a ${e.type}`);
    if (e.type === 'symlink' && (e.data?.byteLength ?? 0) === 0) throw bad(`symlink ${e.path} has an empty target`);
    const isDev = e.type === 'char' || e.type === 'block';
    const name = Buffer.from(`${e.path}\0`, 'utf8');
    const size = e.data?.byteLength ?? 0;
    ino += 1;
    emit(
      header(
        [ino, TYPE_BITS[e.type] | e.mode, e.uid ?? 0, e.gid ?? 0, e.type === 'directory' ? 2 + (subdirs.get(e.path) ?? 0) : 1, mtime, size, 0, 0, isDev ? (e.rdevMajor ?? 0) : 0, isDev ? (e.rdevMinor ?? 0) : 0],
        e.path,
        name.byteLength,
      ),
    );
    emit(name);
    emit(new Uint8Array(pad4(HEADER_BYTES + name.byteLength)));
    if (e.data !== undefined) {
      emit(e.data);
      emit(new Uint8Array(pad4(size)));
    }
  }
  const name = Buffer.from(`${CPIO_TRAILER}\0`, 'latin1');
  emit(header([0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0], CPIO_TRAILER, name.byteLength));
  emit(name);
  emit(new Uint8Array(pad4(HEADER_BYTES + name.byteLength)));
  return total;
}

/** The archive as one buffer (small archives and tests). */
export function cpioBytes(entries: readonly CpioEntry[], options: CpioOptions = {}): Uint8Array {
  const chunks: Uint8Array[] = [];
  writeCpio(entries, (c) => chunks.push(c), options);
  return Buffer.concat(chunks);
}
