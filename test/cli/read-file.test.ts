/** The CLI's one bounded file reader (src/cli/commands/read-file.ts) and the commands' use of it. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MAX_CLI_FILE_BYTES, readFileLimited } from '../../src/cli/commands/read-file.js';
import { readText, rootsFrom } from '../../src/cli/commands/client-common.js';
import { CloisterError } from '../../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'cloister-read-file-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function failure(p: Promise<unknown>): Promise<CloisterError> {
  const err: unknown = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(CloisterError);
  return err as CloisterError;
}

describe('readFileLimited', () => {
  it('reads a file up to the limit, refuses one byte more naming the file and the limit, and a missing file', async () => {
    const path = join(dir, 'ten');
    writeFileSync(path, new Uint8Array(10).fill(7));
    expect(await readFileLimited(path, 10, 'test file')).toEqual(new Uint8Array(10).fill(7));
    const over = await failure(readFileLimited(path, 9, 'test file'));
    expect(over.code).toBe('LIMIT_EXCEEDED');
    expect(over.message).toBe(`test file ${path} is 10 bytes; the limit is 9`);
    const missing = await failure(readFileLimited(join(dir, 'nope'), 9, 'test file'));
    expect(missing.code).toBe('NOT_FOUND');
    expect(missing.message).toContain(join(dir, 'nope'));
  });

  it('the commands read policies and roots through it, bounded by MAX_CLI_FILE_BYTES', async () => {
    const big = join(dir, 'big');
    writeFileSync(big, new Uint8Array(MAX_CLI_FILE_BYTES + 1));
    expect((await failure(readText(big, 'policy'))).code).toBe('LIMIT_EXCEEDED');
    expect((await failure(rootsFrom(big))).message).toContain(`the limit is ${MAX_CLI_FILE_BYTES}`);
  });
});
