/**
 * `npm start` under a process manager: SIGTERM to npm must reach the server through every
 * wrapper (npm, the start script), which then drains and exits, releasing its port.
 * (The drain itself, a request in flight finishing after SIGTERM, is test/server/ops.test.ts.)
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { until } from '../e2e/helpers.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const haveDist = existsSync(resolve(repoRoot, 'dist', 'cli', 'main.js'));

function portFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const s = createServer();
    s.once('error', () => done(false));
    s.listen(port, '127.0.0.1', () => s.close(() => done(true)));
  });
}

describe.skipIf(!haveDist)('npm start and SIGTERM', () => {
  it('SIGTERM to npm stops the server: every process exits and the port is released', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cloister-start-'));
    try {
      const child = spawn('npm', ['start', '--silent', '--', '--listen', '127.0.0.1:0', '--state-dir', join(dir, 'state')], {
        cwd: repoRoot,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, npm_config_update_notifier: 'false' },
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      await until(() => /http:\s+http:\/\/127\.0\.0\.1:\d+/.test(out), 3000, 20);
      const port = Number(/http:\s+http:\/\/127\.0\.0\.1:(\d+)/.exec(out)?.[1]);
      expect(await portFree(port)).toBe(false);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(out).toContain('"event":"server.closed"');
      expect(await portFree(port)).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
