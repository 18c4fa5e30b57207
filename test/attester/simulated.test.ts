/**
 * The simulated platform end to end through verifyEvidence: the same Nitro verifier, an
 * explicitly trusted root, the key-config binding, key-config checks and tampering.
 */
import { createHash } from 'node:crypto';
import { X509Certificate } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { CloisterError } from '../../src/errors.js';
import { encodeKeyConfig } from '../../src/protocol/key-config.js';
import type { KeyConfig } from '../../src/protocol/key-config.js';
import { createSimulatedAttester, simulatedPcrs } from '../../src/attester/simulated/attester.js';
import type { SimulatedAttester } from '../../src/attester/simulated/attester.js';
import { policyFromJson } from '../../src/verifier/policy.js';
import type { Policy } from '../../src/verifier/policy.js';
import { EvidenceVerificationError, verifyEvidence } from '../../src/verifier/verify.js';
import type { VerifyEvidenceOptions } from '../../src/verifier/verify.js';
import { decodeCoseSign1 } from '../../src/verifier/nitro/cose.js';
import { parseNitroDocument } from '../../src/verifier/nitro/document.js';
import { verifyNitroDocument } from '../../src/verifier/nitro/verify.js';
import type { EvidenceBundle } from '../../src/core/types.js';

const T0 = Date.UTC(2025, 0, 15, 12, 0, 0);
const modelDigest = new Uint8Array(createHash('sha256').update('demo model').digest());

function keyConfig(overrides: Partial<KeyConfig> = {}): Uint8Array {
  return encodeKeyConfig({
    version: 1,
    keyId: 7,
    kemId: 0x20,
    kdfId: 1,
    aeadIds: [1, 3],
    hpkePublicKey: new Uint8Array(32).fill(0x11),
    receiptPublicKey: new Uint8Array(32).fill(0x22),
    models: [{ name: 'demo', task: 'text-classification', digest: modelDigest }],
    configDigest: new Uint8Array(32).fill(0x33),
    platform: 'simulated',
    notBefore: Math.floor(T0 / 1000) - 60,
    expiresAt: Math.floor(T0 / 1000) + 3600,
    ...overrides,
  });
}

async function expectCode(p: Promise<unknown>, code: string, step?: string): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).toBeInstanceOf(CloisterError);
  expect((err as CloisterError).code).toBe(code);
  if (step !== undefined) {
    expect(err).toBeInstanceOf(EvidenceVerificationError);
    expect((err as EvidenceVerificationError).step).toBe(step);
    expect((err as EvidenceVerificationError).report.ok).toBe(false);
  }
}

