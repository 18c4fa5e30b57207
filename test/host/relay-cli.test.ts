import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
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

  it('--egress alone: allow-listed destinations only, coded refusal otherwise; stops on SIGTERM', async () => {
    const path = join(dir, 'egress.sock');
    const dest = createServer((s) => s.end('hello'));
    await new Promise<void>((r) => dest.listen(0, '127.0.0.1', r));
    const port = (dest.address() as AddressInfo).port;
    const lines: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((s: unknown) => void lines.push(String(s)));
    const ask = (target: string): Promise<string> =>
      new Promise((resolve) => {
        const c = connect({ path }, () => c.write(`cloister-egress/1 ${target}\n`));
        let text = '';
        c.on('data', (d: Buffer) => (text += String(d)));
        c.on('close', () => resolve(text));
        c.on('error', () => resolve(text));
      });
    try {
      const exit = run(['--egress', `unix:${path}`, '--allow', `127.0.0.1:${port},kms.us-east-1.amazonaws.com:443`, '--egress-header-timeout-ms', '1000']);
      await until(() => lines.some((l) => /egress .* -> 127\.0\.0\.1:/.test(l)), 200, 10, 'the egress listening line');
      expect(await ask(`127.0.0.1:${port}`)).toBe('cloister-egress/1 ok\nhello');
      expect(await ask('127.0.0.1:1')).toBe('cloister-egress/1 error EGRESS_DENIED\n');
      process.emit('SIGTERM');
      expect(await exit).toBe(0);
      expect(lines.join('\n')).toContain('"code":"EGRESS_DENIED"');
    } finally {
      spy.mockRestore();
      await new Promise((r) => dest.close(r));
    }
  });

  it('rejects incomplete or conflicting options', async () => {
    await expect(run(['--egress', 'unix:/tmp/x.sock'])).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringMatching(/--allow/) as unknown });
    await expect(run(['--listen', '127.0.0.1:0', '--unix', '/x', '--allow', 'a.b:1'])).rejects.toMatchObject({ message: expect.stringMatching(/--allow needs --egress/) as unknown });
    await expect(run(['--egress', 'unix:/tmp/x.sock', '--allow', 'A.b:1'])).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
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
