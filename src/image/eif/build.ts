/**
 * Assemble an Enclave Image File from a root filesystem and the Nitro blobs (kernel, init,
 * nsm.ko, kernel command line), without Docker or nitro-cli, deterministically.
 *
 * Layout, as nitro-cli builds it (aws-nitro-enclaves-cli enclave_build: yaml_generator.rs
 * and lib.rs, linuxkit `kernel+initrd-nogz`; the same in monzo/aws-nitro-util):
 *   - bootstrap ramdisk (the first ramdisk: PCR1 with kernel and cmdline):
 *       dev/ (0755), init (0755), nsm.ko (0755)
 *   - customer ramdisk (the second: PCR2):
 *       rootfs/<the image's files>, rootfs/{dev,run,sys,var,proc,tmp}/ (0755, when absent),
 *       cmd  (0644: the image's CMD, else ENTRYPOINT, one argument per line),
 *       env  (0644: the image's ENV, one KEY=value per line)
 * Both are uncompressed cpio newc archives (./cpio.ts). The EIF (./format.ts, version 4):
 * header, kernel, cmdline (trimmed, no NUL), metadata (JSON, fixed build time), bootstrap
 * ramdisk, customer ramdisk; no signature section. The CRC covers everything but its own field.
 *
 * The PCRs are then computed by reading the written file back with ./measure.ts, so the
 * builder and `cloister eif measure` can never disagree.
 */
