import { mkdtemp, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { reportDataFor } from '../../../src/protocol/binding.js';
import { parseSnpReport, verifySnpReportSignature, encodeCertTable, parseCertTable, SNP_CERT_GUIDS } from '../../../src/verifier/sev-snp/index.js';
import { parseTdxQuote } from '../../../src/verifier/tdx/index.js';
import {
  ConfigfsTsm,
  createTeeAttester,
  detectPlatform,
  nativeSevGuestDevice,
  SevSnpConfigfsAttester,
  SevSnpIoctlAttester,
  TdxConfigfsAttester,
  type SevGuestDevice,
} from '../../../src/attester/tsm/index.js';
import { FakeConfigfs, fakeSnpReport, fakeTdxQuote, testSigningKey } from './fake-configfs.js';

let root: string;
let base: string;
beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), 'cloister-tsm-'));
  root = join(base, 'tsm', 'report');
  await mkdir(root, { recursive: true });
});
afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

const KEY_CONFIG = new Uint8Array([0xa1, 0x01, 0x01, 0x02]);
const NONCE = new Uint8Array(32).fill(7);

describe('configfs-tsm against a fake kernel tree', () => {
  it('SEV-SNP attester: writes exactly 64 bytes, returns the signed report and auxblob, removes its entry', async () => {
    const key = testSigningKey();
    const aux = encodeCertTable([{ guid: SNP_CERT_GUIDS.VCEK, data: new Uint8Array([0x30, 0x82, 0, 1, 0]) }]);
    const fake = new FakeConfigfs(root, { provider: 'sev_guest', outblob: (inb) => fakeSnpReport(inb, key.privateKey), auxblob: aux });
    const attester = new SevSnpConfigfsAttester(new ConfigfsTsm({ root, fs: fake }));
    const bundle = await attester.attest({ keyConfig: KEY_CONFIG, hpkePublicKey: new Uint8Array(32), nonce: NONCE });
    expect(bundle.platform).toBe('sev-snp');
    const report = parseSnpReport(bundle.evidence);
    expect(report.reportData).toEqual(reportDataFor(KEY_CONFIG, NONCE));
    expect(verifySnpReportSignature(report, key.publicKey)).toBe(true);
    expect(bundle.certificates).toEqual(aux);
    expect(parseCertTable(bundle.certificates ?? new Uint8Array(0))[0]?.guid).toBe(SNP_CERT_GUIDS.VCEK);
    expect(bundle.keyConfig).toEqual(KEY_CONFIG);
    expect(fake.created).toHaveLength(1);
    expect(fake.removed).toEqual(fake.created);
    expect(await readdir(root)).toEqual([]);
  });

  it('the fake kernel rejects an inblob that is not 64 bytes, and ConfigfsTsm never sends one', async () => {
    const key = testSigningKey();
    const fake = new FakeConfigfs(root, { provider: 'sev_guest', outblob: (inb) => fakeSnpReport(inb, key.privateKey) });
    await fake.mkdir(join(root, 'probe'));
    await expect(fake.writeFile(join(root, 'probe', 'inblob'), new Uint8Array(63))).rejects.toThrow(/EINVAL/);
    await expect(fake.writeFile(join(root, 'probe', 'inblob'), new Uint8Array(65))).rejects.toThrow(/EINVAL/);
    await fake.rmdir(join(root, 'probe'));
    const tsm = new ConfigfsTsm({ root, fs: fake });
    await expect(tsm.report(new Uint8Array(63))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(tsm.report(new Uint8Array(65))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(fake.inblobWrites).toBe(0);
    expect(fake.created).toHaveLength(1); // only the probe above: ConfigfsTsm created no entry
  });

  it('retries when a concurrent writer bumps generation, then succeeds', async () => {
    const key = testSigningKey();
    let races = 2;
    const fake = new FakeConfigfs(root, {
      provider: 'sev_guest',
      outblob: (inb) => fakeSnpReport(inb, key.privateKey),
      duringOutblobRead: async (bump) => {
        if (races-- > 0) await bump();
      },
    });
    const tsm = new ConfigfsTsm({ root, fs: fake, maxRetries: 3 });
    const rd = new Uint8Array(64).fill(3);
    const r = await tsm.report(rd);
    expect(parseSnpReport(r.outblob).reportData).toEqual(rd);
    expect(fake.inblobWrites).toBe(3);
    expect(await readdir(root)).toEqual([]);
  });

  it('gives up after maxRetries when the generation keeps moving, and still removes the entry', async () => {
    const key = testSigningKey();
    const fake = new FakeConfigfs(root, {
      provider: 'sev_guest',
      outblob: (inb) => fakeSnpReport(inb, key.privateKey),
      afterInblobWrite: (bump) => bump(),
    });
    const tsm = new ConfigfsTsm({ root, fs: fake, maxRetries: 2 });
    await expect(tsm.report(new Uint8Array(64))).rejects.toMatchObject({ code: 'ATTESTER_FAILED' });
    expect(fake.inblobWrites).toBe(3);
    expect(fake.removed).toEqual(fake.created);
    expect(await readdir(root)).toEqual([]);
  });

  it('enforces the outblob size limit', async () => {
    const fake = new FakeConfigfs(root, { provider: 'sev_guest', outblob: () => new Uint8Array(5000) });
    const tsm = new ConfigfsTsm({ root, fs: fake, maxOutblobBytes: 4096 });
    await expect(tsm.report(new Uint8Array(64))).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED' });
    expect(await readdir(root)).toEqual([]);
  });

  it('SEV-SNP attester refuses evidence for other report_data and a wrong provider', async () => {
    const key = testSigningKey();
    const liar = new FakeConfigfs(root, { provider: 'sev_guest', outblob: () => fakeSnpReport(new Uint8Array(64), key.privateKey) });
    await expect(new SevSnpConfigfsAttester(new ConfigfsTsm({ root, fs: liar })).attest({ keyConfig: KEY_CONFIG, hpkePublicKey: new Uint8Array(32) })).rejects.toMatchObject({
      code: 'ATTESTER_FAILED',
    });
    const tdx = new FakeConfigfs(root, { provider: 'tdx_guest', outblob: fakeTdxQuote });
    await expect(new SevSnpConfigfsAttester(new ConfigfsTsm({ root, fs: tdx })).attest({ keyConfig: KEY_CONFIG, hpkePublicKey: new Uint8Array(32) })).rejects.toMatchObject({
      code: 'ATTESTER_FAILED',
    });
    expect(await readdir(root)).toEqual([]);
  });

  it('TDX attester returns the quote and attaches configured collateral', async () => {
    const fake = new FakeConfigfs(root, { provider: 'tdx_guest', outblob: fakeTdxQuote });
    const collateral = new TextEncoder().encode('{"x":1}');
    const attester = new TdxConfigfsAttester(new ConfigfsTsm({ root, fs: fake }), { collateral: () => Promise.resolve(collateral) });
    const bundle = await attester.attest({ keyConfig: KEY_CONFIG, hpkePublicKey: new Uint8Array(32), nonce: NONCE });
    expect(bundle.platform).toBe('tdx');
    expect(parseTdxQuote(bundle.evidence).report.reportData).toEqual(reportDataFor(KEY_CONFIG, NONCE));
    expect(bundle.collateral).toEqual(collateral);
    const plain = await new TdxConfigfsAttester(new ConfigfsTsm({ root, fs: fake })).attest({ keyConfig: KEY_CONFIG, hpkePublicKey: new Uint8Array(32) });
    expect(plain.collateral).toBeUndefined();
  });

  it('SEV-SNP ioctl attester goes through the SevGuestDevice interface', async () => {
    const key = testSigningKey();
    const calls: number[] = [];
    const device: SevGuestDevice = {
      getExtReport: (rd, vmpl) => {
        calls.push(vmpl);
        return Promise.resolve({ report: fakeSnpReport(rd, key.privateKey), certs: new Uint8Array(0) });
      },
    };
    const bundle = await new SevSnpIoctlAttester(device, 0).attest({ keyConfig: KEY_CONFIG, hpkePublicKey: new Uint8Array(32) });
    expect(parseSnpReport(bundle.evidence).reportData).toEqual(reportDataFor(KEY_CONFIG));
    expect(bundle.certificates).toBeUndefined();
    expect(calls).toEqual([0]);
  });
});

describe('detectPlatform', () => {
  it('names SEV-SNP or TDX from the configfs provider', async () => {
    const sev = new FakeConfigfs(root, { provider: 'sev_guest', outblob: () => new Uint8Array(0) });
    expect(await detectPlatform({ configfsRoot: root, devDir: join(base, 'dev'), fs: sev })).toMatchObject({
      platform: 'sev-snp',
      source: 'configfs-tsm',
      simulated: false,
    });
    const tdx = new FakeConfigfs(root, { provider: 'tdx_guest', outblob: () => new Uint8Array(0) });
    expect(await detectPlatform({ configfsRoot: root, devDir: join(base, 'dev'), fs: tdx })).toMatchObject({ platform: 'tdx' });
    expect(await readdir(root)).toEqual([]);
  });

  it('falls back to device nodes, then to the simulated platform', async () => {
    const dev = join(base, 'dev');
    await mkdir(dev);
    const none = join(base, 'no-configfs');
    expect(await detectPlatform({ configfsRoot: none, devDir: dev })).toEqual({ platform: 'simulated', source: 'none', simulated: true });
    await writeFile(join(dev, 'nsm'), '');
    expect(await detectPlatform({ configfsRoot: none, devDir: dev })).toMatchObject({ platform: 'nitro', source: 'nsm' });
    await writeFile(join(dev, 'tdx_guest'), '');
    expect(await detectPlatform({ configfsRoot: none, devDir: dev })).toMatchObject({ platform: 'tdx', source: 'tdx-guest' });
    await writeFile(join(dev, 'sev-guest'), '');
    expect(await detectPlatform({ configfsRoot: none, devDir: dev })).toMatchObject({ platform: 'sev-snp', source: 'sev-guest' });
  });
});

describe('createTeeAttester', () => {
  it('builds the attester for each detected TEE source, none for nitro/simulated', async () => {
    const key = testSigningKey();
    const fake = new FakeConfigfs(root, { provider: 'sev_guest', outblob: (inb) => fakeSnpReport(inb, key.privateKey) });
    const detected = await detectPlatform({ configfsRoot: root, devDir: join(base, 'dev'), fs: fake });
    const attester = createTeeAttester(detected, { fs: fake });
    expect(attester?.platform).toBe('sev-snp');
    expect(attester?.simulated).toBe(false);
    const bundle = await attester?.attest({ keyConfig: KEY_CONFIG, hpkePublicKey: new Uint8Array(32) });
    expect(bundle && parseSnpReport(bundle.evidence).reportData).toEqual(reportDataFor(KEY_CONFIG));
    expect(createTeeAttester({ platform: 'simulated', source: 'none', simulated: true })).toBeUndefined();
    expect(() => createTeeAttester({ platform: 'tdx', source: 'tdx-guest', simulated: false })).toThrow(
      expect.objectContaining({ code: 'PLATFORM_UNAVAILABLE' }),
    );
    const ioctl = createTeeAttester({ platform: 'sev-snp', source: 'sev-guest', simulated: false, path: join(base, 'missing') });
    expect(ioctl?.platform).toBe('sev-snp');
  });

  it('the native /dev/sev-guest device fails cleanly when the device cannot be opened', async () => {
    await expect(nativeSevGuestDevice(join(base, 'no-such-device')).getExtReport(new Uint8Array(64), 0)).rejects.toMatchObject({
      code: 'PLATFORM_UNAVAILABLE',
    });
  });

  it('detectPlatform warns when configfs-tsm exists but cannot be probed', async () => {
    const broken = new FakeConfigfs(root, { provider: 'sev_guest', outblob: () => new Uint8Array(0) });
    broken.mkdir = () => Promise.reject(new Error('EPERM'));
    const d = await detectPlatform({ configfsRoot: root, devDir: join(base, 'dev'), fs: broken });
    expect(d).toMatchObject({ platform: 'simulated', simulated: true });
    expect(d.warning).toMatch(/could not be probed/);
  });
});
