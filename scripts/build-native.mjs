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
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
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

function fail(reason) {
  const msg =
    `cloister: native addon not built (${reason}).\n` +
    '  It is needed only inside a Nitro Enclave (/dev/nsm) or an SEV-SNP guest (/dev/sev-guest);\n' +
    '  elsewhere it only speeds up HPKE (node:crypto is used without it).\n' +
    '  To build it: install a C compiler, make and python3, then run `node scripts/build-native.mjs --required`.';
  if (required) {
    console.error(msg);
    process.exit(1);
  }
  console.warn(msg);
  process.exit(0);
}

if (process.env.CLOISTER_SKIP_NATIVE === '1') fail('CLOISTER_SKIP_NATIVE=1');
const nodeGyp = findNodeGyp();
if (nodeGyp === undefined) fail('node-gyp not found');

const args = [nodeGyp, 'rebuild', '--release'];
const prefix = resolve(dirname(process.execPath), '..');
if (existsSync(join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);

const result = spawnSync(process.execPath, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
if (result.error) fail(`could not run node-gyp: ${result.error.message}`);
if (result.status !== 0) fail(`node-gyp exited with status ${String(result.status)}`);
if (!existsSync(join(root, 'build', 'Release', 'cloister_native.node'))) fail('build produced no cloister_native.node');
console.log('cloister: native addon built: build/Release/cloister_native.node');
