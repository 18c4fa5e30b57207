/**
 * `cloister serve --platform` selection (src/server/platform.ts) over fake TEE trees: the
 * shared detectPlatform/createTeeAttester pick SEV-SNP or TDX from a fake configfs-tsm, the
 * server serves evidence a client can check, and every way of not finding the requested TEE
 * fails closed. Full SEV-SNP/TDX chain verification needs AMD/Intel-signed evidence, which a
 * fake cannot produce: the client is shown to REJECT it (fail closed), while the binding and
 * signature of the fake evidence are checked directly.
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { reportDataFor } from '../../src/protocol/binding.js';
import { parseSnpReport, verifySnpReportSignature } from '../../src/verifier/sev-snp/index.js';
import { parseTdxQuote } from '../../src/verifier/tdx/index.js';
import type { NsmTransport } from '../../src/attester/nsm/device.js';
import type { Attester } from '../../src/core/types.js';
import { policyFromJson } from '../../src/verifier/policy.js';
import { connect } from '../../src/client/client.js';
import { developmentPolicy } from '../../src/client/dev-policy.js';
import { WsClientTransport } from '../../src/client/ws-transport.js';
import { HttpClientTransport } from '../../src/client/http-transport.js';
import { decodeKeyConfig } from '../../src/protocol/key-config.js';
import { codeDigest } from '../../src/server/code-digest.js';
import { createPlatformAttester, preparePlatform, selectPlatform } from '../../src/server/platform.js';
import type { PlatformOptions } from '../../src/server/platform.js';
import { CloisterServer } from '../../src/server/server.js';
import type { ServerAddress } from '../../src/server/server.js';
import { FakeConfigfs, fakeSnpReport, fakeTdxQuote, testSigningKey } from '../attester/tsm/fake-configfs.js';
import { codeOf, fakeClassify, FakeEngine } from '../e2e/helpers.js';

let base: string;
let configfsRoot: string;
let devDir: string;
const cleanup: (() => Promise<void>)[] = [];
beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), 'cloister-platform-'));
  configfsRoot = join(base, 'tsm', 'report');
  devDir = join(base, 'dev');
  await mkdir(devDir, { recursive: true });
});
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c().catch(() => undefined);
  await rm(base, { recursive: true, force: true });
});

function fakeOptions(fs: FakeConfigfs | undefined): PlatformOptions {
  return {
    detect: { configfsRoot, devDir, ...(fs === undefined ? {} : { fs }) },
    tee: fs === undefined ? {} : { fs },
  };
}

async function serve(attester: Attester, engine = new FakeEngine()): Promise<{ server: CloisterServer; urls: ServerAddress }> {
  const server = new CloisterServer({ engines: [engine], attester });
  const urls = await server.listen({ host: '127.0.0.1', port: 0 });
  cleanup.push(() => server.close());
  return { server, urls };
}

describe('selectPlatform: what each --platform value does', () => {
  it('auto with no TEE at all falls back to simulated (fellBack: the caller warns loudly)', async () => {
    const s = await selectPlatform('auto', fakeOptions(undefined));
    expect(s).toMatchObject({ platform: 'simulated', fellBack: true });
    expect(s.warning).toBeUndefined();
  });

  it('explicit simulated probes nothing', async () => {
    await mkdir(configfsRoot, { recursive: true });
    const fake = new FakeConfigfs(configfsRoot, { provider: 'sev_guest', outblob: () => new Uint8Array(0) });
    expect(await selectPlatform('simulated', fakeOptions(fake))).toEqual({ choice: 'simulated', platform: 'simulated', fellBack: false });
    expect(fake.created).toEqual([]);
  });

  it('auto picks SEV-SNP or TDX from the configfs-tsm provider', async () => {
    await mkdir(configfsRoot, { recursive: true });
    const sev = new FakeConfigfs(configfsRoot, { provider: 'sev_guest', outblob: () => new Uint8Array(0) });
    expect(await selectPlatform('auto', fakeOptions(sev))).toMatchObject({ platform: 'sev-snp', fellBack: false, detected: { source: 'configfs-tsm' } });
    const tdx = new FakeConfigfs(configfsRoot, { provider: 'tdx_guest', outblob: () => new Uint8Array(0) });
    expect(await selectPlatform('auto', fakeOptions(tdx))).toMatchObject({ platform: 'tdx', fellBack: false });
    expect(await selectPlatform('tdx', fakeOptions(tdx))).toMatchObject({ platform: 'tdx', choice: 'tdx' });
    expect(await readdir(configfsRoot)).toEqual([]);
  });

  it('a detection warning is never downgraded to simulated: auto fails closed', async () => {
    await mkdir(configfsRoot, { recursive: true });
    const broken = new FakeConfigfs(configfsRoot, { provider: 'sev_guest', outblob: () => new Uint8Array(0) });
    broken.mkdir = () => Promise.reject(new Error('EPERM'));
    const err = await selectPlatform('auto', fakeOptions(broken)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'PLATFORM_UNAVAILABLE' });
    expect(String((err as Error).message)).toMatch(/could not be probed.*refusing to fall back.*--platform simulated/);
    // ... and an explicit real platform with the same warning fails too, naming it
    expect(await selectPlatform('sev-snp', fakeOptions(broken)).catch((e: unknown) => (e as Error).message)).toMatch(/could not be probed/);
    // with a device node that still identifies the TEE, it is used and the warning is kept for printing
    await writeFile(join(devDir, 'sev-guest'), '');
    const s = await selectPlatform('auto', fakeOptions(broken));
    expect(s).toMatchObject({ platform: 'sev-snp', detected: { source: 'sev-guest' } });
    expect(s.warning).toMatch(/could not be probed/);
  });

  it('an explicitly requested TEE that is not present fails closed with PLATFORM_UNAVAILABLE', async () => {
    for (const p of ['nitro', 'sev-snp', 'tdx'] as const) {
      const err = await selectPlatform(p, fakeOptions(undefined)).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ code: 'PLATFORM_UNAVAILABLE', detail: { requested: p, found: 'simulated' } });
      expect((err as Error).message).toContain(`--platform ${p} was requested, but this machine offers no TEE`);
    }
    // another TEE than the one asked for
    await mkdir(configfsRoot, { recursive: true });
    const sev = new FakeConfigfs(configfsRoot, { provider: 'sev_guest', outblob: () => new Uint8Array(0) });
    expect(await codeOf(selectPlatform('tdx', fakeOptions(sev)))).toBe('PLATFORM_UNAVAILABLE');
    expect(await codeOf(selectPlatform('nitro', fakeOptions(sev)))).toBe('PLATFORM_UNAVAILABLE');
    // a name that is no platform
    expect(await codeOf(selectPlatform('sgx' as 'auto'))).toBe('INVALID_ARGUMENT');
  });

  it('TDX found only as /dev/tdx_guest cannot attest: PLATFORM_UNAVAILABLE at attester creation', async () => {
    await writeFile(join(devDir, 'tdx_guest'), '');
    const s = await selectPlatform('tdx', fakeOptions(undefined));
    expect(s.detected?.source).toBe('tdx-guest');
    expect(await codeOf(createPlatformAttester(s, {}, fakeOptions(undefined)))).toBe('PLATFORM_UNAVAILABLE');
  });

  it('nitro: /dev/nsm selects the NitroAttester, opened on the detected device path', async () => {
    await writeFile(join(devDir, 'nsm'), '');
    const s = await selectPlatform('auto', fakeOptions(undefined));
    expect(s).toMatchObject({ platform: 'nitro', detected: { source: 'nsm' } });
    const opened: (string | undefined)[] = [];
    const transport: NsmTransport = { raw: () => new Uint8Array(0), close: () => undefined };
    const pa = await createPlatformAttester(s, {}, { openNsm: (p) => (opened.push(p), transport) });
    expect(pa.attester.platform).toBe('nitro');
    expect(pa.attester.simulated).toBe(false);
    expect(pa.simulated).toBeUndefined();
    expect(opened).toEqual([join(devDir, 'nsm')]);
    // without a device, the real opener fails closed
    expect(await codeOf(createPlatformAttester({ ...s, detected: { ...s.detected, platform: 'nitro', source: 'nsm', simulated: false, path: join(devDir, 'none') } }, {})))
      .toBe('PLATFORM_UNAVAILABLE');
  });
});

describe('preparePlatform + server: evidence from the selected TEE reaches the client', () => {
  it('sev-snp from a fake configfs-tsm: report binds the key config and nonce; the client fails closed without an AMD chain', async () => {
    await mkdir(configfsRoot, { recursive: true });
    const key = testSigningKey();
    const measurement = new Uint8Array(48).fill(0x5a);
    const fake = new FakeConfigfs(configfsRoot, { provider: 'sev_guest', outblob: (inb) => fakeSnpReport(inb, key.privateKey, { measurement }) });
    // The code digest is only for the simulated platform: a missing build does not matter here.
    const pa = await preparePlatform({ selection: await selectPlatform('auto', fakeOptions(fake)), engines: [new FakeEngine()], code: { packageRoot: join(base, 'nowhere') }, options: fakeOptions(fake) });
    expect(pa.selection.platform).toBe('sev-snp');
    expect(pa.attester.platform).toBe('sev-snp');
    expect(pa.simulated).toBeUndefined();
    const { urls } = await serve(pa.attester);

    const tr = await WsClientTransport.connect(urls.wsUrl);
    cleanup.push(() => tr.close());
    const nonce = new Uint8Array(32).fill(9);
    const bundle = await tr.fetchEvidence(nonce);
    expect(bundle.platform).toBe('sev-snp');
    expect(decodeKeyConfig(bundle.keyConfig).platform).toBe('sev-snp');
    const report = parseSnpReport(bundle.evidence);
    expect(report.reportData).toEqual(reportDataFor(bundle.keyConfig, nonce));
    expect(report.measurement).toEqual(measurement);
    expect(verifySnpReportSignature(report, key.publicKey)).toBe(true);

    // A matching 'sev-snp' policy still rejects: the report is signed by a test key, not a VCEK.
    const policy = policyFromJson({ version: 1, platforms: { 'sev-snp': { measurements: [Buffer.from(measurement).toString('hex')] } } });
    const code = await codeOf(connect(urls.wsUrl, { policy }));
    // No VCEK in the bundle and no KDS configured: the endorsement key cannot be found.
    expect(code).toBe('CERT_CHAIN_INVALID');
    // A policy for another platform rejects it outright.
    const simOnly = policyFromJson({ version: 1, platforms: { simulated: { pcrs: { '0': 'ab'.repeat(48) } } } });
    expect(await codeOf(connect(urls.httpUrl ?? '', { policy: simOnly }))).toBe('POLICY_MISMATCH');
    expect(await readdir(configfsRoot)).toEqual([]);
  });

  it('tdx from a fake configfs-tsm: the quote binds the key config and nonce; the client fails closed without Intel collateral', async () => {
    await mkdir(configfsRoot, { recursive: true });
    const fake = new FakeConfigfs(configfsRoot, { provider: 'tdx_guest', outblob: (inb) => fakeTdxQuote(inb, { mrTd: new Uint8Array(48).fill(0x7d) }) });
    const pa = await preparePlatform({ selection: await selectPlatform('tdx', fakeOptions(fake)), engines: [new FakeEngine()], options: fakeOptions(fake) });
    expect(pa.attester.platform).toBe('tdx');
    const { urls } = await serve(pa.attester);
    const tr = new HttpClientTransport(urls.httpUrl ?? '');
    cleanup.push(() => tr.close());
    const nonce = new Uint8Array(16).fill(3);
    const bundle = await tr.fetchEvidence(nonce);
    expect(bundle.platform).toBe('tdx');
    expect(decodeKeyConfig(bundle.keyConfig).platform).toBe('tdx');
    expect(parseTdxQuote(bundle.evidence).report.reportData).toEqual(reportDataFor(bundle.keyConfig, nonce));
    const policy = policyFromJson({ version: 1, platforms: { tdx: { mrTd: ['7d'.repeat(48)], rtmr0: ['00'.repeat(48)], rtmr1: ['00'.repeat(48)], rtmr2: ['00'.repeat(48)] } } });
    const code = await codeOf(connect(urls.wsUrl, { policy }));
    // No collateral attached and no PCS fetcher configured: nothing to verify the quote with.
    expect(code).toBe('NOT_FOUND');
  });

  it('simulated: PCR0 measures the code digest; the written development policy alone lets a client in', async () => {
    const pkg = join(base, 'pkg');
    await mkdir(join(pkg, 'dist'), { recursive: true });
    await writeFile(join(pkg, 'dist', 'main.js'), 'console.log(1);\n');
    await writeFile(join(pkg, 'package-lock.json'), '{}\n');
    const engine = new FakeEngine();
    const pa = await preparePlatform({ selection: await selectPlatform('simulated'), engines: [engine], code: { packageRoot: pkg } });
    expect(pa.simulated).toBeDefined();
    const digest = await codeDigest({ packageRoot: pkg });
    const pcr0 = createHash('sha384').update(new Uint8Array(48)).update(digest).digest('hex');
    expect(pa.simulated?.pcrs['0']).toBe(pcr0);
    // The empty measurement it used to be is gone.
    expect(pa.simulated?.pcrs['0']).not.toBe(createHash('sha384').update(new Uint8Array(48)).digest('hex'));

    const { server, urls } = await serve(pa.attester, engine);
    const policy = developmentPolicy({ pcrs: pa.simulated?.pcrs ?? {}, rootSha256Hex: pa.simulated?.rootSha256Hex ?? '', models: server.router.models() });
    const c = await connect(urls.wsUrl, { policy: JSON.stringify(policy) });
    cleanup.push(() => c.close());
    expect(c.simulated).toBe(true);
    expect(await c.classify('dev loop', { model: 'fake-cls' })).toEqual(fakeClassify('dev loop'));
    // Other code: another PCR0, and the old policy refuses it.
    await writeFile(join(pkg, 'dist', 'main.js'), 'console.log(2);\n');
    const pb = await preparePlatform({ selection: await selectPlatform('simulated'), engines: [engine], code: { packageRoot: pkg } });
    expect(pb.simulated?.pcrs['0']).not.toBe(pcr0);
  });

  it('simulated without a build to measure: refuses to start (NOT_FOUND)', async () => {
    expect(await codeOf(preparePlatform({ selection: await selectPlatform('simulated'), engines: [new FakeEngine()], code: { packageRoot: join(base, 'nowhere') } }))).toBe('NOT_FOUND');
  });
});
