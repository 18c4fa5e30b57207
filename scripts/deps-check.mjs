#!/usr/bin/env node
/**
 * The layering check (`npm run deps:check`, docs/ARCHITECTURE.md): reads every import in
 * src/ and fails when a folder imports one it must not, or when dist/ carries build-time code.
 *
 *   node scripts/deps-check.mjs [--root DIR]   (exit 0: clean, 1: violations, each on one line)
 *
 * Rules (a folder is the first path segment under src/; src/errors.ts counts as core):
 * - core/ imports only core/; crypto/ and native/ only core/, crypto/, native/; protocol/ only
 *   those and protocol/.
 * - verifier/ imports only core/, crypto/, native/, protocol/ and verifier/ (never attester/,
 *   server/ or anything else above it).
 * - client/ imports neither server/ nor attester/.
 * - dist/ (when built) holds nothing from tools/, no demo-model and no protobufjs import.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, posix, relative, resolve, sep } from 'node:path';
import { parseArgs } from 'node:util';

const LOW = ['core', 'crypto', 'native', 'protocol'];
/** Folder -> the folders it may import (itself always allowed). */
const ALLOWED = {
  core: ['core'],
  crypto: ['core', 'native'],
  native: ['core', 'crypto'],
  protocol: ['core', 'crypto', 'native'],
  verifier: LOW,
};
/** Folder -> folders it must never import. */
const FORBIDDEN = {
  client: ['server', 'attester'],
};

const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])([^'"]+)\1/g;

function walk(dir, out = []) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else if (/\.(?:ts|js|mjs)$/.test(e.name) && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** The layer of a path relative to the source root (src/ or dist/). */
function folderOf(rel) {
  const parts = rel.split('/');
  if (parts.length === 1) return parts[0] === 'errors.ts' || parts[0] === 'errors.js' ? 'core' : 'root';
  return parts[0];
}

/** Without comments, so that a path named in a doc comment is not read as an import. */
function stripComments(text) {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
}

export function checkSources(srcRoot) {
  const problems = [];
  for (const file of walk(srcRoot)) {
    const rel = relative(srcRoot, file).split(sep).join('/');
    const from = folderOf(rel);
    const text = stripComments(readFileSync(file, 'utf8'));
    for (const m of text.matchAll(SPECIFIER)) {
      const spec = m[2];
      if (!spec.startsWith('.')) continue;
      const target = posix.normalize(posix.join(posix.dirname(rel), spec));
      if (target.startsWith('..')) {
        problems.push(`${rel}: imports ${spec}, outside the source root (build-time code?)`);
        continue;
      }
      const to = folderOf(target);
      if (to === from) continue;
      const allowed = ALLOWED[from];
      if (allowed !== undefined && !allowed.includes(to)) {
        problems.push(`${rel}: ${from}/ imports ${to}/ (${spec}); ${from}/ may import only ${[from, ...allowed].join('/, ')}/`);
      }
      if (FORBIDDEN[from]?.includes(to)) problems.push(`${rel}: ${from}/ must not import ${to}/ (${spec})`);
    }
  }
  return problems;
}

export function checkDist(distRoot) {
  const problems = [];
  for (const file of walk(distRoot)) {
    const rel = relative(distRoot, file).split(sep).join('/');
    if (rel.startsWith('tools/') || rel.includes('demo-model')) problems.push(`dist/${rel}: build-time code in the shipped build`);
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(SPECIFIER)) {
      if (m[2] === 'protobufjs' || m[2].startsWith('protobufjs/')) problems.push(`dist/${rel}: imports protobufjs (a build-time dependency)`);
      if (m[2].includes('/tools/')) problems.push(`dist/${rel}: imports ${m[2]} (build-time code)`);
    }
  }
  return problems;
}

const isMain = process.argv[1] !== undefined && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname);
if (isMain) {
  const { values } = parseArgs({ options: { root: { type: 'string', default: resolve(dirname(new URL(import.meta.url).pathname), '..') } } });
  const root = resolve(values.root);
  if (!existsSync(join(root, 'src'))) {
    console.error(`deps:check: no src/ under ${root}`);
    process.exit(2);
  }
  const problems = checkSources(join(root, 'src'));
  const dist = join(root, 'dist');
  if (existsSync(dist)) problems.push(...checkDist(dist));
  for (const p of problems) console.error(p);
  if (problems.length > 0) {
    console.error(`deps:check: ${problems.length} layering violation(s)`);
    process.exit(1);
  }
  console.log(`deps:check: src/${existsSync(dist) ? ' and dist/' : ''} follow the layering (docs/ARCHITECTURE.md)`);
}
