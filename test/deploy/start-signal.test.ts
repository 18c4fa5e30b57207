/**
 * `npm start` under a process manager: SIGTERM to npm must reach the server through every
 * wrapper (npm, the start script), which then drains and exits, releasing its port.
 * A streamed chat in flight when SIGTERM arrives still completes (the stand-in engine sends
 * its tokens slowly), while the port is already released.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import { startStandin } from '../fixtures/standin-engine/index.js';
import { until } from '../helpers/until.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const haveDist = existsSync(resolve(repoRoot, 'dist', 'cli', 'main.js'));

function portFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const s = createServer();
    s.once('error', () => done(false));
    s.listen(port, '127.0.0.1', () => s.close(() => done(true)));
  });
}

function startNpm(args: string[]): { child: ReturnType<typeof spawn>; output: () => string; exited: Promise<number | null> } {
  const child = spawn('npm', ['start', '--silent', '--', ...args], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, npm_config_update_notifier: 'false' },
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, output: () => out, exited };
}

describe.skipIf(!haveDist)('npm start and SIGTERM', () => {
  it('a streamed request in flight at SIGTERM completes; the port is released at once; npm exits 0', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cloister-drain-'));
    const standin = await startStandin({ tokenDelayMs: 150 });
    try {
      const npm = startNpm([
        '--upstream', standin.baseUrl, '--upstream-model', 'standin-model', '--upstream-kind', 'openai',
        '--listen', '127.0.0.1:0', '--state-dir', join(dir, 'state'), '--drain-timeout-s', '60',
      ]);
      await until(() => /http:\s+http:\/\/127\.0\.0\.1:\d+/.test(npm.output()), 3000, 20);
      const port = Number(/http:\s+http:\/\/127\.0\.0\.1:(\d+)/.exec(npm.output())?.[1]);
      const client = await connect(`ws://127.0.0.1:${port}/`, { policy: await readFile(join(dir, 'state', 'policy.json'), 'utf8') });
      try {
        const stream = client.request({ op: 'chat', model: 'standin-model', input: { messages: [{ role: 'user', content: 'hi' }] }, stream: true });
        const got: unknown[] = [];
        for await (const event of stream) {
          got.push(event);
          if (got.length === 1) {
            npm.child.kill('SIGTERM');
            // Released while the stream goes on (bounded poll, not a timing assertion).
            let free = false;
            for (let i = 0; i < 200 && !free; i++) {
              free = await portFree(port);
              if (!free) await new Promise((r) => setTimeout(r, 10));
            }
            expect(free).toBe(true);
          }
        }
        // Every token arrived after the signal: 9 content events and the final one.
        expect(got.length).toBe(standin.behaviour.tokens.length + 1);
      } finally {
        await client.close();
      }
      expect(await npm.exited).toBe(0);
      expect(npm.output()).toContain('"event":"server.closed"');
    } finally {
      await standin.close();
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);

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
