/**
 * enclave/entrypoint.sh with CLOISTER_EGRESS_VSOCK_PORT: it starts the enclave end of the
 * egress bridge (a stand-in socat on PATH records its argv) and exports CLOISTER_EGRESS for
 * the server command. As root the script would drop to the image's user, so the test then
 * runs it as nobody through setpriv (skipped when neither works).
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const entrypoint = resolve(fileURLToPath(new URL('../..', import.meta.url)), 'enclave', 'entrypoint.sh');
const root = process.getuid?.() === 0;
const haveSetpriv = spawnSync('setpriv', ['--version'], { stdio: 'ignore' }).status === 0;
/** argv prefix that runs the script as a non-root user. */
const asUser = root ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', 'sh'] : ['sh'];
const dir = mkdtempSync(join(tmpdir(), 'cloister-entry-'));
chmodSync(dir, 0o777);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe.skipIf(root && !haveSetpriv)('enclave/entrypoint.sh egress bridge', () => {
  it('starts socat UNIX-LISTEN -> VSOCK-CONNECT:3:<port> and hands the server CLOISTER_EGRESS=unix:<socket>', () => {
    const bin = join(dir, 'bin');
    spawnSync('mkdir', ['-p', bin]);
    chmodSync(bin, 0o755);
    const record = join(dir, 'socat-argv');
    writeFileSync(join(bin, 'socat'), `#!/bin/sh\nprintf '%s\\n' "$@" > '${record}'\nexec sleep 5\n`);
    chmodSync(join(bin, 'socat'), 0o755);
    const out = join(dir, 'server-env');
    const sock = join(dir, 'egress.sock');
    const [cmd = 'sh', ...pre] = asUser;
    const r = spawnSync(cmd, [...pre, entrypoint, 'sh', '-c', `sleep 0.3; printf %s "$CLOISTER_EGRESS" > '${out}'`], {
      env: { PATH: `${bin}:${process.env['PATH'] ?? '/usr/bin:/bin'}`, CLOISTER_VSOCK_PORT: '0', CLOISTER_EGRESS_VSOCK_PORT: '8000', CLOISTER_EGRESS_SOCKET: sock, CLOISTER_SOCKET: join(dir, 's.sock') },
      timeout: 20_000,
      encoding: 'utf8',
    });
    expect(r.status).toBe(0);
    expect(r.stderr).toContain(`egress: ${sock} to the parent's vsock port 8000`);
    expect(existsSync(record)).toBe(true);
    expect(readFileSync(record, 'utf8').trim().split('\n')).toEqual([`UNIX-LISTEN:${sock},fork,mode=600`, 'VSOCK-CONNECT:3:8000']);
    expect(readFileSync(out, 'utf8')).toBe(`unix:${sock}`);
  });

  it('refuses a CLOISTER_EGRESS_VSOCK_PORT that is not a number', () => {
    const r = spawnSync('sh', [entrypoint, 'true'], { env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', CLOISTER_EGRESS_VSOCK_PORT: '80a' }, encoding: 'utf8', timeout: 10_000 });
    expect(r.status).toBe(64);
    expect(r.stderr).toContain('CLOISTER_EGRESS_VSOCK_PORT must be a number');
  });
});
