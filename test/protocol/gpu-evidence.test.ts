/**
 * GPU evidence in the protocol: the key config's gpus field (15), the nonce derived from the
 * key config, the bundle blob, and the attester wrapper's limits.
 */
import { describe, expect, it } from 'vitest';
import { decodeKeyConfig, encodeKeyConfig } from '../../src/protocol/key-config.js';
import type { KeyConfig } from '../../src/protocol/key-config.js';
import { decodeGpuEvidence, encodeGpuEvidence, gpuNonceFor, keyConfigGpuFor, GPU_EVIDENCE_LIMITS } from '../../src/protocol/gpu-evidence.js';
import { encodeCbor } from '../../src/core/cbor.js';
import { withGpuEvidence } from '../../src/attester/nvidia-gpu.js';
import type { CollectedGpuEvidence, GpuEvidenceCollector } from '../../src/attester/nvidia-gpu.js';
import type { AttestationRequest, Attester, EvidenceBundle } from '../../src/core/types.js';
import { codeOfAsync } from '../helpers/errors.js';

const kc: KeyConfig = {
  version: 1,
  keyId: 3,
  kemId: 0x20,
  kdfId: 1,
  aeadIds: [1],
  hpkePublicKey: new Uint8Array(32).fill(1),
  receiptPublicKey: new Uint8Array(32).fill(2),
  models: [{ name: 'm', task: 'classify', digest: new Uint8Array(32).fill(3) }],
  configDigest: new Uint8Array(32).fill(4),
  platform: 'simulated',
  notBefore: 1000,
  expiresAt: 2000,
};
const item = { report: new Uint8Array([0x11, 1, 2]), certChain: new TextEncoder().encode('pem'), driverRim: new Uint8Array([5]), vbiosRim: new Uint8Array([6]) };

describe('key config gpus (field 15)', () => {
  it('round-trips and is strict', () => {
    const gpus = [keyConfigGpuFor(item, { ccEnabled: true, devTools: false })];
    const bytes = encodeKeyConfig({ ...kc, gpus });
    expect(decodeKeyConfig(bytes).gpus).toEqual(gpus);
    expect(() => encodeKeyConfig({ ...kc, gpus: [] })).toThrow(/gpus/);
    const [first] = gpus;
    if (first === undefined) throw new Error('no entry');
    expect(() => encodeKeyConfig({ ...kc, gpus: [{ ...first, reportDigest: new Uint8Array(31) }] })).toThrow(/reportDigest/);
    // A key config without gpus encodes exactly as before (field absent).
    expect(decodeKeyConfig(encodeKeyConfig(kc)).gpus).toBeUndefined();
  });

  it('the GPU nonce covers the key config without its gpus field, and changes with the channel key', () => {
    const n = gpuNonceFor(kc);
    expect(n.byteLength).toBe(32);
    expect(gpuNonceFor({ ...kc, gpus: [keyConfigGpuFor(item, { ccEnabled: true, devTools: false })] })).toEqual(n);
    expect(gpuNonceFor({ ...kc, hpkePublicKey: new Uint8Array(32).fill(9) })).not.toEqual(n);
    expect(gpuNonceFor({ ...kc, keyId: 4 })).not.toEqual(n);
  });
});

describe('GPU evidence blob', () => {
  it('round-trips; rejects extra fields, empty values, non-deterministic encodings and the size limit', () => {
    const bytes = encodeGpuEvidence([item, item]);
    expect(decodeGpuEvidence(bytes)).toEqual([item, item]);
    expect(() => decodeGpuEvidence(new Uint8Array([...bytes, 0]))).toThrow(/GPU evidence/);
    const extra = encodeCbor([new Map<number, Uint8Array>([[1, item.report], [2, item.certChain], [3, item.driverRim], [4, item.vbiosRim], [5, item.report]])]);
    expect(() => decodeGpuEvidence(extra)).toThrow(/4 fields/);
    const empty = encodeCbor([new Map<number, Uint8Array>([[1, new Uint8Array(0)], [2, item.certChain], [3, item.driverRim], [4, item.vbiosRim]])]);
    expect(() => decodeGpuEvidence(empty)).toThrow(/non-empty/);
    expect(() => decodeGpuEvidence(encodeCbor([]))).toThrow(/1\.\./);
    expect(() => decodeGpuEvidence(new Uint8Array(GPU_EVIDENCE_LIMITS.maxBytes + 1))).toThrow(/over the limit/);
  });
});

describe('withGpuEvidence', () => {
  const cpu: Attester & { seen: AttestationRequest[] } = {
    platform: 'simulated',
    simulated: true,
    seen: [],
    attest(req: AttestationRequest): Promise<EvidenceBundle> {
      cpu.seen.push(req);
      return Promise.resolve({ platform: 'simulated', evidence: new Uint8Array([1]), keyConfig: req.keyConfig });
    },
  };
  const rims = { driverRim: new Uint8Array([5]), vbiosRim: new Uint8Array([6]) };
  const one = (nonce: Uint8Array): CollectedGpuEvidence => ({ report: new Uint8Array([0x11, ...nonce]), certChain: new Uint8Array([1]), ccEnabled: true, devTools: false });

  it('binds the GPU digests into the key config the CPU attester binds, with the derived nonce', async () => {
    const nonces: Uint8Array[] = [];
    const collector: GpuEvidenceCollector = { collect: (n) => (nonces.push(n), Promise.resolve([one(n)])) };
    const a = withGpuEvidence(cpu, { collector, rims });
    const bundle = await a.attest({ keyConfig: encodeKeyConfig(kc), hpkePublicKey: kc.hpkePublicKey });
    expect(nonces[0]).toEqual(gpuNonceFor(kc));
    const boundBytes = cpu.seen.at(-1)?.keyConfig ?? new Uint8Array(0);
    const bound = decodeKeyConfig(boundBytes);
    expect(bound.gpus).toEqual([keyConfigGpuFor(one(gpuNonceFor(kc)), { ccEnabled: true, devTools: false })]);
    expect(bundle.keyConfig).toEqual(boundBytes);
    expect(decodeGpuEvidence(bundle.gpuEvidence ?? new Uint8Array(0))[0]?.report).toEqual(one(gpuNonceFor(kc)).report);
    // Cached per key config: a second attestation does not collect again.
    await a.attest({ keyConfig: encodeKeyConfig(kc), hpkePublicKey: kc.hpkePublicKey });
    expect(nonces).toHaveLength(1);
  });

  it('hits collectTimeoutMs, maxGpus and an empty collection, each ATTESTER_FAILED; a failure is not cached', async () => {
    let calls = 0;
    const hang: GpuEvidenceCollector = { collect: () => (calls++, new Promise(() => undefined)) };
    const slow = withGpuEvidence(cpu, { collector: hang, rims, collectTimeoutMs: 50 });
    const req = { keyConfig: encodeKeyConfig(kc), hpkePublicKey: kc.hpkePublicKey };
    expect(await codeOfAsync(slow.attest(req))).toBe('ATTESTER_FAILED');
    expect(await codeOfAsync(slow.attest(req))).toBe('ATTESTER_FAILED');
    expect(calls).toBe(2);
    const many = withGpuEvidence(cpu, { collector: { collect: (n) => Promise.resolve([one(n), one(n), one(n)]) }, rims, maxGpus: 2 });
    await expect(many.attest(req)).rejects.toThrow(/over the limit of 2 \(maxGpus\)/);
    const none = withGpuEvidence(cpu, { collector: { collect: () => Promise.resolve([]) }, rims });
    expect(await codeOfAsync(none.attest(req))).toBe('ATTESTER_FAILED');
  });
});
