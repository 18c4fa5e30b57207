#!/usr/bin/env node
/**
 * The package's `prepare` script (npm runs it after `npm install` / `npm ci` in a clone, and
 * before `npm pack`): builds dist/ with TypeScript.
 *
 * A production install (`npm ci --omit=dev`) has no TypeScript: then an existing dist/ is
 * kept (a tree built earlier, or unpacked from `npm pack`), and without one the install still
 * succeeds and says, in one line, how to get dist/ (build once with the dev dependencies, or
 * install the packed tarball). It never fails an install for want of a dev dependency.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
const built = join(root, 'dist', 'cli', 'main.js');

/** What prepare does: 'build' with TypeScript present, else 'keep' an existing dist/, else 'none'. */
function prepareAction({ hasTypeScript, hasDist }) {
  if (hasTypeScript) return 'build';
  return hasDist ? 'keep' : 'none';
}

const action = prepareAction({ hasTypeScript: existsSync(tsc), hasDist: existsSync(built) });
if (action === 'keep') {
  console.log('cloister: TypeScript not installed (production install): using the existing dist/');
} else if (action === 'none') {
  console.warn(
    'cloister: dist/ is not built and TypeScript is not installed (npm ci --omit=dev): build once with `npm ci && npm run build` ' +
      'then `npm prune --omit=dev`, or install the tarball from `npm pack` (docs/DEPLOY.md "Production install")',
  );
} else {
  rmSync(join(root, 'dist'), { recursive: true, force: true });
  const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { cwd: root, stdio: 'inherit' });
  if (r.error) {
    console.error(`cloister: could not run TypeScript: ${r.error.message}`);
    process.exit(1);
  }
  process.exit(r.status ?? 1);
}
