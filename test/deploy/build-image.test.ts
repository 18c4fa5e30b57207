/**
 * scripts/build-image.mjs against a stand-in `buildah` that records its argv and answers
 * `inspect`, `from`, `mount` and `rm` like buildah 1.28 (the real build runs in CI through
 * scripts/ci-image.sh): the build command is reproducible-by-construction (chroot isolation,
 * fixed timestamp, no cache), the build CA goes in as a secret only, and measurements.json
 * and policy.json agree with the EIF built from the mounted root filesystem.
 */
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { measureEifFile } from '../../src/image/eif/measure.js';

type Main = (argv: string[], opts: Record<string, unknown>) => Promise<number>;
const repoRoot = resolve(new URL('../..', import.meta.url).pathname);
const mod = (await import(new URL('../../scripts/build-image.mjs', import.meta.url).href)) as { buildImage: Main; treeBytes: (dir: string) => number };

const work = mkdtempSync(join(tmpdir(), 'cl-bimg-'));
const modelDir = join(repoRoot, 'build', `test-image-model-${process.pid}`);
afterAll(() => {
  rmSync(work, { recursive: true, force: true });
  rmSync(modelDir, { recursive: true, force: true });
});
const PINNED = 'localhost/base@sha256:' + 'cd'.repeat(32);
const rootfs = join(work, 'rootfs');
const record = join(work, 'argv.jsonl');
const bin = join(work, 'bin');
mkdirSync(join(rootfs, 'opt', 'cloister', 'node_modules', 'x'), { recursive: true });
writeFileSync(join(rootfs, 'opt', 'cloister', 'node_modules', 'x', 'index.js'), 'x'.repeat(300));
writeFileSync(join(rootfs, 'opt', 'cloister', 'main.js'), 'y'.repeat(600));
mkdirSync(join(rootfs, 'opt', 'cloister', 'dist'));
writeFileSync(join(rootfs, 'opt', 'cloister', 'dist', 'index.js'), 'z'.repeat(98));
writeFileSync(join(rootfs, 'opt', 'cloister', 'package-lock.json'), '{}');
mkdirSync(modelDir, { recursive: true });
writeFileSync(join(modelDir, 'config.json'), '{"model_type":"bert"}');
mkdirSync(bin);
writeFileSync(
  join(bin, 'buildah'),
  `#!${process.execPath}
const fs = require('fs');
const a = process.argv.slice(2);
fs.appendFileSync(${JSON.stringify(record)}, JSON.stringify(a) + '\\n');
const out = (o) => process.stdout.write(typeof o === 'string' ? o + '\\n' : JSON.stringify(o));
if (a[0] === 'bud') process.exit(0);
if (a[0] === 'inspect' && a[2] === 'image') out({ FromImageID: 'ef'.repeat(32), OCIv1: { rootfs: { type: 'layers', diff_ids: ['sha256:' + '01'.repeat(32), 'sha256:' + '02'.repeat(32)] } } });
else if (a[0] === 'inspect' && a[2] === 'container') out({ OCIv1: { config: { Cmd: ['/opt/cloister/enclave/entrypoint.sh', 'node', 'x'], Env: ['PATH=/usr/bin', 'CLOISTER_PLATFORM=nitro'] } } });
else if (a[0] === 'from') out('ctr-1');
else if (a[0] === 'mount') out(${JSON.stringify(rootfs)});
else if (a[0] === 'rm') out('ctr-1');
else process.exit(3);
`,
);
chmodSync(join(bin, 'buildah'), 0o755);
const blobs = { kernel: join(work, 'bzImage'), init: join(work, 'init'), nsm: join(work, 'nsm.ko'), cmdline: join(work, 'cmdline') };
writeFileSync(blobs.kernel, 'K'.repeat(1000));
writeFileSync(blobs.init, 'init');
writeFileSync(blobs.nsm, 'nsm');
writeFileSync(blobs.cmdline, 'console=ttyS0\n');
const ca = join(work, 'proxy-ca.pem');
writeFileSync(ca, 'not really a CA, only a path');

