/**
 * The server code digest (simulated PCR0 input): dist/**\/*.js plus package-lock.json, with
 * the model digest's length-prefixed file-set construction under its own label.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CODE_DIGEST_LABEL, codeDigest, defaultPackageRoot } from '../../src/server/code-digest.js';
import { codeOfAsync } from '../helpers/errors.js';

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'cloister-code-'));
  await mkdir(join(root, 'dist', 'sub'), { recursive: true });
  await writeFile(join(root, 'dist', 'a.js'), 'export const a = 1;\n');
  await writeFile(join(root, 'dist', 'sub', 'b.js'), 'export const b = 2;\n');
  await writeFile(join(root, 'dist', 'a.d.ts'), 'export declare const a: number;\n');
  await writeFile(join(root, 'dist', 'a.js.map'), '{}');
  await writeFile(join(root, 'package-lock.json'), '{"lockfileVersion":3}\n');
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** The documented construction, written out independently. */
function expected(files: [string, string][]): Uint8Array {
  const h = createHash('sha256').update(CODE_DIGEST_LABEL).update(Buffer.of(0));
  const sorted = [...files].sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  for (const [path, contents] of sorted) {
    const p = Buffer.from(path, 'utf8');
    const c = Buffer.from(contents, 'utf8');
    const n = Buffer.alloc(4);
    n.writeUInt32BE(p.length);
    const l = Buffer.alloc(8);
    l.writeBigUInt64BE(BigInt(c.length));
    h.update(n).update(p).update(l).update(c);
  }
  return new Uint8Array(h.digest());
}

describe('codeDigest', () => {
  it('is SHA-256 over dist/*.js and package-lock.json, sorted, length-prefixed, labelled', async () => {
    const d = await codeDigest({ packageRoot: root });
    expect(d.byteLength).toBe(32);
    expect(d).toEqual(
      expected([
        ['dist/a.js', 'export const a = 1;\n'],
        ['dist/sub/b.js', 'export const b = 2;\n'],
        ['package-lock.json', '{"lockfileVersion":3}\n'],
      ]),
    );
    expect(await codeDigest({ packageRoot: root })).toEqual(d); // deterministic
  });

  it('changes with the code and the lock file, not with .d.ts or .map files', async () => {
    const base = await codeDigest({ packageRoot: root });
    await writeFile(join(root, 'dist', 'a.d.ts'), 'changed');
    await writeFile(join(root, 'dist', 'a.js.map'), 'changed');
    expect(await codeDigest({ packageRoot: root })).toEqual(base);
    await writeFile(join(root, 'dist', 'sub', 'b.js'), 'export const b = 3;\n');
    const code = await codeDigest({ packageRoot: root });
    expect(code).not.toEqual(base);
    await writeFile(join(root, 'package-lock.json'), '{"lockfileVersion":2}\n');
    expect(await codeDigest({ packageRoot: root })).not.toEqual(code);
  });

  it('a moved file changes the digest (paths are measured)', async () => {
    const base = await codeDigest({ packageRoot: root });
    await rm(join(root, 'dist', 'sub', 'b.js'));
    await writeFile(join(root, 'dist', 'b.js'), 'export const b = 2;\n');
    expect(await codeDigest({ packageRoot: root })).not.toEqual(base);
  });

  it('fails closed: missing dist/ or lock, no code, links, too many files', async () => {
    const empty = await mkdtemp(join(tmpdir(), 'cloister-code-empty-'));
    try {
      expect(await codeOfAsync(codeDigest({ packageRoot: empty }))).toBe('NOT_FOUND');
      await mkdir(join(empty, 'dist'));
      await writeFile(join(empty, 'package-lock.json'), '{}');
      expect(await codeOfAsync(codeDigest({ packageRoot: empty }))).toBe('NOT_FOUND'); // no .js at all
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
    expect(await codeOfAsync(codeDigest({ packageRoot: root, maxFiles: 1 }))).toBe('LIMIT_EXCEEDED');
    expect(await codeOfAsync(codeDigest({ packageRoot: root, maxFiles: 0 }))).toBe('INVALID_ARGUMENT');
    await symlink(join(root, 'package-lock.json'), join(root, 'dist', 'link.js'));
    expect(await codeOfAsync(codeDigest({ packageRoot: root }))).toBe('CONFIG_INVALID');
    await rm(join(root, 'dist', 'link.js'));
    await rm(join(root, 'package-lock.json'));
    expect(await codeOfAsync(codeDigest({ packageRoot: root }))).toBe('NOT_FOUND');
  });

  const built = existsSync(join(defaultPackageRoot(), 'dist', 'cli', 'main.js'));
  if (!built) console.warn('test/server/code-digest.test.ts: dist/ is not built; the default-root case is skipped');
  it.skipIf(!built)("measures this package's own build by default", async () => {
    expect((await codeDigest()).byteLength).toBe(32);
  });
});
