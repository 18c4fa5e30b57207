/**
 * Test-only access to the public vectors vendored in test/vectors (see its README.md for each
 * file's source, commit and license). A checkout that lacks a vector makes the tests that need
 * it skip, with one console note; under CI=true a missing vector is a failure instead (a test
 * named after the missing file fails), so CI can never pass by skipping. Not a test file itself.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe } from 'vitest';
import { requirePresent } from './ci.js';

/** The repository root: the nearest folder above this file with a package.json (this file also runs compiled, from build/fuzz). */
export const REPO_ROOT = findRepoRoot(path.dirname(fileURLToPath(import.meta.url)));

function findRepoRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}
export const VECTORS_DIR = path.resolve(REPO_ROOT, 'test', 'vectors');

/** Absolute path of a file or folder under test/vectors. */
export function vectorPath(rel: string): string {
  return path.join(VECTORS_DIR, rel);
}

const reported = new Set<string>();

/**
 * True when every named file or folder exists. For each one that does not: a console note
 * (outside CI) or a failing test (CI=true), once per path.
 */
export function hasVectors(...rels: readonly string[]): boolean {
  let ok = true;
  for (const rel of rels.length === 0 ? ['.'] : rels) {
    const p = vectorPath(rel);
    if (existsSync(p)) continue;
    ok = false;
    if (!reported.has(p)) {
      reported.add(p);
      requirePresent(false, `test vector ${p}`);
    }
  }
  return ok;
}

export function readVector(rel: string): Uint8Array {
  return new Uint8Array(readFileSync(vectorPath(rel)));
}

export function readVectorText(rel: string): string {
  return readFileSync(vectorPath(rel), 'utf8');
}

/** A JSON vector or sidecar; the type is the test's claim about its shape. */
export function readVectorJson<T>(rel: string): T {
  return JSON.parse(readVectorText(rel)) as T;
}

/**
 * `describe` that is skipped, with one console note, unless every named vector exists (under
 * CI=true the absence is a failing test instead). The body is still collected when skipped, so
 * it must read vectors only inside its tests (or behind `hasVectors`).
 */
export function describeWithVectors(rels: string | readonly string[], name: string, fn: () => void): void {
  const present = typeof rels === 'string' ? hasVectors(rels) : hasVectors(...rels);
  describe.skipIf(!present)(name, fn);
}