const env = { PATH: `${bin}:/usr/bin:/bin`, NODE_EXTRA_CA_CERTS: ca };
const calls = (): string[][] => readFileSync(record, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as string[]);
const log = (): void => undefined;

describe('scripts/build-image.mjs (stand-in buildah)', () => {
  it('builds with chroot isolation, a fixed timestamp, no cache, the mirror, and the CA as a secret; publishes the EIF PCRs', async () => {
    const out = join(work, 'out');
    const args = ['--node-image', PINNED, '--model-dir', modelDir, '--debian-mirror', 'http://deb.debian.org/debian', '--source-date-epoch', '1700000000', '--out', out];
    const eifArgs = ['--kernel', blobs.kernel, '--init', blobs.init, '--nsm', blobs.nsm, '--cmdline', blobs.cmdline];
    expect(await mod.buildImage([...args, ...eifArgs], { env, log })).toBe(0);
    const bud = calls().find((c) => c[0] === 'bud') ?? [];
    expect(bud.slice(0, 6)).toEqual(['bud', '--isolation', 'chroot', '--timestamp', '1700000000', '--layers=false']);
    expect(bud).toContain('--no-cache');
    const argPairs = bud.flatMap((v, i) => (v === '--build-arg' ? [bud[i + 1]] : []));
    expect(argPairs).toEqual(expect.arrayContaining([`NODE_IMAGE=${PINNED}`, 'SOURCE_DATE_EPOCH=1700000000', 'DEBIAN_MIRROR=http://deb.debian.org/debian']));
    expect(bud[bud.indexOf('--secret') + 1]).toBe(`id=build_ca,src=${ca}`);
    expect(argPairs.join(' ')).not.toContain(ca); // the CA is never a build argument
    expect(calls().at(-1)).toEqual(['rm', 'ctr-1']);

    const m = JSON.parse(readFileSync(join(out, 'measurements.json'), 'utf8')) as Record<string, Record<string, unknown>>;
    expect(m['image']).toMatchObject({ id: `sha256:${'ef'.repeat(32)}`, base: PINNED, debian: { mirror: 'http://deb.debian.org/debian' }, sourceDateEpoch: 1700000000, layers: [`sha256:${'01'.repeat(32)}`, `sha256:${'02'.repeat(32)}`] });
    expect(m['image']?.['size']).toEqual({ rootfsBytes: 1000, nodeModulesBytes: 300, nodeModulesShare: 0.3 });
    // The code digest of the image's /opt/cloister (dist/*.js + package-lock.json).
    expect(m['image']?.['codeDigest']).toMatch(/^[0-9a-f]{64}$/);
    expect(m['source']?.['lockFileSha256']).toMatch(/^[0-9a-f]{64}$/);
    const measured = measureEifFile(join(out, 'cloister.eif')).measurements;
    expect(m['measurements']).toEqual({ hashAlgorithm: 'SHA384', PCR0: measured.pcr0, PCR1: measured.pcr1, PCR2: measured.pcr2 });
    const policy = JSON.parse(readFileSync(join(out, 'policy.json'), 'utf8')) as unknown;
    expect(policy).toEqual({ version: 1, platforms: { nitro: { pcrs: { 0: measured.pcr0, 1: measured.pcr1, 2: measured.pcr2 } } }, models: m['models'] });
  });

  it('refuses an unpinned base, half of the EIF blobs, and --check without buildah', async () => {
    const base = ['--model-dir', modelDir, '--source-date-epoch', '1', '--out', join(work, 'x')];
    await expect(mod.buildImage([...base, '--node-image', 'node:20-bookworm-slim'], { env, log })).rejects.toThrow(/unpinned base image/);
    await expect(mod.buildImage([...base, '--node-image', PINNED, '--kernel', blobs.kernel], { env, log })).rejects.toThrow(/go together/);
    await expect(mod.buildImage([...base, '--node-image', PINNED, '--engine', 'docker', '--check'], { env: { ...env, PATH: `${bin}:${env.PATH}` }, log })).rejects.toThrow(/docker|buildah/);
    await expect(mod.buildImage([...base, '--node-image', PINNED, '--build-ca', join(work, 'missing.pem')], { env, log })).rejects.toThrow(/missing\.pem does not exist/);
  });
});