import { closeSync, lstatSync, openSync, readdirSync, readFileSync, readlinkSync, writeSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { join } from 'node:path';
import { CloisterError } from '../../errors.js';
import { Crc32 } from './crc32.js';
import { writeCpio } from './cpio.js';
import type { CpioEntry } from './cpio.js';
import { EIF_HDR_ARCH_ARM64, EIF_HEADER_SIZE, EIF_MAGIC, EIF_MAX_SECTIONS, EIF_SECTION_HEADER_SIZE } from './format.js';
import { measureEifFile } from './measure.js';
import type { EifMeasurements } from './measure.js';

/** EIF version written (aws-nitro-enclaves-image-format CURRENT_VERSION). */
const EIF_BUILD_VERSION = 4;
/** nitro-cli's EifBuilder defaults. */
const DEFAULT_MEM = 1024n * 1024n * 1024n;
const DEFAULT_CPUS = 2n;
const SECTION = { kernel: 1, cmdline: 2, ramdisk: 3, metadata: 5 } as const;
/** Directories nitro-cli adds under rootfs/ for the init (yaml_generator.rs). */
const ROOTFS_MOUNT_DIRS = ['dev', 'run', 'sys', 'var', 'proc', 'tmp'] as const;

interface EifBuildInput {
  /** The image's root filesystem, a directory (e.g. from `buildah mount`). */
  readonly rootfs: string;
  /** The command the Nitro init runs (the image's CMD, or ENTRYPOINT when there is no CMD). */
  readonly cmd: readonly string[];
  /** The environment, KEY=value strings (the image's ENV). */
  readonly env: readonly string[];
  readonly kernel: string;
  readonly init: string;
  readonly nsm: string;
  /** Kernel command line (surrounding whitespace is trimmed, as nitro-cli does). */
  readonly cmdline: string;
  readonly out: string;
  /** mtime of every ramdisk entry and the metadata's build time (SOURCE_DATE_EPOCH); default 0. */
  readonly mtime?: number;
  readonly arch?: 'x86_64' | 'aarch64';
  /** ImageName in the metadata section; default "cloister". */
  readonly name?: string;
}

export interface EifBuildResult {
  readonly measurements: EifMeasurements;
  readonly fileSha256: string;
  readonly bytes: number;
  readonly ramdiskBytes: readonly [number, number];
}

function bad(message: string): CloisterError {
  return new CloisterError('INVALID_ARGUMENT', `eif build: ${message}`);
}

function readBlob(path: string, what: string): Buffer {
  try {
    const b = readFileSync(path);
    if (b.byteLength === 0) throw bad(`${what} ${path} is empty`);
    return b;
  } catch (cause) {
    if (cause instanceof CloisterError) throw cause;
    throw new CloisterError('NOT_FOUND', `eif build: cannot read ${what} ${path}`, { cause });
  }
}

/** The rootfs as cpio entries under `prefix`, walking without following symlinks. */
export function rootfsEntries(dir: string, prefix = 'rootfs'): CpioEntry[] {
  let top: Stats;
  try {
    top = lstatSync(dir);
  } catch (cause) {
    throw new CloisterError('NOT_FOUND', `eif build: cannot read the root filesystem ${dir}`, { cause });
  }
  if (!top.isDirectory()) throw bad(`root filesystem ${dir} is not a directory`);
  const out: CpioEntry[] = [{ path: prefix, type: 'directory', mode: 0o755 }];
  const walk = (abs: string, rel: string): void => {
    for (const name of readdirSync(abs)) {
      const a = join(abs, name);
      const r = `${rel}/${name}`;
      const st = lstatSync(a);
      const base = { path: r, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
      if (st.isDirectory()) {
        out.push({ ...base, type: 'directory' });
        walk(a, r);
      } else if (st.isFile()) out.push({ ...base, type: 'file', data: readFileSync(a) });
      else if (st.isSymbolicLink()) out.push({ ...base, type: 'symlink', data: Buffer.from(readlinkSync(a, { encoding: 'buffer' })) });
      else if (st.isCharacterDevice() || st.isBlockDevice()) {
        const rdev = st.rdev;
        // glibc's gnu_dev_major / gnu_dev_minor.
        const major = ((rdev >>> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
        const minor = (rdev & 0xff) | ((rdev >>> 12) & ~0xff & 0xfffff);
        out.push({ ...base, type: st.isCharacterDevice() ? 'char' : 'block', rdevMajor: major, rdevMinor: minor });
      } else if (st.isFIFO()) out.push({ ...base, type: 'fifo' });
      else throw bad(`${a} is a socket or other special file; it cannot be part of an enclave image`);
    }
  };
  walk(dir, prefix);
  const have = new Set(out.map((e) => e.path));
  for (const d of ROOTFS_MOUNT_DIRS) if (!have.has(`${prefix}/${d}`)) out.push({ path: `${prefix}/${d}`, type: 'directory', mode: 0o755 });
  return out;
}

/** One line per item, as nitro-cli writes the cmd and env files. */
function linesFile(items: readonly string[], what: string): Buffer {
  for (const s of items) if (s.includes('\n') || s.includes('\0')) throw bad(`${what} item ${JSON.stringify(s)} contains a newline or NUL`);
  return Buffer.from(items.map((s) => `${s}\n`).join(''), 'utf8');
}

/** The bootstrap ramdisk's entries (nitro-cli: dev/, init, nsm.ko). */
export function bootstrapEntries(init: Uint8Array, nsm: Uint8Array): CpioEntry[] {
  return [
    { path: 'dev', type: 'directory', mode: 0o755 },
    { path: 'init', type: 'file', mode: 0o755, data: init },
    { path: 'nsm.ko', type: 'file', mode: 0o755, data: nsm },
  ];
}

/** The customer ramdisk's entries (nitro-cli: rootfs/..., cmd, env). */
export function customerEntries(rootfs: string, cmd: readonly string[], env: readonly string[]): CpioEntry[] {
  if (cmd.length === 0) throw bad('the image has no CMD or ENTRYPOINT: the Nitro init would have nothing to run');
  for (const kv of env) if (!/^[^=]+=/.test(kv)) throw bad(`env item ${JSON.stringify(kv)} is not KEY=value`);
  return [
    ...rootfsEntries(rootfs),
    { path: 'cmd', type: 'file', mode: 0o644, data: linesFile(cmd, 'cmd') },
    { path: 'env', type: 'file', mode: 0o644, data: linesFile(env, 'env') },
  ];
}

/** The metadata section: nitro-cli's EifIdentityInfo JSON, with a fixed build time. */
function eifMetadata(name: string, mtime: number, kernelHint: string): Buffer {
  return Buffer.from(
    JSON.stringify({
      ImageName: name,
      ImageVersion: '1.0',
      BuildMetadata: {
        BuildTime: new Date(mtime * 1000).toISOString(),
        BuildTool: 'cloister eif build',
        BuildToolVersion: '1',
        OperatingSystem: 'Linux',
        KernelVersion: kernelHint,
      },
      DockerInfo: null,
      CustomMetadata: null,
    }),
    'utf8',
  );
}

/** Writes the EIF to `input.out` and measures it. */
export function buildEif(input: EifBuildInput): EifBuildResult {
  const mtime = input.mtime ?? 0;
  if (!Number.isInteger(mtime) || mtime < 0 || mtime > 0xffffffff) throw bad(`mtime ${mtime} must be a 32-bit unsigned integer`);
  const kernel = readBlob(input.kernel, 'kernel');
  const init = readBlob(input.init, 'init');
  const nsm = readBlob(input.nsm, 'nsm.ko');
  const cmdline = Buffer.from(input.cmdline.trim(), 'utf8');
  if (cmdline.byteLength === 0) throw bad('the kernel command line is empty');
  if (cmdline.includes(0)) throw bad('the kernel command line contains a NUL byte');
  const metadata = eifMetadata(input.name ?? 'cloister', mtime, 'Unknown');
  const ramdisks = [bootstrapEntries(init, nsm), customerEntries(input.rootfs, input.cmd, input.env)];

  // Ramdisk sizes first (the header holds every section's offset and size).
  const ramdiskSizes = ramdisks.map((entries) => writeCpio(entries, () => undefined, { mtime }));
  const sizes = [kernel.byteLength, cmdline.byteLength, metadata.byteLength, ...ramdiskSizes];
  const types = [SECTION.kernel, SECTION.cmdline, SECTION.metadata, SECTION.ramdisk, SECTION.ramdisk];
  if (types.length > EIF_MAX_SECTIONS) throw bad('too many sections');

  const header = Buffer.alloc(EIF_HEADER_SIZE);
  Buffer.from(EIF_MAGIC).copy(header, 0);
  header.writeUInt16BE(EIF_BUILD_VERSION, 4);
  header.writeUInt16BE(input.arch === 'aarch64' ? EIF_HDR_ARCH_ARM64 : 0, 6);
  header.writeBigUInt64BE(DEFAULT_MEM, 8);
  header.writeBigUInt64BE(DEFAULT_CPUS, 16);
  header.writeUInt16BE(0, 24);
  header.writeUInt16BE(types.length, 26);
  let offset = EIF_HEADER_SIZE;
  for (let i = 0; i < types.length; i++) {
    const size = sizes[i] ?? 0;
    header.writeBigUInt64BE(BigInt(offset), 28 + 8 * i);
    header.writeBigUInt64BE(BigInt(size), 28 + 8 * EIF_MAX_SECTIONS + 8 * i);
    offset += EIF_SECTION_HEADER_SIZE + size;
  }

  const crc = new Crc32().update(header.subarray(0, EIF_HEADER_SIZE - 4));
  let fd: number;
  try {
    fd = openSync(input.out, 'w', 0o644);
  } catch (cause) {
    throw new CloisterError('NOT_FOUND', `eif build: cannot write ${input.out}`, { cause });
  }
  try {
    let pos = 0;
    const put = (b: Uint8Array, hashed = true): void => {
      let done = 0;
      while (done < b.byteLength) done += writeSync(fd, b, done, b.byteLength - done, pos + done);
      pos += b.byteLength;
      if (hashed) crc.update(b);
    };
    put(header, false);
    const section = (type: number, size: number): void => {
      const sh = Buffer.alloc(EIF_SECTION_HEADER_SIZE);
      sh.writeUInt16BE(type, 0);
      sh.writeUInt16BE(0, 2);
      sh.writeBigUInt64BE(BigInt(size), 4);
      put(sh);
    };
    section(SECTION.kernel, kernel.byteLength);
    put(kernel);
    section(SECTION.cmdline, cmdline.byteLength);
    put(cmdline);
    section(SECTION.metadata, metadata.byteLength);
    put(metadata);
    ramdisks.forEach((entries, i) => {
      section(SECTION.ramdisk, ramdiskSizes[i] ?? 0);
      const written = writeCpio(entries, (c) => put(c), { mtime });
      if (written !== ramdiskSizes[i]) throw bad(`ramdisk ${i} changed while it was written (${ramdiskSizes[i]} then ${written} bytes)`);
    });
    if (pos !== offset) throw bad(`wrote ${pos} bytes, expected ${offset}`);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc.digest(), 0);
    writeSync(fd, c, 0, 4, EIF_HEADER_SIZE - 4);
  } finally {
    closeSync(fd);
  }
  const report = measureEifFile(input.out);
  return {
    measurements: report.measurements,
    fileSha256: report.fileSha256,
    bytes: offset,
    ramdiskBytes: [ramdiskSizes[0] ?? 0, ramdiskSizes[1] ?? 0],
  };
}

/** Same as buildEif; the name build-image.mjs imports. */
export const buildEifFromRootfs = (input: EifBuildInput): Promise<EifBuildResult> => Promise.resolve().then(() => buildEif(input));
