/**
 * The GPU evidence verifier against NVIDIA's real evidence (test/vectors/nvidia): the
 * go-nvtrust / nvtrust H100 report verifies completely (chain, signature, nonce, both test
 * RIMs, all active measurements); every field class of report, chain and RIM is tampered
 * and each is rejected at its named step.
 */
import { describe, expect, it } from 'vitest';
import { describeWithVectors, readVector, readVectorText } from '../../helpers/vectors.js';
import { verifyNvidiaGpuEvidence } from '../../../src/verifier/nvidia/verify.js';
import type { NvidiaGpuReport, NvidiaGpuVerifyOptions } from '../../../src/verifier/nvidia/verify.js';
import { parseNvidiaAttestationReport, reportBytesFrom } from '../../../src/verifier/nvidia/spdm.js';
import { gpuPolicyFromJson } from '../../../src/verifier/nvidia/policy.js';
import { NVIDIA_DEVICE_ROOT_PEM, NVIDIA_RIM_ROOT_PEM } from '../../../src/verifier/nvidia/roots.js';

const H100_REPORT = 'nvidia/nvidia_h100_attestation_report.hex';
const H100_CHAIN = 'nvidia/nvidia_h100_ak_cert_chain.pem';
const H100_NONCE = '4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e';
const HOPPER_REPORT = 'nvidia/nvtrust-samples/hopperAttestationReport.txt';
const HOPPER_CHAIN = 'nvidia/nvtrust-samples/hopperCertChain.txt';
const HOPPER_NONCE = '931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb';
const NEAR_REPORT = 'nvidia/nvidia_nearai_gpu0_evidence.hex';
const NEAR_CHAIN = 'nvidia/nvidia_nearai_gpu0_cert_chain.pem';
const DRIVER_RIM = 'nvidia/nvtrust-samples/Driver_RIM_test_no_gpu.swidtag';
const VBIOS_RIM = 'nvidia/nvtrust-samples/1010_0200_882_96005E0001_test_no_gpu.swidtag';
const VBIOS_PROD_RIM = 'nvidia/nvtrust-samples/1010_0200_882_96005E0001_PROD.swidtag';
/** Inside every certificate's validity: the RIM signer leaves live 2023-06-27 .. 2025-06-26. */
const AT = new Date('2024-06-01T00:00:00Z');
const VECTORS = [H100_REPORT, H100_CHAIN, HOPPER_REPORT, HOPPER_CHAIN, NEAR_REPORT, NEAR_CHAIN, DRIVER_RIM, VBIOS_RIM, VBIOS_PROD_RIM];

const POLICY = gpuPolicyFromJson({ required: true, allowedDriverVersions: ['545.00'], allowedVbiosVersions: ['96.00.5e.00.01'] });

function rawReport(): Uint8Array {
  return reportBytesFrom(readVector(H100_REPORT));
}

function verify(over: Partial<NvidiaGpuVerifyOptions> & { report?: Uint8Array; chain?: Uint8Array } = {}): NvidiaGpuReport {
  const { report, chain, ...rest } = over;
  return verifyNvidiaGpuEvidence(
    { report: report ?? rawReport(), certChain: chain ?? readVector(H100_CHAIN) },
    {
      nonce: Buffer.from(H100_NONCE, 'hex'),
      driverRim: readVector(DRIVER_RIM),
      vbiosRim: readVector(VBIOS_RIM),
      policy: POLICY,
      ccState: { ccEnabled: true, devTools: false },
      at: AT,
      ...rest,
    },
  );
}

/** The first failed step, as { step, code }. */
function failure(r: NvidiaGpuReport): { step: string; code: string | undefined } | undefined {
  const f = r.steps.find((s) => !s.ok);
  return f === undefined ? undefined : { step: f.step, code: f.code };
}

function flip(b: Uint8Array, at: number): Uint8Array {
  const c = Uint8Array.from(b);
  c[at] = (c[at] ?? 0) ^ 0x01;
  return c;
}

