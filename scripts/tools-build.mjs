// Compiles the build-time tools (tools/, tsconfig.tools.json: never part of dist/) and
// imports one of them. Needs the dev dependencies (TypeScript, protobufjs): `npm ci`.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));

/** `tool` is a path under tools/ without extension, e.g. 'demo-model/build'. */
export async function importTool(tool) {
  const tsc = join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc');
  if (!existsSync(tsc)) {
    console.error('TypeScript is not installed: the build-time tools need the dev dependencies (npm ci)');
    process.exit(1);
  }
  const r = spawnSync(process.execPath, [tsc, '-p', join(repoRoot, 'tsconfig.tools.json')], { cwd: repoRoot, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`tsc -p tsconfig.tools.json failed (${r.error?.message ?? `exit ${r.status}`})`);
    process.exit(1);
  }
  return import(pathToFileURL(resolve(repoRoot, 'build', 'tools', 'tools', `${tool}.js`)).href);
}
