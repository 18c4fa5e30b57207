/**
 * `npm ci --omit=dev` in a fresh copy of the committed tree (git archive HEAD), as
 * deploy/cloister.service's install step does. Slow (it installs the production dependencies,
 * from npm's cache or the registry), so it runs only with CLOISTER_SLOW_TESTS=1; the logic it
 * depends on is covered fast by test/deploy/install-scripts.test.ts. Last run: docs/DEPLOY.md
 * "Production install".
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const slow = process.env['CLOISTER_SLOW_TESTS'] === '1';

describe.skipIf(!slow)('production install (CLOISTER_SLOW_TESTS=1)', () => {
  it('npm ci --omit=dev succeeds in a fresh copy of HEAD, without npm warnings', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cloister-prod-'));
    try {
      const archive = spawnSync('sh', ['-c', `git -C "${repoRoot}" archive HEAD | tar -x -C "${dir}"`], { encoding: 'utf8' });
      expect(archive.status).toBe(0);
      const r = spawnSync('npm', ['ci', '--omit=dev', '--no-audit', '--no-fund'], { cwd: dir, encoding: 'utf8', timeout: 540_000 });
      const out = `${r.stdout}${r.stderr}`;
      expect(r.status, out).toBe(0);
      expect(out).not.toMatch(/npm warn Unknown/i);
      expect(out).not.toContain('gyp ERR!');
      expect(out).toContain('TypeScript is not installed');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 600_000);
});
