/**
 * The install-time scripts, run as npm runs them (child processes with a chosen PATH and
 * layout): scripts/build-native.mjs without a toolchain, and scripts/prepare.mjs with and
 * without TypeScript and dist/. The full `npm ci --omit=dev` of a clean copy of the tree is
 * test/deploy/production-install.test.ts (slow: CLOISTER_SLOW_TESTS=1).
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'cloister-install-'));
  dirs.push(d);
  return d;
}

function run(script: string, args: string[], env: Record<string, string>): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [script, ...args], { env: { HOME: process.env['HOME'] ?? '/tmp', ...env }, encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** A bin folder with stand-in executables of the given names (each just exits 0). */
function fakeBin(names: string[]): string {
  const bin = join(tempDir(), 'bin');
  mkdirSync(bin);
  for (const n of names) {
    writeFileSync(join(bin, n), '#!/bin/sh\nexit 0\n');
    chmodSync(join(bin, n), 0o755);
  }
  return bin;
}

describe('scripts/build-native.mjs', () => {
  // A copy in a scratch package root: whatever node-gyp this might find builds there, never in
  // the repository (a stray `node-gyp rebuild` here would delete build/Release).
  const scratch = tempDir();
  mkdirSync(join(scratch, 'scripts'));
  const script = join(scratch, 'scripts', 'build-native.mjs');
  copyFileSync(resolve(repoRoot, 'scripts', 'build-native.mjs'), script);
  /** A stand-in node-gyp that fails like a broken build. */
  const failingGyp = (bin: string): string => {
    const gyp = join(bin, 'node-gyp.js');
    writeFileSync(gyp, "for (let i = 0; i < 47; i++) console.error('gyp ERR! stack Error: boom'); process.exit(1);\n");
    return gyp;
  };

  it('without a C compiler: one line naming what is missing, install goes on (exit 0), node-gyp never runs', () => {
    const r = run(script, [], { PATH: fakeBin(['make', 'python3']) });
    expect(r.code).toBe(0);
    expect(r.out).toBe('');
    expect(r.err.trimEnd().split('\n')).toHaveLength(1);
    expect(r.err).toContain('native addon not built (missing a C compiler (cc, gcc or clang))');
    expect(r.err).toContain('CLOISTER_SKIP_NATIVE=1');
    expect(r.err).not.toContain('gyp');
  });

  it('names every missing tool; --required fails (exit 1)', () => {
    const r = run(script, ['--required'], { PATH: fakeBin([]) });
    expect(r.code).toBe(1);
    expect(r.err).toContain('missing a C compiler (cc, gcc or clang), make, python3');
  });

  it('$CC counts as the compiler', () => {
    const bin = fakeBin(['make', 'python3', 'my-cc']);
    const r = run(script, [], { PATH: bin, CC: 'my-cc -O2', npm_config_node_gyp: failingGyp(bin) });
    expect(r.err).not.toContain('missing a C compiler');
    expect(r.err).toContain('node-gyp exited with status 1');
  });

  it('a node-gyp failure is one line too: its gyp ERR! output is not shown', () => {
    const bin = fakeBin(['cc', 'make', 'python3']);
    const r = run(script, [], { PATH: bin, npm_config_node_gyp: failingGyp(bin) });
    expect(r.code).toBe(0);
    expect(r.err.trimEnd().split('\n')).toHaveLength(1);
    expect(r.err).toContain('node-gyp exited with status 1; run with --required to see its output');
    expect(r.err + r.out).not.toContain('gyp ERR!');
  });

  it('CLOISTER_SKIP_NATIVE=1 skips the build (exit 0); with --required it fails', () => {
    const r = run(script, [], { PATH: fakeBin([]), CLOISTER_SKIP_NATIVE: '1' });
    expect(r).toMatchObject({ code: 0, out: 'cloister: native addon skipped (CLOISTER_SKIP_NATIVE=1)\n', err: '' });
    expect(run(script, ['--required'], { PATH: fakeBin([]), CLOISTER_SKIP_NATIVE: '1' }).code).toBe(1);
  });
});

describe('scripts/prepare.mjs', () => {
  /** A package root holding a copy of prepare.mjs, optionally a TypeScript stand-in and a dist/. */
  function layout(options: { tsc?: 'ok' | 'fails'; dist?: boolean }): { root: string; script: string } {
    const root = tempDir();
    mkdirSync(join(root, 'scripts'));
    const script = join(root, 'scripts', 'prepare.mjs');
    copyFileSync(resolve(repoRoot, 'scripts', 'prepare.mjs'), script);
    if (options.tsc !== undefined) {
      mkdirSync(join(root, 'node_modules', 'typescript', 'bin'), { recursive: true });
      // Stands in for tsc -p tsconfig.build.json: writes dist/cli/main.js, or fails like a type error.
      writeFileSync(
        join(root, 'node_modules', 'typescript', 'bin', 'tsc'),
        options.tsc === 'ok'
          ? "const fs = require('fs'); fs.mkdirSync('dist/cli', { recursive: true }); fs.writeFileSync('dist/cli/main.js', '// built ' + process.argv.slice(2).join(' '));\n"
          : 'process.exit(2);\n',
      );
    }
    if (options.dist === true) {
      mkdirSync(join(root, 'dist', 'cli'), { recursive: true });
      writeFileSync(join(root, 'dist', 'cli', 'main.js'), '// old build\n');
    }
    return { root, script };
  }

  it('with TypeScript: builds dist/ (a fresh one)', () => {
    const { root, script } = layout({ tsc: 'ok', dist: true });
    writeFileSync(join(root, 'dist', 'stale.js'), '');
    const r = spawnSync(process.execPath, [script], { cwd: root, encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(existsSync(join(root, 'dist', 'stale.js'))).toBe(false);
    expect(existsSync(join(root, 'dist', 'cli', 'main.js'))).toBe(true);
  });

  it('a TypeScript error fails the install with its status', () => {
    const { root, script } = layout({ tsc: 'fails' });
    expect(spawnSync(process.execPath, [script], { cwd: root, encoding: 'utf8' }).status).toBe(2);
  });

  it('production install (no TypeScript) with dist/: keeps it, exit 0', () => {
    const { root, script } = layout({ dist: true });
    const r = spawnSync(process.execPath, [script], { cwd: root, encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('using the existing dist/');
  });

  it('production install without dist/: succeeds and says in one line how to get dist/', () => {
    const { root, script } = layout({});
    const r = spawnSync(process.execPath, [script], { cwd: root, encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('npm pack');
  });
});
