#!/usr/bin/env node
/**
 * Builds the optional native addon (native/cloister_native.c + native/crypto.c ->
 * build/Release/cloister_native.node).
 *
 * Runs as the package's `install` script, so `npm ci` builds the addon when a C compiler and
 * the Node headers are present. Without `--required` a failed build is reported clearly and
 * the install goes on: the addon is needed only inside a Nitro Enclave (NSM) or an SEV-SNP
 * guest, and the TypeScript loader (src/native/index.ts) answers PLATFORM_UNAVAILABLE when
 * it is missing. Everywhere else it is a speed-up: the HPKE crypto fast path (native/crypto.c,
 * on the OpenSSL 3 inside Node, headers from <prefix>/include/node/openssl) roughly doubles
 * request open + response seal; without it src/crypto/backend.ts stays on node:crypto. The
 * enclave image build passes `--required`, so an image never ships without it.
 *
 * Offline-friendly: when the running Node's own headers are installed next to it
 * (<prefix>/include/node/node_api.h), node-gyp is pointed at them instead of downloading.
 *
 * Quiet when it cannot build: the toolchain (a C compiler - $CC, cc, gcc or clang -, make
 * and python3) is looked up on PATH first, and a missing piece is reported in one line
 * without running node-gyp. A node-gyp failure is also one line (its output is shown only
 * with --required, where the image build wants every detail). CLOISTER_SKIP_NATIVE=1 skips
 * the build altogether.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const required = process.argv.includes('--required');

function findNodeGyp() {
  // npm exports its bundled node-gyp to lifecycle scripts.
  const fromNpm = process.env.npm_config_node_gyp;
  if (fromNpm && existsSync(fromNpm)) return fromNpm;
  const candidates = [
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  for (const c of candidates) if (existsSync(c)) return c;
  try {
    return createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    return undefined;
  }
}

/** The first executable called `name` on PATH (or `name` itself when it is a path), else undefined. */
function which(name, path = process.env.PATH ?? '') {
  const candidates = name.includes('/') ? [name] : path.split(':').filter((d) => d !== '').map((d) => join(d, name));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** What node-gyp needs that is missing from PATH: [] when the toolchain looks complete. */
function missingToolchain(env = process.env) {
  const path = env.PATH ?? '';
  const missing = [];
  const cc = env.CC !== undefined && env.CC !== '' ? [env.CC.split(' ')[0] ?? ''] : ['cc', 'gcc', 'clang'];
  if (!cc.some((c) => which(c, path) !== undefined)) missing.push('a C compiler (cc, gcc or clang)');
  if (which('make', path) === undefined) missing.push('make');
  if (which('python3', path) === undefined && which('python', path) === undefined) missing.push('python3');
  return missing;
}

function fail(reason) {
  // One line: an install without a compiler is normal outside a TEE image build.
  const msg =
    `cloister: native addon not built (${reason}); it is needed only in a Nitro Enclave or SEV-SNP guest, elsewhere HPKE uses node:crypto ` +
    '(install a C compiler, make and python3 and run `node scripts/build-native.mjs --required` to build it; CLOISTER_SKIP_NATIVE=1 skips this step)';
  if (required) {
    console.error(msg);
    process.exit(1);
  }
  console.warn(msg);
  process.exit(0);
}

if (process.env.CLOISTER_SKIP_NATIVE === '1') {
  if (required) fail('CLOISTER_SKIP_NATIVE=1');
  console.log('cloister: native addon skipped (CLOISTER_SKIP_NATIVE=1)');
  process.exit(0);
}
const missing = missingToolchain();
if (missing.length > 0) fail(`missing ${missing.join(', ')}`);
const nodeGyp = findNodeGyp();
if (nodeGyp === undefined) fail('node-gyp not found');

const args = [nodeGyp, 'rebuild', '--release'];
const prefix = resolve(dirname(process.execPath), '..');
if (existsSync(join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);

// Without --required node-gyp's output (dozens of `gyp ERR!` lines on a failure) is not shown.
const result = spawnSync(process.execPath, args, { cwd: root, stdio: ['ignore', required ? 'inherit' : 'ignore', required ? 'inherit' : 'ignore'] });
if (result.error) fail(`could not run node-gyp: ${result.error.message}`);
if (result.status !== 0) fail(`node-gyp exited with status ${String(result.status)}${required ? '' : '; run with --required to see its output'}`);
if (!existsSync(join(root, 'build', 'Release', 'cloister_native.node'))) fail('build produced no cloister_native.node');
console.log('cloister: native addon built: build/Release/cloister_native.node');
