/**
 * Test-only access to the shared vectors in ../shared/vectors (next to the repo root, never
 * copied into it; see its README.md). A fresh clone has no ../shared: tests that need a
 * vector then skip, and say so once on the console. Not a test file itself.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe } from 'vitest';

/** The repository root: the nearest folder above this file with a package.json (this file also runs compiled, from build/fuzz). */
export const REPO_ROOT = findRepoRoot(path.dirname(fileURLToPath(import.meta.url)));

function findRepoRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}
export const VECTORS_DIR = path.resolve(REPO_ROOT, '..', 'shared', 'vectors');

/** Absolute path of a file or folder under ../shared/vectors. */
export function vectorPath(rel: string): string {
  return path.join(VECTORS_DIR, rel);
}

const warned = new Set<string>();

/** True when every named file or folder exists; warns once for each one that does not. */
export function hasVectors(...rels: readonly string[]): boolean {
  let ok = true;
  for (const rel of rels.length === 0 ? ['.'] : rels) {
    const p = vectorPath(rel);
    if (existsSync(p)) continue;
    ok = false;
    if (!warned.has(p)) {
      warned.add(p);
      console.warn(`[vectors] ${p} is absent: skipping the tests that need it (a fresh clone has no ../shared)`);
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
 * `describe` that is skipped, with one console note, unless every named vector exists. The
 * body is still collected when skipped, so it must read vectors only inside its tests (or
 * behind `hasVectors`).
 */
export function describeWithVectors(rels: string | readonly string[], name: string, fn: () => void): void {
  const present = typeof rels === 'string' ? hasVectors(rels) : hasVectors(...rels);
  describe.skipIf(!present)(name, fn);
}
