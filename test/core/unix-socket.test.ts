/**
 * Unix socket paths longer than sun_path allows fail with an error that names the path and
 * the limit, on the server (listen), the client (ws+unix: URLs) and the relay's upstream.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CloisterError } from '../../src/errors.js';
import { WsClientTransport } from '../../src/client/ws-transport.js';
import { unixConnector } from '../../src/host/enclave-leg.js';
import { CloisterServer } from '../../src/server/server.js';
import { createSimulatedAttester } from '../../src/attester/simulated/index.js';
import { UNIX_SOCKET_PATH_BYTES, checkUnixSocketPath, wsUnixSocketPath } from '../../src/core/unix-socket.js';
import { FakeEngine } from '../e2e/helpers.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cl-sock-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A path of exactly `bytes` bytes inside `dir`. */
function pathOf(bytes: number): string {
  const prefix = `${dir}/`;
  return prefix + 's'.repeat(bytes - Buffer.byteLength(prefix));
}

function caught(fn: () => unknown): CloisterError {
  try {
    fn();
  } catch (err) {
    if (err instanceof CloisterError) return err;
    throw err;
  }
  throw new Error('did not throw');
}

describe('Unix socket path limit', () => {
  it('accepts 107 bytes and rejects 108, naming the path and the limit', () => {
    expect(UNIX_SOCKET_PATH_BYTES).toBe(108);
    expect(checkUnixSocketPath(pathOf(107))).toBe(pathOf(107));
    const err = caught(() => checkUnixSocketPath(pathOf(108)));
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain(pathOf(108));
    expect(err.message).toMatch(/108 bytes, over the limit of 107/);
    // Multi-byte characters count as bytes, not characters.
    expect(() => checkUnixSocketPath(`${dir}/${'é'.repeat(50)}`)).toThrow(/over the limit of 107/);
    expect(caught(() => checkUnixSocketPath('')).message).toMatch(/empty/);
  });

  it('reads the socket path of a ws+unix URL as ws does', () => {
    expect(wsUnixSocketPath('ws+unix:/run/cloister/cloister.sock:/')).toBe('/run/cloister/cloister.sock');
    expect(wsUnixSocketPath('ws+unix:/tmp/a.sock')).toBe('/tmp/a.sock');
    expect(wsUnixSocketPath('ws://127.0.0.1:1/')).toBeUndefined();
  });

  it('the server refuses to listen on a too-long path, and listens on one that fits', async () => {
    const attester = await createSimulatedAttester({ measurements: { configDigest: new Uint8Array(32), modelDigests: [] } });
    const server = new CloisterServer({ engines: [new FakeEngine()], attester });
    const long = pathOf(120);
    await expect(server.listen({ path: long })).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringContaining(long) as unknown });
    const fits = pathOf(107);
    const address = await server.listen({ path: fits });
    expect(address.path).toBe(fits);
    await server.close();
  });

  it('the client names the path instead of a bare connection failure', async () => {
    const long = pathOf(130);
    await expect(WsClientTransport.connect(`ws+unix:${long}:/`)).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringMatching(/130 bytes, over the limit of 107/) as unknown,
    });
  });

  it('the relay upstream rejects a too-long path at configuration time', () => {
    const err = caught(() => unixConnector(pathOf(200)));
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain(pathOf(200));
  });
});