describeWithVectors(VECTORS, 'NVIDIA GPU evidence: real vectors', () => {
  it('the H100 report verifies completely against the test RIMs, with every step named', () => {
    const r = verify();
    expect(r.steps.map((s) => [s.step, s.ok])).toEqual([
      ['decode', true],
      ['device-chain', true],
      ['fwid', true],
      ['signature', true],
      ['versions', true],
      ['nonce', true],
      ['driver-rim', true],
      ['vbios-rim', true],
      ['measurements', true],
      ['policy', true],
      ['revocation', true],
    ]);
    expect(r.ok).toBe(true);
    expect(r.claims?.driverVersion).toBe('545.00');
    expect(r.claims?.vbiosVersion).toBe('96.00.5e.00.01');
    expect(Object.keys(r.claims?.measurements ?? {})).toHaveLength(64);
    expect(Object.keys(r.claims?.measurements ?? {}).slice(0, 3)).toEqual(['1', '2', '3']);
    expect(r.claims?.measurements['1']).toBe('00'.repeat(48));
    expect(Object.values(r.claims?.measurements ?? {}).every((v) => /^[0-9a-f]{96}$/.test(v))).toBe(true);
    expect(r.steps.find((s) => s.step === 'measurements')?.detail).toMatch(/^32 active measurements match/);
    expect(r.steps.find((s) => s.step === 'revocation')?.detail).toMatch(/not checked/);
  });

  it('the current nvtrust sample (driver 550.90.07, VBIOS 96.00.9f.00.01) passes chain, FWID and signature, and fails the RIM versions: the test RIMs are not its RIMs', () => {
    const r = verifyNvidiaGpuEvidence(
      { report: readVector(HOPPER_REPORT), certChain: readVector(HOPPER_CHAIN) },
      { nonce: Buffer.from(HOPPER_NONCE, 'hex'), driverRim: readVector(DRIVER_RIM), vbiosRim: readVector(VBIOS_RIM), policy: 'none', at: AT },
    );
    const ok = Object.fromEntries(r.steps.map((s) => [s.step, s.ok]));
    expect(ok).toMatchObject({ decode: true, 'device-chain': true, fwid: true, signature: true, nonce: true, 'driver-rim': false, 'vbios-rim': false, measurements: false });
    expect(r.steps.find((s) => s.step === 'fwid')?.detail).toMatch(/^f5c384ae/);
    expect(r.claims?.driverVersion).toBe('550.90.07');
    expect(r.claims?.vbiosVersion).toBe('96.00.9f.00.01');
  });

  it('the NEAR AI H100 report verifies its chain and signature (no RIMs for driver 550.135 in the vectors)', () => {
    const r = verifyNvidiaGpuEvidence(
      { report: readVector(NEAR_REPORT), certChain: readVector(NEAR_CHAIN) },
      { nonce: Buffer.from('89d36f654c47ef2bb6ed989c9655ea19548a9057a97ef4e0b7ad54dfcf5e6b00', 'hex'), driverRim: readVector(DRIVER_RIM), vbiosRim: readVector(VBIOS_RIM), policy: 'none', at: AT },
    );
    expect(failure(r)).toEqual({ step: 'driver-rim', code: 'POLICY_MISMATCH' });
    expect(r.steps.filter((s) => ['device-chain', 'signature', 'nonce'].includes(s.step)).every((s) => s.ok)).toBe(true);
  });

  describe('report tampering', () => {
    it('a flipped bit in every header byte, every 64th byte, the end of the opaque data and the whole signature is rejected', () => {
      const raw = rawReport();
      const failures = new Map<string, number>();
      const offsets = new Set<number>();
      for (let i = 0; i < 64; i++) offsets.add(i);
      for (let i = 0; i < raw.byteLength; i += 64) offsets.add(i);
      for (let i = raw.byteLength - 128; i < raw.byteLength; i++) offsets.add(i);
      for (const i of offsets) {
        const r = verify({ report: flip(raw, i) });
        expect(r.ok, `byte ${i}`).toBe(false);
        const f = failure(r);
        failures.set(`${f?.step}/${f?.code}`, (failures.get(`${f?.step}/${f?.code}`) ?? 0) + 1);
      }
      // Headers and lengths fail decoding; the nonce, measurements, opaque data and signature fail the signature.
      expect([...failures.keys()].sort()).toEqual(['decode/EVIDENCE_MALFORMED', 'signature/EVIDENCE_SIGNATURE_INVALID']);
    }, 120_000);

    it.each([
      ['request SPDMVersion', 0, 'decode', /SPDMVersion/],
      ['request code', 1, 'decode', /GET_MEASUREMENTS/],
      ['request Param1 (signature)', 2, 'decode', /signature/],
      ['request Param2 (all measurements)', 3, 'decode', /all measurements/],
      ['request nonce', 4, 'signature', /does not verify/],
      ['response code', 38, 'decode', /MEASUREMENTS/],
      ['NumberOfBlocks', 41, 'decode', /./],
      ['MeasurementRecordLength', 42, 'decode', /./],
      ['first block MeasurementSpecification', 46, 'decode', /DMTF/],
      ['first block MeasurementSize', 47, 'decode', /block 1 value needs 48 bytes/],
      ['a measurement value', 60, 'signature', /does not verify/],
    ])('%s (byte %i) is rejected at %s', (_name, offset, step, message) => {
      const r = verify({ report: flip(rawReport(), offset) });
      expect(failure(r)?.step).toBe(step);
      expect(r.steps.find((s) => !s.ok)?.detail).toMatch(message);
    });

    it('a duplicated block index, trailing bytes, a truncated signature and a wrong nonce are each rejected', () => {
      const raw = rawReport();
      const dup = Uint8Array.from(raw);
      dup[45 + 55] = 1; // the second block claims index 1
      expect(failure(verify({ report: dup }))).toEqual({ step: 'decode', code: 'EVIDENCE_MALFORMED' });
      expect(verify({ report: dup }).steps[0]?.detail).toMatch(/appears twice/);
      const trailing = new Uint8Array([...raw, 0]);
      expect(failure(verify({ report: trailing }))).toEqual({ step: 'decode', code: 'EVIDENCE_MALFORMED' });
      expect(failure(verify({ report: raw.subarray(0, raw.byteLength - 1) }))).toEqual({ step: 'decode', code: 'EVIDENCE_MALFORMED' });
      const nonce = Buffer.from(H100_NONCE, 'hex');
      nonce[0] = (nonce[0] ?? 0) ^ 1;
      const r = verify({ nonce });
      expect(failure(r)).toEqual({ step: 'nonce', code: 'BINDING_MISMATCH' });
      // Every later step still runs: one report lists every reason.
      expect(r.steps.map((s) => s.step)).toContain('revocation');
    });

    it('the opaque data must be consumed exactly by its fields', () => {
      const p = parseNvidiaAttestationReport(rawReport());
      expect(p.opaque.size).toBe(12);
      const raw = rawReport();
      // OpaqueDataLength sits after the record and the responder nonce; growing it by one breaks the framing.
      const off = 45 + 3520 + 32;
      const bad = Uint8Array.from(raw);
      bad[off] = (bad[off] ?? 0) + 1;
      expect(failure(verify({ report: bad }))).toEqual({ step: 'decode', code: 'EVIDENCE_MALFORMED' });
    });

    it('hits maxReportBytes', () => {
      const r = verify({ maxReportBytes: 4000 });
      expect(failure(r)).toEqual({ step: 'decode', code: 'LIMIT_EXCEEDED' });
      expect(r.steps[0]?.detail).toMatch(/4049 bytes, over the limit of 4000/);
    });
  });

  describe('chain tampering', () => {
    const pems = (): string[] => readVectorText(H100_CHAIN).match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];

    it('a flipped byte inside any certificate is rejected at device-chain (or, for the leaf key, at signature)', () => {
      const list = pems();
      expect(list).toHaveLength(5);
      for (let c = 0; c < list.length; c++) {
        const der = Buffer.from((list[c] ?? '').replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
        for (const at of [40, Math.floor(der.byteLength / 2), der.byteLength - 5]) {
          const d = Buffer.from(der);
          d[at] = (d[at] ?? 0) ^ 0x01;
          const edited = [...list];
          edited[c] = `-----BEGIN CERTIFICATE-----\n${d.toString('base64')}\n-----END CERTIFICATE-----\n`;
          const r = verify({ chain: new TextEncoder().encode(edited.join('')) });
          expect(r.ok, `certificate ${c} byte ${at}`).toBe(false);
          expect(['device-chain', 'signature']).toContain(failure(r)?.step);
        }
      }
    });

    it('a missing intermediate, another root, another GPU and a time before the chain are rejected', () => {
      const list = pems();
      expect(failure(verify({ chain: new TextEncoder().encode([list[0], list[2], list[3], list[4]].join('')) }))).toEqual({ step: 'device-chain', code: 'CERT_CHAIN_INVALID' });
      expect(failure(verify({ chain: new TextEncoder().encode([...list.slice(0, 4), NVIDIA_RIM_ROOT_PEM.trim() + '\n'].join('')) }))).toEqual({ step: 'device-chain', code: 'ROOT_UNTRUSTED' });
      expect(failure(verify({ deviceRootPem: NVIDIA_RIM_ROOT_PEM }))).toEqual({ step: 'device-chain', code: 'ROOT_UNTRUSTED' });
      expect(failure(verify({ chain: readVector(NEAR_CHAIN) }))).toEqual({ step: 'signature', code: 'EVIDENCE_SIGNATURE_INVALID' });
      expect(failure(verify({ at: new Date('2021-06-01T00:00:00Z') }))).toEqual({ step: 'device-chain', code: 'CERT_EXPIRED' });
      expect(failure(verify({ maxChainBytes: 1000 }))).toEqual({ step: 'device-chain', code: 'LIMIT_EXCEEDED' });
    });

    it('the bundled roots are NVIDIA\'s (byte-identical to the vendored nvtrust copies)', () => {
      expect(NVIDIA_DEVICE_ROOT_PEM.trim()).toBe(readVectorText('nvidia/nvtrust-samples/verifier_device_root.pem').trim());
      expect(NVIDIA_RIM_ROOT_PEM.trim()).toBe(readVectorText('nvidia/nvtrust-samples/verifier_RIM_root.pem').trim());
    });
  });

  describe('RIM tampering', () => {
    const text = (rel: string): string => readVectorText(rel);

    it.each([
      ['a golden measurement', (t: string) => t.replace('0e0ee161b59bf124', '0e0ee161b59bf125'), 'EVIDENCE_SIGNATURE_INVALID'],
      ['the colloquialVersion', (t: string) => t.replace('colloquialVersion="545.00"', 'colloquialVersion="545.01"'), 'EVIDENCE_SIGNATURE_INVALID'],
      ['an active flag', (t: string) => t.replace('active="True"', 'active="False"'), 'EVIDENCE_SIGNATURE_INVALID'],
      ['the SignatureValue', (t: string) => t.replace(/<ds:SignatureValue>(.)/, (_m, c: string) => `<ds:SignatureValue>${c === 'A' ? 'B' : 'A'}`), 'EVIDENCE_SIGNATURE_INVALID'],
      ['the DigestValue', (t: string) => t.replace(/<ds:DigestValue>(.)/, (_m, c: string) => `<ds:DigestValue>${c === 'A' ? 'B' : 'A'}`), 'EVIDENCE_SIGNATURE_INVALID'],
      ['the signer certificate', (t: string) => t.replace(/<ds:X509Certificate>MIICkTCCAhag/, '<ds:X509Certificate>MIICkTCCAhAg'), 'CERT_CHAIN_INVALID'],
      ['a DTD', (t: string) => `<!DOCTYPE x [<!ENTITY a "b">]>\n${t}`, 'EVIDENCE_MALFORMED'],
      ['a second Signature', (t: string) => t.replace('</SoftwareIdentity>', '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/></SoftwareIdentity>'), 'EVIDENCE_MALFORMED'],
      ['not XML', () => 'not xml <', 'EVIDENCE_MALFORMED'],
    ])('the driver RIM with %s changed is rejected at driver-rim', (_name, edit, code) => {
      const r = verify({ driverRim: edit(text(DRIVER_RIM)) });
      expect(failure(r)).toEqual({ step: 'driver-rim', code });
      expect(r.steps.find((s) => s.step === 'vbios-rim')?.ok).toBe(true);
      expect(r.steps.find((s) => s.step === 'measurements')?.ok).toBe(false);
    });

    it('a VBIOS RIM golden value changed is rejected at vbios-rim', () => {
      const t = text(VBIOS_RIM);
      const m = /ns2:Hash0="([0-9a-f]{8})/.exec(t.slice(t.indexOf('active="True"')));
      const edited = t.replace(`ns2:Hash0="${m?.[1] ?? ''}`, `ns2:Hash0="${(m?.[1] ?? '').replace(/^./, (c) => (c === '0' ? '1' : '0'))}`);
      expect(failure(verify({ vbiosRim: edited }))).toEqual({ step: 'vbios-rim', code: 'EVIDENCE_SIGNATURE_INVALID' });
    });

    it('swapped RIMs, the production VBIOS RIM, an expired signer, another root and the size limit are rejected', () => {
      expect(failure(verify({ driverRim: readVector(VBIOS_RIM), vbiosRim: readVector(DRIVER_RIM) }))?.step).toBe('driver-rim');
      // Same VBIOS version, production values: real measurements of another build differ.
      expect(failure(verify({ vbiosRim: readVector(VBIOS_PROD_RIM) }))).toEqual({ step: 'measurements', code: 'POLICY_MISMATCH' });
      expect(verify({ vbiosRim: readVector(VBIOS_PROD_RIM) }).steps.find((s) => s.step === 'measurements')?.detail).toMatch(/index 1 \(VBIOS\), 2 \(VBIOS\), 3 \(VBIOS\), 9 \(VBIOS\)/);
      expect(failure(verify({ at: new Date('2026-01-01T00:00:00Z') }))).toEqual({ step: 'driver-rim', code: 'CERT_EXPIRED' });
      expect(failure(verify({ rimRootPem: NVIDIA_DEVICE_ROOT_PEM }))).toEqual({ step: 'driver-rim', code: 'ROOT_UNTRUSTED' });
      expect(failure(verify({ maxRimBytes: 20000 }))).toEqual({ step: 'driver-rim', code: 'LIMIT_EXCEEDED' });
    });
  });

  describe('policy', () => {
    it('refuses a driver or VBIOS version the policy does not allow', () => {
      const other = gpuPolicyFromJson({ required: true, allowedDriverVersions: ['550.90.07'], allowedVbiosVersions: ['96.00.5e.00.01'] });
      expect(failure(verify({ policy: other }))).toEqual({ step: 'policy', code: 'POLICY_MISMATCH' });
      const vb = gpuPolicyFromJson({ required: true, allowedDriverVersions: ['545.00'], allowedVbiosVersions: ['96.00.9f.00.01'] });
      expect(failure(verify({ policy: vb }))).toEqual({ step: 'policy', code: 'POLICY_MISMATCH' });
    });

    it('refuses DevTools (debug) mode and a GPU outside CC mode', () => {
      expect(failure(verify({ ccState: { ccEnabled: true, devTools: true } }))).toEqual({ step: 'policy', code: 'DEBUG_MODE' });
      expect(failure(verify({ ccState: { ccEnabled: false, devTools: false } }))).toEqual({ step: 'policy', code: 'POLICY_MISMATCH' });
    });

    it('fails closed when the policy requires a revocation check', () => {
      const p = gpuPolicyFromJson({ required: true, allowedDriverVersions: ['545.00'], allowedVbiosVersions: ['96.00.5e.00.01'], requireRevocationCheck: true });
      expect(failure(verify({ policy: p }))).toEqual({ step: 'revocation', code: 'CERT_CHAIN_INVALID' });
    });

    it('requires the nonce unless inspecting', () => {
      const { nonce: _n, ...rest } = { nonce: undefined };
      void _n;
      expect(failure(verify({ ...rest, nonce: new Uint8Array(0) }))).toEqual({ step: 'nonce', code: 'INVALID_ARGUMENT' });
      expect(verify({ nonce: new Uint8Array(0), skipNonce: true }).ok).toBe(true);
    });
  });
});

describe('GPU policy section', () => {
  it('parses and validates', () => {
    expect(gpuPolicyFromJson({ required: false })).toEqual({ required: false, allowedDriverVersions: [], allowedVbiosVersions: [], requireRevocationCheck: false });
    expect(gpuPolicyFromJson({ required: true, count: 8, allowedDriverVersions: ['550.90.07'], allowedVbiosVersions: ['96.00.9F.00.01'] }).allowedVbiosVersions).toEqual(['96.00.9f.00.01']);
    expect(() => gpuPolicyFromJson({ required: true })).toThrow(/non-empty/);
    expect(() => gpuPolicyFromJson({ required: true, count: 0, allowedDriverVersions: ['1.2'], allowedVbiosVersions: ['96.00.9f.00.01'] })).toThrow(/count/);
    expect(() => gpuPolicyFromJson({ required: false, extra: 1 })).toThrow(/unknown key/);
    expect(() => gpuPolicyFromJson({ required: false, allowedDriverVersions: ['*'] })).toThrow(/not a version/);
  });
});
