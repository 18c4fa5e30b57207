/**
 * The cpio newc writer against Debian's GNU cpio and libarchive's bsdtar: byte-identical to
 * `cpio -o -H newc --reproducible` on the same tree (up to GNU's 512-byte block padding), and
 * both tools extract it to the same files, modes, owners, link targets and mtimes.
 * Under CI=true a missing cpio/bsdtar is a failure, not a skip (.ci/run installs them).
 */
import { execFileSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeFileSync, lutimesSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cpioBytes } from '../../../src/image/eif/cpio.js';
import type { CpioEntry } from '../../../src/image/eif/cpio.js';
import { rootfsEntries } from '../../../src/image/eif/build.js';

function have(tool: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const tools = have('cpio') && have('bsdtar');
const runTools = tools || process.env['CI'] === 'true';

const base = mkdtempSync(join(tmpdir(), 'cl-cpio-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));

/** A small tree: nested dirs, files of lengths 0..5 (every padding case), a symlink, a UTF-8 name. */
function makeTree(dir: string): void {
  mkdirSync(join(dir, 'd', 'sub'), { recursive: true });
  mkdirSync(join(dir, 'e'));
  writeFileSync(join(dir, 'b'), 'xyz1');
  writeFileSync(join(dir, 'd', 'a'), 'hello');
  writeFileSync(join(dir, 'd', 'sub', 'empty'), '');
  writeFileSync(join(dir, 'd', 'a-b'), 'x');
  writeFileSync(join(dir, 'e', 'naïve'), 'ab');
  writeFileSync(join(dir, 'e', 'run.sh'), '#!/bin/sh\n');
  chmodSync(join(dir, 'e', 'run.sh'), 0o750);
  symlinkSync('d/a', join(dir, 'l'));
  for (const p of ['b', 'd/a', 'd/sub/empty', 'd/a-b', 'e/naïve', 'e/run.sh', 'd/sub', 'd', 'e', '.']) utimesSync(join(dir, p), 1, 1);
  lutimesSync(join(dir, 'l'), 1, 1);
}

describe('cpio newc writer', () => {
  it('is deterministic and independent of the input order', () => {
    const entries: CpioEntry[] = [
      { path: 'z', type: 'file', mode: 0o644, data: Buffer.from('1') },
      { path: 'a', type: 'directory', mode: 0o755 },
      { path: 'a/b', type: 'symlink', mode: 0o777, data: Buffer.from('../z') },
    ];
    const one = cpioBytes(entries, { mtime: 7 });
    expect(Buffer.from(cpioBytes([...entries].reverse(), { mtime: 7 })).equals(Buffer.from(one))).toBe(true);
    expect(Buffer.from(cpioBytes(entries, { mtime: 8 })).equals(Buffer.from(one))).toBe(false);
    expect(one.byteLength % 4).toBe(0);
    expect(Buffer.from(one).subarray(0, 6).toString('latin1')).toBe('070701');
    expect(Buffer.from(one).includes(Buffer.from('TRAILER!!!\0'))).toBe(true);
  });

  it('refuses duplicates, bad paths, bad modes and children of non-directories', () => {
    const f = (path: string): CpioEntry => ({ path, type: 'file', mode: 0o644, data: Buffer.alloc(0) });
    expect(() => cpioBytes([f('a'), f('a')])).toThrow(/duplicate path a/);
    for (const p of ['/abs', 'a/../b', 'a//b', 'a/', '', './a']) expect(() => cpioBytes([f(p)]), p).toThrow(/bad path/);
    expect(() => cpioBytes([{ ...f('a'), mode: 0o10000 }])).toThrow(/mode of a/);
    expect(() => cpioBytes([f('a'), f('a/b')])).toThrow(/parent of a\/b is a file/);
    expect(() => cpioBytes([{ path: 'd', type: 'directory', mode: 0o755, data: Buffer.from('x') }])).toThrow(/no data allowed/);
    expect(() => cpioBytes([{ path: 's', type: 'symlink', mode: 0o777, data: Buffer.alloc(0) }])).toThrow(/empty target/);
    expect(() => cpioBytes([{ ...f('a'), uid: 2 ** 32 }])).toThrow(/does not fit in 32 bits/);
  });

  it.skipIf(!runTools)('is byte for byte what GNU cpio --reproducible writes for the same tree', () => {
    const tree = join(base, 'gnu');
    mkdirSync(tree);
    makeTree(tree);
    const gnu = execFileSync('sh', ['-c', "find . -mindepth 1 -printf '%P\\0' | LC_ALL=C sort -z | cpio -o -H newc -R +0:+0 --reproducible --null --quiet"], {
      cwd: tree,
    });
    const ours = Buffer.from(cpioBytes(rootfsEntries(tree, 'x').filter((e) => e.path !== 'x').map((e) => ({ ...e, path: e.path.slice(2), uid: 0, gid: 0 })).filter((e) => !['dev', 'run', 'sys', 'var', 'proc', 'tmp'].includes(e.path)), { mtime: 1 }));
    expect(gnu.byteLength % 512).toBe(0);
    expect(gnu.subarray(0, ours.byteLength).equals(ours)).toBe(true);
    expect(gnu.subarray(ours.byteLength).every((b) => b === 0)).toBe(true);
  });

  it.skipIf(!runTools)('cpio and bsdtar extract it to the same tree (contents, modes, owners, links, mtimes)', () => {
    const tree = join(base, 'src');
    mkdirSync(tree);
    makeTree(tree);
    const archive = join(base, 'x.cpio');
    writeFileSync(archive, cpioBytes(rootfsEntries(tree, 'root').map((e) => ({ ...e, uid: 1234, gid: 4321 })), { mtime: 1_700_000_000 }));
    const listing = execFileSync('bsdtar', ['-tvf', archive], { encoding: 'utf8' });
    expect(listing).toMatch(/lrwxrwxrwx .* root\/l -> d\/a/);
    for (const tool of ['cpio', 'bsdtar']) {
      const dest = join(base, `out-${tool}`);
      mkdirSync(dest);
      if (tool === 'cpio') execFileSync('sh', ['-c', `cpio -idm --quiet --no-absolute-filenames < ${archive}`], { cwd: dest });
      else execFileSync('bsdtar', ['-xpf', archive, '-C', dest]);
      const root = join(dest, 'root');
      expect(readFileSync(join(root, 'd', 'a'), 'utf8')).toBe('hello');
      expect(readFileSync(join(root, 'e', 'naïve'), 'utf8')).toBe('ab');
      expect(readFileSync(join(root, 'd', 'sub', 'empty')).byteLength).toBe(0);
      expect(readlinkSync(join(root, 'l'))).toBe('d/a');
      const run = lstatSync(join(root, 'e', 'run.sh'));
      expect(run.mode & 0o7777).toBe(0o750);
      expect(run.mtimeMs).toBe(1_700_000_000_000);
      if (process.getuid?.() === 0) expect([run.uid, run.gid]).toEqual([1234, 4321]);
      for (const d of ['dev', 'run', 'sys', 'var', 'proc', 'tmp']) expect(lstatSync(join(root, d)).isDirectory()).toBe(true);
    }
  });
});
