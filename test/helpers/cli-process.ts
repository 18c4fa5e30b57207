/** The built CLI (dist/cli/main.js) as child processes, for the end-to-end tests. */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = resolve(REPO_ROOT, 'dist', 'cli', 'main.js');
export const HAVE_DIST = existsSync(CLI);

/** A running command: its process and everything it printed so far (stdout and stderr). */
export interface CliProc {
  readonly child: ChildProcess;
  out(): string;
}

export function startCli(args: string[]): CliProc {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: REPO_ROOT });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  return { child, out: () => out };
}

/** Signals the process (SIGTERM by default) and waits for it to exit; nothing for one already gone. */
export async function stopCli(p: CliProc | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (p === undefined || p.child.exitCode !== null) return;
  const exited = new Promise((r) => p.child.once('exit', r));
  p.child.kill(signal);
  await exited;
}
