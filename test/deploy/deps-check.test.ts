/**
 * scripts/deps-check.mjs (`npm run deps:check`): the layering of src/ and the contents of
 * dist/. The real tree passes; a copy with one planted violation of each rule fails, naming
 * the file and the rule.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const script = join(repoRoot, 'scripts', 'deps-check.mjs');

function run(root: string): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [script, '--root', root], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A scratch tree: each entry is a path under the root and its text. */
function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'cloister-deps-'));
  dirs.push(root);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

const CLEAN = {
  'src/errors.ts': 'export const E = 1;\n',
  'src/core/bytes.ts': "import { E } from '../errors.js';\nexport const B = E;\n",
  'src/crypto/aead.ts': "import { B } from '../core/bytes.js';\nexport const A = B;\n",
  'src/protocol/wire.ts': "import { A } from '../crypto/aead.js';\nexport const W = A;\n",
  'src/verifier/verify.ts': "import { W } from '../protocol/wire.js';\nexport const V = W;\n",
  'src/attester/sim.ts': "import { V } from '../verifier/verify.js';\nexport const S = V;\n",
  'src/server/server.ts': "import { S } from '../attester/sim.js';\nexport const X = S;\n",
  'src/client/client.ts': "import { V } from '../verifier/verify.js';\n// not an import: '../server/server.js'\nexport const C = V;\n",
};

describe('npm run deps:check', () => {
  it('passes on this repository (src/, and dist/ when built)', () => {
    const r = run(repoRoot);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
  });

  it('passes on a clean scratch tree (comments naming a path are not imports)', () => {
    expect(run(tree(CLEAN)).code).toBe(0);
  });

  const planted: [string, Record<string, string>, RegExp][] = [
    ['protocol/ imports server/', { 'src/protocol/bad.ts': "import { X } from '../server/server.js';\nexport const Y = X;\n" }, /protocol\/bad\.ts: protocol\/ imports server\//],
    ['crypto/ imports protocol/', { 'src/crypto/bad.ts': "export { W } from '../protocol/wire.js';\n" }, /crypto\/bad\.ts: crypto\/ imports protocol\//],
    ['core/ imports crypto/ (dynamic import)', { 'src/core/bad.ts': "export const m = () => import('../crypto/aead.js');\n" }, /core\/bad\.ts: core\/ imports crypto\//],
    ['client/ imports server/', { 'src/client/bad.ts': "import type { X } from '../server/server.js';\nexport type Y = typeof X;\n" }, /client\/bad\.ts: client\/ must not import server\//],
    ['client/ imports attester/', { 'src/client/bad.ts': "import { S } from '../attester/sim.js';\nexport const Y = S;\n" }, /client\/bad\.ts: client\/ must not import attester\//],
    ['verifier/ imports attester/', { 'src/verifier/bad.ts': "import { S } from '../attester/sim.js';\nexport const Y = S;\n" }, /verifier\/bad\.ts: verifier\/ imports attester\//],
    ['src/ imports tools/', { 'src/server/bad.ts': "import { T } from '../../tools/demo-model/build.js';\nexport const Y = T;\n" }, /server\/bad\.ts: imports \.\.\/\.\.\/tools\/demo-model\/build\.js, outside the source root/],
    ['dist/ holds tools', { 'dist/tools/demo-model/build.js': 'export const T = 1;\n' }, /dist\/tools\/demo-model\/build\.js: build-time code/],
    ['dist/ imports protobufjs', { 'dist/inference/x.js': "import protobuf from 'protobufjs';\nexport const P = protobuf;\n" }, /dist\/inference\/x\.js: imports protobufjs/],
  ];
  for (const [what, extra, message] of planted) {
    it(`fails on a planted violation: ${what}`, () => {
      const r = run(tree({ ...CLEAN, ...extra }));
      expect(r.code).toBe(1);
      expect(r.err).toMatch(message);
      expect(r.err).toContain('layering violation(s)');
    });
  }
});
