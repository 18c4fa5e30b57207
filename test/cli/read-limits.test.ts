/**
 * Files the CLI reads are bounded before they are read: `cloister infer --file`
 * (MAX_INFER_FILE_BYTES) and the broker's 32-byte secret files (readSecretFile, 256 bytes).
 */
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_INFER_FILE_BYTES, run as infer } from '../../src/cli/commands/infer.js';
import { readSecretFile } from '../../src/keys/admin-auth.js';
import { codeOfAsync } from '../helpers/errors.js';

describe('bounded CLI reads', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cloister-read-limits-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('infer --file above MAX_INFER_FILE_BYTES is LIMIT_EXCEEDED before anything connects (a closed port)', async () => {
    const big = join(dir, 'big.txt');
    await writeFile(big, '');
    await truncate(big, MAX_INFER_FILE_BYTES + 1);
    const policy = join(dir, 'policy.json');
    await writeFile(policy, '{}');
    expect(await codeOfAsync(infer(['--url', 'ws://127.0.0.1:9/', '--policy', policy, '--file', big]))).toBe('LIMIT_EXCEEDED');
    expect(await codeOfAsync(infer(['--url', 'ws://127.0.0.1:9/', '--policy', policy, '--file', join(dir, 'missing')]))).toBe('NOT_FOUND');
  });

  it('a secret file larger than 256 bytes is refused without reading it all; a good one reads', async () => {
    const big = join(dir, 'secret-big');
    await writeFile(big, '');
    await truncate(big, 64 * 1024 * 1024);
    expect(await codeOfAsync(readSecretFile(big, 'admin secret'))).toBe('CONFIG_INVALID');
    const good = join(dir, 'secret');
    await writeFile(good, `${'ab'.repeat(32)}\n`);
    expect(Buffer.from(await readSecretFile(good, 'admin secret')).toString('hex')).toBe('ab'.repeat(32));
    expect(await codeOfAsync(readSecretFile(join(dir, 'nope'), 'admin secret'))).toBe('NOT_FOUND');
  });
});