describe('simulated attester + verifyEvidence', () => {
  let sim: SimulatedAttester;
  let policy: Policy;
  let options: VerifyEvidenceOptions;
  const nonce = new Uint8Array(32).fill(0x42);
  const kc = keyConfig();

  beforeAll(async () => {
    sim = await createSimulatedAttester({
      clock: () => T0,
      measurements: { codeDigest: new Uint8Array(32).fill(1), configDigest: new Uint8Array(32).fill(0x33), modelDigests: [modelDigest] },
    });
    policy = policyFromJson({ version: 1, platforms: { simulated: sim.policySection() }, models: { demo: Buffer.from(modelDigest).toString('hex') } });
    options = { policy, trustedRoots: { simulated: [sim.rootPem] }, at: new Date(T0 + 1000), nonce };
  });

  async function attest(n: Uint8Array | null = nonce, config: Uint8Array = kc): Promise<EvidenceBundle> {
    return sim.attest({ keyConfig: config, hpkePublicKey: new Uint8Array(32).fill(0x11), ...(n === null ? {} : { nonce: n }) });
  }

  it('emits the exact Nitro document format through a 3-certificate P-384 chain', async () => {
    const bundle = await attest();
    expect(bundle.platform).toBe('simulated');
    expect(bundle.evidence[0]).toBe(0x84); // untagged COSE_Sign1, like the NSM
    const cose = decodeCoseSign1(bundle.evidence);
    expect(Buffer.from(cose.protectedBytes).toString('hex')).toBe('a1013822'); // { 1: -35 }
    const doc = parseNitroDocument(cose.payload);
    expect(doc.digest).toBe('SHA384');
    expect(doc.timestamp).toBe(T0);
    expect(doc.cabundle.length).toBe(2);
    expect(doc.pcrs.size).toBe(16);
    expect(doc.publicKey).toEqual(new Uint8Array(32).fill(0x11));
    expect(doc.userData).toEqual(new Uint8Array(createHash('sha512').update(kc).digest()));
    expect(doc.nonce).toEqual(nonce);
    const leaf = new X509Certificate(doc.certificate);
    expect(leaf.publicKey.asymmetricKeyDetails?.namedCurve).toBe('secp384r1');
    expect(leaf.ca).toBe(false);
    expect(new X509Certificate(doc.cabundle[0] ?? new Uint8Array(0)).ca).toBe(true);
    expect(createHash('sha256').update(doc.cabundle[0] ?? new Uint8Array(0)).digest('hex')).toBe(sim.rootSha256Hex);
  });

  it('derives PCR0..2 from code, config and model digests; other PCRs zero', () => {
    const a = simulatedPcrs({ codeDigest: new Uint8Array(32).fill(1) });
    const b = simulatedPcrs({ codeDigest: new Uint8Array(32).fill(2) });
    expect(a.get(0)).not.toEqual(b.get(0));
    expect(a.get(1)).toEqual(b.get(1));
    const zero48 = new Uint8Array(48);
    expect(a.get(0)).toEqual(new Uint8Array(createHash('sha384').update(zero48).update(new Uint8Array(32).fill(1)).digest()));
    for (const i of [0, 1, 2]) expect(a.get(i)).not.toEqual(zero48);
    for (let i = 3; i < 16; i++) expect(a.get(i)).toEqual(zero48);
    expect(simulatedPcrs({ modelDigests: [modelDigest] }).get(2)).not.toEqual(simulatedPcrs({ modelDigests: [modelDigest, modelDigest] }).get(2));
  });

  it('verifies with the trusted root and returns the key config, labelled simulated', async () => {
    const result = await verifyEvidence(await attest(), options);
    expect(result.platform).toBe('simulated');
    expect(result.simulated).toBe(true);
    expect(result.claims.simulated).toBe(true);
    expect(result.report.simulated).toBe(true);
    expect(result.keyConfig.keyId).toBe(7);
    expect(result.keyConfigBytes).toEqual(kc);
    expect(result.report.steps.map((s) => [s.step, s.ok])).toEqual([
      ['decode', true],
      ['cose', true],
      ['certificate-chain', true],
      ['signature', true],
      ['freshness', true],
      ['policy', true],
      ['binding', true],
      ['key-config', true],
    ]);
  });

  it('is rejected without an explicitly trusted root (and no root pin in the policy)', async () => {
    const bundle = await attest();
    const unpinned = policyFromJson({ version: 1, platforms: { simulated: { pcrs: sim.policySection().pcrs } } });
    await expectCode(verifyEvidence(bundle, { ...options, policy: unpinned, trustedRoots: {} }), 'ROOT_UNTRUSTED', 'certificate-chain');
    await expectCode(verifyEvidence(bundle, { policy: unpinned, at: options.at ?? new Date(T0), nonce }), 'ROOT_UNTRUSTED', 'certificate-chain');
    await expectCode(verifyEvidence(bundle, { ...options, policy: unpinned, trustedRoots: { simulated: [] } }), 'ROOT_UNTRUSTED', 'certificate-chain');
    // The AWS root given as "simulated" trust does not help either.
    const other = await createSimulatedAttester({ clock: () => T0 });
    await expectCode(verifyEvidence(bundle, { ...options, trustedRoots: { simulated: [other.rootPem] } }), 'ROOT_UNTRUSTED', 'certificate-chain');
    // verifyNitroDocument never defaults to a root for simulated documents.
    expect(() => verifyNitroDocument(bundle.evidence, { platform: 'simulated' })).toThrow(CloisterError);
  });

  it('is never accepted as real Nitro', async () => {
    const bundle = await attest();
    const nitroPolicy = policyFromJson({ version: 1, platforms: { nitro: { pcrs: sim.policySection().pcrs } } });
    await expectCode(verifyEvidence({ ...bundle, platform: 'nitro' }, { ...options, policy: nitroPolicy }), 'ROOT_UNTRUSTED', 'certificate-chain');
    // And a policy without a simulated section rejects simulated evidence outright.
    await expectCode(verifyEvidence(bundle, { ...options, policy: nitroPolicy }), 'POLICY_MISMATCH', 'policy');
  });

  it('honours the policy root pin', async () => {
    const other = await createSimulatedAttester({ clock: () => T0, measurements: { codeDigest: new Uint8Array(32).fill(1), configDigest: new Uint8Array(32).fill(0x33), modelDigests: [modelDigest] } });
    const bundle = await other.attest({ keyConfig: kc, hpkePublicKey: new Uint8Array(32).fill(0x11), nonce });
    // Trusted by the caller, but the policy pins this run's root.
    await expectCode(verifyEvidence(bundle, { ...options, trustedRoots: { simulated: [other.rootPem] } }), 'ROOT_UNTRUSTED', 'certificate-chain');
  });

  describe('the policy root pin counts as explicit trust (no trustedRoots.simulated)', () => {
    const noRoots = (): VerifyEvidenceOptions => ({ policy, at: options.at ?? new Date(T0), nonce });

    it('accepts the presented root when its DER SHA-256 equals the pin', async () => {
      const result = await verifyEvidence(await attest(), noRoots());
      expect(result.simulated).toBe(true);
      expect(result.claims.details['rootSha256']).toBe(sim.rootSha256Hex);
      expect(result.report.steps.find((s) => s.step === 'certificate-chain')?.ok).toBe(true);
      // An empty root list means "none given": the pin still decides.
      expect((await verifyEvidence(await attest(), { ...noRoots(), trustedRoots: { simulated: [] } })).simulated).toBe(true);
      // The document-level API takes the pin as the trust too.
      expect(verifyNitroDocument((await attest()).evidence, { platform: 'simulated', rootSha256: Buffer.from(sim.rootSha256Hex, 'hex'), at: new Date(T0) }).ok).toBe(true);
    });

    it('rejects a document whose chain ends in another root (ROOT_UNTRUSTED)', async () => {
      const other = await createSimulatedAttester({
        clock: () => T0,
        measurements: { codeDigest: new Uint8Array(32).fill(1), configDigest: new Uint8Array(32).fill(0x33), modelDigests: [modelDigest] },
      });
      const forged = await other.attest({ keyConfig: kc, hpkePublicKey: new Uint8Array(32).fill(0x11), nonce });
      await expectCode(verifyEvidence(forged, noRoots()), 'ROOT_UNTRUSTED', 'certificate-chain');
      const report = verifyNitroDocument(forged.evidence, { platform: 'simulated', rootSha256: Buffer.from(sim.rootSha256Hex, 'hex'), at: new Date(T0) });
      expect(report.steps.find((s) => !s.ok)).toMatchObject({ step: 'certificate-chain', code: 'ROOT_UNTRUSTED' });
    });

    it('never replaces the AWS root for platform nitro', async () => {
      const bundle = await attest();
      const pin = Buffer.from(sim.rootSha256Hex, 'hex');
      // Relabelled as nitro, with a policy that also pins this simulated root: still the AWS root only.
      const both = policyFromJson({ version: 1, platforms: { nitro: { pcrs: sim.policySection().pcrs }, simulated: sim.policySection() } });
      await expectCode(verifyEvidence({ ...bundle, platform: 'nitro' }, { policy: both, at: new Date(T0 + 1000), nonce }), 'ROOT_UNTRUSTED', 'certificate-chain');
      const report = verifyNitroDocument(bundle.evidence, { platform: 'nitro', rootSha256: pin, at: new Date(T0) });
      expect(report.ok).toBe(false);
      expect(report.steps.find((s) => !s.ok)).toMatchObject({ step: 'certificate-chain', code: 'ROOT_UNTRUSTED' });
    });
  });

  it('rejects another key config (binding)', async () => {
    const bundle = await attest();
    const otherKc = keyConfig({ keyId: 8 });
    await expectCode(verifyEvidence({ ...bundle, keyConfig: otherKc }, options), 'BINDING_MISMATCH', 'binding');
    const otherHpke = keyConfig({ hpkePublicKey: new Uint8Array(32).fill(0x99) });
    await expectCode(verifyEvidence({ ...bundle, keyConfig: otherHpke }, options), 'BINDING_MISMATCH', 'binding');
  });

  it('rejects another nonce, a missing nonce, and an unexpected nonce', async () => {
    const bundle = await attest();
    await expectCode(verifyEvidence(bundle, { ...options, nonce: new Uint8Array(32).fill(0x43) }), 'BINDING_MISMATCH', 'binding');
    const { nonce: _omit, ...withoutNonce } = options;
    void _omit;
    await expectCode(verifyEvidence(bundle, withoutNonce), 'BINDING_MISMATCH', 'binding');
    const unNonced = await attest(null);
    expect((await verifyEvidence(unNonced, withoutNonce)).platform).toBe('simulated');
    await expectCode(verifyEvidence(unNonced, options), 'BINDING_MISMATCH', 'binding');
  });

  it('enforces nonceRequired', async () => {
    const strict = policyFromJson({ version: 1, platforms: { simulated: sim.policySection() }, nonceRequired: true });
    const unNonced = await attest(null);
    const { nonce: _omit, ...withoutNonce } = options;
    void _omit;
    await expectCode(verifyEvidence(unNonced, { ...withoutNonce, policy: strict }), 'INVALID_ARGUMENT', 'binding');
    expect((await verifyEvidence(await attest(), { ...options, policy: strict })).simulated).toBe(true);
  });

  it('rejects PCRs that differ from the policy', async () => {
    const wrong = policyFromJson({ version: 1, platforms: { simulated: { pcrs: { ...sim.policySection().pcrs, '0': 'ab'.repeat(48) } } } });
    await expectCode(verifyEvidence(await attest(), { ...options, policy: wrong }), 'POLICY_MISMATCH', 'policy');
  });

  it('fails closed on a Policy object built in code that names no PCR', async () => {
    const base = policyFromJson({ version: 1, platforms: { simulated: sim.policySection() } });
    const simulatedSection = base.platforms.simulated;
    if (simulatedSection === undefined) throw new Error('test setup: no simulated section');
    const empty = { ...base, platforms: { simulated: { ...simulatedSection, pcrs: new Map<number, Uint8Array>() } } };
    await expectCode(verifyEvidence(await attest(), { ...options, policy: empty }), 'POLICY_INVALID', 'policy');
  });

  it('rejects stale evidence and uses the policy maxAgeSeconds', async () => {
    const bundle = await attest();
    await expectCode(verifyEvidence(bundle, { ...options, at: new Date(T0 + 6 * 60 * 1000) }), 'EVIDENCE_STALE', 'freshness');
    const lenient = policyFromJson({ version: 1, platforms: { simulated: { ...sim.policySection(), maxAgeSeconds: 600 } } });
    expect((await verifyEvidence(bundle, { ...options, policy: lenient, at: new Date(T0 + 6 * 60 * 1000) })).simulated).toBe(true);
  });

  it('rejects an expired key config (KEY_STALE) and one for another platform', async () => {
    const expired = keyConfig({ expiresAt: Math.floor(T0 / 1000) - 1 });
    await expectCode(verifyEvidence(await attest(nonce, expired), options), 'KEY_STALE', 'key-config');
    const nitroKc = keyConfig({ platform: 'nitro' });
    await expectCode(verifyEvidence(await attest(nonce, nitroKc), options), 'BINDING_MISMATCH', 'key-config');
  });

  it('rejects a key config whose model digest differs from the policy, or lacks a policy model', async () => {
    const otherModel = keyConfig({ models: [{ name: 'demo', task: 'text-classification', digest: new Uint8Array(32).fill(9) }] });
    await expectCode(verifyEvidence(await attest(nonce, otherModel), options), 'POLICY_MISMATCH', 'key-config');
    const noModel = keyConfig({ models: [] });
    await expectCode(verifyEvidence(await attest(nonce, noModel), options), 'POLICY_MISMATCH', 'key-config');
  });

  it('rejects a malformed key config before anything else', async () => {
    const bundle = await attest();
    const err = await verifyEvidence({ ...bundle, keyConfig: new Uint8Array([0xa0, 0x00]) }, options).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EvidenceVerificationError);
    expect((err as EvidenceVerificationError).step).toBe('key-config');
  });

  it('rejects tampering with any part of the document', async () => {
    const bundle = await attest();
    const positions = [1, 5, 20, 100, 300, 600, 900, bundle.evidence.byteLength - 50, bundle.evidence.byteLength - 1];
    for (const p of positions) {
      const evidence = Uint8Array.from(bundle.evidence);
      evidence[p] = (evidence[p] ?? 0) ^ 0x01;
      const err = await verifyEvidence({ ...bundle, evidence }, options).catch((e: unknown) => e);
      expect(err, `byte ${p}`).toBeInstanceOf(EvidenceVerificationError);
    }
  });

  it('rejects unsupported or malformed bundles', async () => {
    const bundle = await attest();
    await expectCode(verifyEvidence({ ...bundle, platform: 'tdx' }, options), 'POLICY_MISMATCH', 'policy');
    await expectCode(verifyEvidence({ ...bundle, platform: 'bogus' as 'tdx' }, options), 'EVIDENCE_MALFORMED');
  });

  it('does not alias or mutate caller buffers', async () => {
    const bundle = await attest();
    const evidence = Uint8Array.from(bundle.evidence);
    const config = Uint8Array.from(bundle.keyConfig);
    const result = await verifyEvidence({ platform: 'simulated', evidence, keyConfig: config }, options);
    expect(evidence).toEqual(bundle.evidence);
    config.fill(0);
    expect(result.keyConfigBytes).toEqual(kc);
  });

  it('re-issues the leaf as it nears expiry and keeps verifying', async () => {
    let now = T0;
    const rotating = await createSimulatedAttester({ clock: () => now, leafValidityMs: 60 * 60 * 1000 });
    const first = parseNitroDocument(decodeCoseSign1((await rotating.attest({ keyConfig: kc, hpkePublicKey: new Uint8Array(32).fill(0x11) })).evidence).payload);
    now = T0 + 50 * 60 * 1000;
    const bundle = await rotating.attest({ keyConfig: kc, hpkePublicKey: new Uint8Array(32).fill(0x11) });
    const second = parseNitroDocument(decodeCoseSign1(bundle.evidence).payload);
    expect(second.certificate).not.toEqual(first.certificate);
    expect(verifyNitroDocument(bundle.evidence, { platform: 'simulated', trustedRoots: [rotating.rootDer], at: new Date(now) }).ok).toBe(true);
  });

  it('rejects a bad attestation request', async () => {
    await expect(sim.attest({ keyConfig: kc, hpkePublicKey: new Uint8Array(31) })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(sim.attest({ keyConfig: kc, hpkePublicKey: new Uint8Array(32), nonce: new Uint8Array(65) })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});
