/**
 * verifyEvidence (the client path) always checks the key-config binding for SEV-SNP, even when
 * an untyped caller smuggles the CLI's inspection-only switches into the platform options.
 * Uses the real Milan report from test/vectors.
 */
import { expect, it } from 'vitest';
import { encodeKeyConfig } from '../../src/protocol/key-config.js';
import { policyFromJson } from '../../src/verifier/policy.js';
import { EvidenceVerificationError, verifyEvidence } from '../../src/verifier/verify.js';
import type { VerifyEvidenceOptions } from '../../src/verifier/verify.js';
import { describeWithVectors, readVector, readVectorJson } from '../helpers/vectors.js';

const AT = new Date('2024-06-01T00:00:00Z');

describeWithVectors(['sev-snp'], 'verifyEvidence binding on SEV-SNP evidence', () => {
  it('rejects a report that does not bind the key config, whatever extra options are passed', async () => {
    const side = readVectorJson<{ expected_measurement: string }>('sev-snp/snp_virtee_milan.json');
    const measurement = side.expected_measurement.slice(0, 96);
    const keyConfig = encodeKeyConfig({
      version: 1,
      keyId: 1,
      kemId: 0x20,
      kdfId: 1,
      aeadIds: [1],
      hpkePublicKey: new Uint8Array(32).fill(1),
      receiptPublicKey: new Uint8Array(32).fill(2),
      models: [],
      configDigest: new Uint8Array(32).fill(3),
      platform: 'sev-snp',
      notBefore: Math.floor(AT.getTime() / 1000) - 60,
      expiresAt: Math.floor(AT.getTime() / 1000) + 3600,
    });
    const bundle = {
      platform: 'sev-snp' as const,
      evidence: readVector('sev-snp/snp_virtee_milan_report.bin'),
      keyConfig,
      certificates: readVector('sev-snp/snp_virtee_milan_vcek.der'),
    };
    const policy = policyFromJson({ version: 1, platforms: { 'sev-snp': { measurements: [measurement] } } });
    const smuggled = { skipBinding: true, expectedReportData: new Uint8Array(64) };
    for (const sevSnp of [undefined, smuggled]) {
      const options = { policy, at: AT, ...(sevSnp === undefined ? {} : { sevSnp }) } as VerifyEvidenceOptions;
      const err = await verifyEvidence(bundle, options).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(EvidenceVerificationError);
      expect((err as EvidenceVerificationError).code).toBe('BINDING_MISMATCH');
      expect((err as EvidenceVerificationError).step).toBe('binding');
    }
  });
});
