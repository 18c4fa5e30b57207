/**
 * End to end over loopback: a simulated CPU TEE server whose GPU collector is a stand-in
 * serving NVIDIA's recorded H100 measurements (test/fixtures/standin-gpu.ts) is accepted by a
 * client whose policy requires a GPU, and refused when the policy pins another driver
 * version, when the collector answers with another nonce, when the GPU reports DevTools mode,
 * or when the host strips the GPU evidence.
 *
 * Time: NVIDIA's test RIMs are signed by certificates valid 2023-06-27 .. 2025-06-26, so
 * server, simulated attester and client all run on one clock set back to 2024-06-01.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import type { ConnectOptions } from '../../src/client/client.js';
import { createSimulatedAttester } from '../../src/attester/simulated/index.js';
import { policyFromJson } from '../../src/verifier/policy.js';
import { developmentPolicy } from '../../src/client/dev-policy.js';
import { CloisterServer, serverConfigDigest } from '../../src/server/server.js';
import { withGpuEvidence } from '../../src/attester/nvidia-gpu.js';
import { decodeKeyConfig } from '../../src/protocol/key-config.js';
import { WsClientTransport } from '../../src/client/ws-transport.js';
import { FakeEngine } from '../helpers/engines.js';
import { codeOfAsync as codeOf } from '../helpers/errors.js';
import { createStandinGpu } from '../fixtures/standin-gpu.js';
import type { StandinGpu } from '../fixtures/standin-gpu.js';
import { describeWithVectors, readVector } from '../helpers/vectors.js';
import { startRelay } from './relay.js';
import type { Relay } from './relay.js';

const REPORT = 'nvidia/nvidia_h100_attestation_report.hex';
const DRIVER_RIM = 'nvidia/nvtrust-samples/Driver_RIM_test_no_gpu.swidtag';
const VBIOS_RIM = 'nvidia/nvtrust-samples/1010_0200_882_96005E0001_test_no_gpu.swidtag';
const OFFSET_MS = Date.now() - Date.parse('2024-06-01T00:00:00Z');
const now = (): number => Date.now() - OFFSET_MS;

describeWithVectors([REPORT, DRIVER_RIM, VBIOS_RIM], 'confidential GPU end to end', () => {
  let server: CloisterServer;
  let wsUrl: string;
  let gpu: StandinGpu;
  let policyJson: Record<string, unknown>;
  let rootPem: string;
  let relay: Relay;

  beforeAll(async () => {
    const engine = new FakeEngine();
    const models = [...engine.models()];
    const configDigest = serverConfigDigest({ engines: [engine], platform: 'simulated' });
    const cpu = await createSimulatedAttester({ measurements: { configDigest, modelDigests: models.map((m) => m.digest) }, clock: now });
    gpu = createStandinGpu(readVector(REPORT), { notBefore: new Date(now() - 86_400_000) });
    const attester = withGpuEvidence(cpu, { collector: gpu, rims: { driverRim: readVector(DRIVER_RIM), vbiosRim: readVector(VBIOS_RIM) } });
    server = new CloisterServer({ engines: [engine], attester, now });
    wsUrl = (await server.listen({ host: '127.0.0.1', port: 0 })).wsUrl;
    relay = await startRelay(wsUrl);
    rootPem = cpu.rootPem;
    policyJson = developmentPolicy({ pcrs: cpu.policySection().pcrs, rootSha256Hex: cpu.rootSha256Hex, models });
  });
  afterAll(async () => {
    await relay.close();
    await server.close();
  });

  const options = (gpus: Record<string, unknown> | undefined): ConnectOptions => ({
    policy: policyFromJson(gpus === undefined ? policyJson : { ...policyJson, gpus }),
    trustedRoots: { simulated: [rootPem] },
    now,
    verify: { gpu: { deviceRootPem: gpu.rootPem } },
  });
  const REQUIRED = { required: true, count: 1, allowedDriverVersions: ['545.00'], allowedVbiosVersions: ['96.00.5e.00.01'] };

  it('a client whose policy requires the GPU accepts the server, and the key config lists the GPU', async () => {
    const c = await connect(wsUrl, options(REQUIRED));
    const r = await c.classify('hello', { model: 'fake-cls' });
    expect(r.length).toBeGreaterThan(0);
    const kc = c.keyConfig;
    expect(kc.gpus).toHaveLength(1);
    expect(kc.gpus?.[0]).toMatchObject({ ccEnabled: true, devTools: false });
    await c.close();
    // GPU evidence is collected once per key generation, not per client.
    const before = gpu.calls;
    const c2 = await connect(wsUrl, options(REQUIRED));
    await c2.close();
    expect(gpu.calls).toBe(before);
  });

  it('refuses when the policy pins another driver version', async () => {
    expect(await codeOf(connect(wsUrl, options({ ...REQUIRED, allowedDriverVersions: ['550.90.07'] })))).toBe('POLICY_MISMATCH');
  });

  it('refuses when the policy requires another GPU count', async () => {
    expect(await codeOf(connect(wsUrl, options({ ...REQUIRED, count: 2 })))).toBe('POLICY_MISMATCH');
  });

  it('refuses a server that presents no GPU evidence (the host strips it)', async () => {
    relay.tamper = (m, dir) => {
      if (dir === 'down' && m.t === 'evidence') {
        const { gpuEvidence: _g, ...bundle } = m.bundle;
        void _g;
        return [{ ...m, bundle }];
      }
      return [m];
    };
    try {
      expect(await codeOf(connect(relay.url, options(REQUIRED)))).toBe('EVIDENCE_MALFORMED');
    } finally {
      relay.tamper = (m) => [m];
    }
  });

  describe('with a fresh key generation', () => {
    // A new server per case: GPU evidence is cached per key generation.
    async function serverWith(change: (g: StandinGpu) => void): Promise<{ url: string; close: () => Promise<void>; gpuRoot: string }> {
      const engine = new FakeEngine();
      const models = [...engine.models()];
      const configDigest = serverConfigDigest({ engines: [engine], platform: 'simulated' });
      const cpu = await createSimulatedAttester({ measurements: { configDigest, modelDigests: models.map((m) => m.digest) }, clock: now });
      const g = createStandinGpu(readVector(REPORT), { notBefore: new Date(now() - 86_400_000) });
      change(g);
      const s = new CloisterServer({ engines: [engine], attester: withGpuEvidence(cpu, { collector: g, rims: { driverRim: readVector(DRIVER_RIM), vbiosRim: readVector(VBIOS_RIM) } }), now });
      const url = (await s.listen({ host: '127.0.0.1', port: 0 })).wsUrl;
      policyJson = developmentPolicy({ pcrs: cpu.policySection().pcrs, rootSha256Hex: cpu.rootSha256Hex, models });
      rootPem = cpu.rootPem;
      return { url, close: () => s.close(), gpuRoot: g.rootPem };
    }

    it('refuses evidence whose GPU report carries another nonce (a replayed report)', async () => {
      const s = await serverWith((g) => {
        g.nonceOverride = new Uint8Array(32).fill(7);
      });
      try {
        const o = options(REQUIRED);
        const err = await connect(s.url, { ...o, verify: { gpu: { deviceRootPem: s.gpuRoot } } }).then(
          () => undefined,
          (e: unknown) => e as { code?: string; message?: string },
        );
        expect(err?.code).toBe('BINDING_MISMATCH');
        expect(err?.message).toMatch(/GPU 0 nonce/);
      } finally {
        await s.close();
      }
    });

    it('refuses a GPU in DevTools (debug) mode', async () => {
      const s = await serverWith((g) => {
        g.state = { ccEnabled: true, devTools: true };
      });
      try {
        expect(await codeOf(connect(s.url, { ...options(REQUIRED), verify: { gpu: { deviceRootPem: s.gpuRoot } } }))).toBe('DEBUG_MODE');
      } finally {
        await s.close();
      }
    });

    it('without the test GPU root the chain is refused (NVIDIA\'s root is pinned by default)', async () => {
      const s = await serverWith(() => undefined);
      try {
        const { verify: _v, ...o } = options(REQUIRED);
        void _v;
        expect(await codeOf(connect(s.url, o))).toBe('ROOT_UNTRUSTED');
        // The GPU evidence digests are in the key config the CPU evidence binds.
        const t = await WsClientTransport.connect(s.url);
        const bundle = await t.fetchEvidence(undefined);
        await t.close();
        expect(decodeKeyConfig(bundle.keyConfig).gpus).toHaveLength(1);
        expect(bundle.gpuEvidence?.byteLength).toBeGreaterThan(4000);
      } finally {
        await s.close();
      }
    });
  });
});
