import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { parseHostPort, run } from '../../src/cli/commands/relay.js';
import { until } from '../helpers/until.js';

const dir = mkdtempSync(join(tmpdir(), 'cloister-relay-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('cloister relay command', () => {
  it('relays to a Unix socket and drains on SIGTERM', async () => {
    const path = join(dir, 'enclave.sock');
    const enclave = createServer((s) => s.pipe(s));
    await new Promise<void>((r) => enclave.listen(path, r));
    const lines: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((s: unknown) => void lines.push(String(s)));
    try {
      const exit = run(['--listen', '127.0.0.1:0', '--unix', path, '--metrics-interval-s', '0']);
      await until(() => lines.some((l) => / -> unix:/.test(l)), 200, 10, 'the relay listening line');
      const port = Number(/127\.0\.0\.1:(\d+) -> unix:/.exec(lines.join('\n'))?.[1]);
      expect(port).toBeGreaterThan(0);
      const c = connect({ host: '127.0.0.1', port });
      c.write('ping');
      const got = await new Promise<string>((r) => c.once('data', (d: Buffer) => r(String(d))));
      expect(got).toBe('ping');
      c.end();
      await new Promise((r) => c.once('close', r));
      process.emit('SIGTERM');
      expect(await exit).toBe(0);
      expect(lines.join('\n')).toMatch(/bytes_to_enclave=4 bytes_from_enclave=4/);
      expect(lines.join('\n')).not.toContain('ping');
    } finally {
      spy.mockRestore();
      await new Promise((r) => enclave.close(r));
    }
  });

  it('rejects incomplete or conflicting options', async () => {
    await expect(run(['--listen', '127.0.0.1:0'])).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    await expect(run(['--listen', '127.0.0.1:0', '--unix', '/x', '--vsock-cid', '16'])).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    await expect(run(['--listen', '127.0.0.1:0', '--vsock-cid', '16', '--vsock-port', '5000', '--tls-cert', 'c.pem'])).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
    });
    await expect(run(['--listen', '127.0.0.1:0', '--vsock-cid', '2', '--vsock-port', '5000'])).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    await expect(run(['--listen', '127.0.0.1:0', '--unix', '/x', '--max-connections', '-3'])).rejects.toThrow();
    expect(() => parseHostPort('nohost', 'listen')).toThrow(/host:port/);
    expect(parseHostPort('[::1]:8443', 'listen')).toEqual({ host: '::1', port: 8443 });
  });
});
