/**
 * The simulated root is kept in the state directory across runs (src/attester/simulated/
 * root-store.ts): a development policy pinning it still verifies after `cloister serve`
 * restarts, so clients heal across a restart; a damaged or foreign key is replaced.
 */
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createPlatformAttester, selectPlatform } from '../../src/server/platform.js';
import { SIMULATED_ROOT_KEY_FILE, SIMULATED_ROOT_CERT_FILE } from '../../src/attester/simulated/root-store.js';
import { verifyNitroDocument } from '../../src/verifier/nitro/verify.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function attester(dir: string): Promise<Awaited<ReturnType<typeof createPlatformAttester>>> {
  return createPlatformAttester(await selectPlatform('simulated'), {}, { simulatedStateDir: dir });
}

describe('simulated root kept across runs', () => {
  it('a second run reuses the root (same pin), writes the key owner-only, and its evidence verifies under the first run\'s root', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cloister-root-'));
    dirs.push(dir);
    const first = await attester(dir);
    const second = await attester(dir);
    expect(second.simulated?.rootSha256Hex).toBe(first.simulated?.rootSha256Hex);
    expect((await stat(join(dir, SIMULATED_ROOT_KEY_FILE))).mode & 0o777).toBe(0o600);
    const bundle = await second.attester.attest({ keyConfig: new Uint8Array([1, 2, 3]), hpkePublicKey: new Uint8Array(32).fill(4) });
    const report = verifyNitroDocument(bundle.evidence, { platform: 'simulated', trustedRoots: [first.simulated?.rootPem ?? ''] });
    expect(report.ok).toBe(true);
  });

  it('a key that does not match the stored certificate is replaced by a new root (old pins then fail closed)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cloister-root-'));
    dirs.push(dir);
    const first = await attester(dir);
    const other = await mkdtemp(join(tmpdir(), 'cloister-root-'));
    dirs.push(other);
    await attester(other);
    await writeFile(join(dir, SIMULATED_ROOT_KEY_FILE), await readFile(join(other, SIMULATED_ROOT_KEY_FILE)));
    const second = await attester(dir);
    expect(second.simulated?.rootSha256Hex).not.toBe(first.simulated?.rootSha256Hex);
    expect(await readFile(join(dir, SIMULATED_ROOT_CERT_FILE), 'utf8')).toBe(second.simulated?.rootPem);
  });

  it('without a state directory every run has a fresh root', async () => {
    const a = await createPlatformAttester(await selectPlatform('simulated'), {});
    const b = await createPlatformAttester(await selectPlatform('simulated'), {});
    expect(a.simulated?.rootSha256Hex).not.toBe(b.simulated?.rootSha256Hex);
  });
});
