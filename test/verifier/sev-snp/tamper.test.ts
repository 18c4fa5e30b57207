/**
 * Tampering with each field class of a real SEV-SNP report is rejected, at the stage that
 * should catch it. Uses the virtee Milan vector (test/vectors);
 * the TCB / chip_id comparison is also exercised directly on parsed values.
 */
import { describe, expect, it } from 'vitest';
import {
  checkSnpTcbAndChipId,
  parseAmdEndorsementKey,
  parseSnpReport,
  sevSnpPolicy,
  verifySevSnpEvidence,
  type SnpReport,
} from '../../../src/verifier/sev-snp/index.js';
import type { VerificationReport } from '../../../src/core/types.js';
import { describeWithVectors, readVector } from '../../helpers/vectors.js';

const read = (f: string): Uint8Array => readVector(`sev-snp/${f}`);
const AT = new Date('2024-06-01T00:00:00Z');

function firstFailure(r: VerificationReport): { step: string; code?: string } | undefined {
  return r.steps.find((s) => !s.ok);
}

async function verifyBytes(report: Uint8Array): Promise<VerificationReport> {
  const original = parseSnpReport(read('snp_virtee_milan_report.bin'));
  return verifySevSnpEvidence(
    { platform: 'sev-snp', evidence: report, keyConfig: new Uint8Array([1]) },
    {
      policy: sevSnpPolicy({ measurements: [original.measurement] }),
      vcek: read('snp_virtee_milan_vcek.der'),
      at: AT,
      expectedReportData: original.reportData,
    },
  );
}

function flip(b: Uint8Array, offset: number, mask = 0x01): Uint8Array {
  const c = b.slice();
  c[offset] = (c[offset] ?? 0) ^ mask;
  return c;
}

describeWithVectors('sev-snp', 'SEV-SNP tampering (virtee Milan report)', () => {
  it('the untouched report verifies', async () => {
    const r = await verifyBytes(read('snp_virtee_milan_report.bin'));
    expect(r.ok).toBe(true);
  });

  const signedFields: [string, number][] = [
    ['measurement', 0x90],
    ['report_data', 0x50],
    ['policy (SMT bit 16)', 0x0a],
    ['reported_tcb', 0x187],
    ['chip_id', 0x1a0],
    ['host_data', 0xc0],
    ['vmpl', 0x30],
    ['guest_svn', 0x04],
    ['current_tcb', 0x38],
  ];
  for (const [name, offset] of signedFields) {
    it(`tampered ${name} fails the signature`, async () => {
      const r = await verifyBytes(flip(read('snp_virtee_milan_report.bin'), offset));
      expect(firstFailure(r)).toMatchObject({ step: 'signature', code: 'EVIDENCE_SIGNATURE_INVALID' });
      expect(r.ok).toBe(false);
      expect(r.claims).toBeUndefined();
    });
  }

  it('tampered signature R and S fail the signature', async () => {
    for (const off of [0x2a0, 0x2a0 + 47, 0x2e8, 0x2e8 + 20]) {
      const r = await verifyBytes(flip(read('snp_virtee_milan_report.bin'), off));
      expect(firstFailure(r)).toMatchObject({ step: 'signature', code: 'EVIDENCE_SIGNATURE_INVALID' });
    }
  });

  const reservedFields: [string, number][] = [
    ['0x4C reserved', 0x4c],
    ['0x188..0x19F reserved (v2)', 0x190],
    ['0x1EB reserved', 0x1eb],
    ['0x1EF reserved', 0x1ef],
    ['0x1F8..0x29F reserved', 0x250],
    ['R high bytes (must be zero)', 0x2a0 + 60],
    ['S high bytes (must be zero)', 0x2e8 + 70],
    ['signature reserved tail', 0x400],
    ['key info reserved bits', 0x48 + 1],
    ['policy reserved high bits', 0x08 + 5],
  ];
  for (const [name, offset] of reservedFields) {
    it(`non-zero ${name} is rejected at decode`, async () => {
      const r = await verifyBytes(flip(read('snp_virtee_milan_report.bin'), offset));
      expect(firstFailure(r)).toMatchObject({ step: 'decode', code: 'EVIDENCE_MALFORMED' });
    });
  }

  it('rejects policy bit 17 cleared, signature algorithm, signing key and version changes at decode', async () => {
    const base = read('snp_virtee_milan_report.bin');
    for (const [off, mask] of [
      [0x0a, 0x02], // policy bit 17
      [0x34, 0x02], // signature algo 1 -> 3
      [0x48, 0x08], // signing key 2 (reserved)
      [0x00, 0x06], // version 2 -> 4
    ] as const) {
      const r = await verifyBytes(flip(base, off, mask));
      expect(firstFailure(r)).toMatchObject({ step: 'decode', code: 'EVIDENCE_MALFORMED' });
    }
  });

  it('rejects wrong lengths (short, long)', async () => {
    const base = read('snp_virtee_milan_report.bin');
    expect(firstFailure(await verifyBytes(base.subarray(0, 0x49f)))).toMatchObject({ step: 'decode', code: 'EVIDENCE_MALFORMED' });
    const long = new Uint8Array(0x4a1);
    long.set(base);
    expect(firstFailure(await verifyBytes(long))).toMatchObject({ step: 'decode', code: 'EVIDENCE_MALFORMED' });
  });

  it('flags the VLEK signing key against a VCEK', async () => {
    const r = await verifyBytes(flip(read('snp_virtee_milan_report.bin'), 0x48, 0x04));
    expect(firstFailure(r)).toMatchObject({ step: 'endorsement-key', code: 'CERT_CHAIN_INVALID' });
  });

  describe('reported_tcb and chip_id against the VCEK', () => {
    const report = (): SnpReport => parseSnpReport(read('snp_virtee_milan_report.bin'));
    const ek = () => parseAmdEndorsementKey(read('snp_virtee_milan_vcek.der'));

    it('accepts the real pair and decodes the Milan layout', () => {
      expect(checkSnpTcbAndChipId(report(), ek(), 'Milan')).toEqual({ bootloader: 3, tee: 0, snp: 8, microcode: 115 });
    });

    it('rejects any reported_tcb byte change, reserved bytes included', () => {
      for (let i = 0; i < 8; i++) {
        const t = report().reportedTcb.slice();
        t[i] = (t[i] ?? 0) ^ 1;
        expect(() => checkSnpTcbAndChipId({ ...report(), reportedTcb: t }, ek(), 'Milan')).toThrow(expect.objectContaining({ code: 'TCB_MISMATCH' }));
      }
    });

    it('rejects the Turin layout for a Milan VCEK', () => {
      expect(() => checkSnpTcbAndChipId(report(), ek(), 'Turin')).toThrow(expect.objectContaining({ code: 'TCB_MISMATCH' }));
    });

    it('rejects another chip_id, accepts a masked (all-zero) one only with MASK_CHIP_KEY', () => {
      const chip = report().chipId.slice();
      chip[63] = (chip[63] ?? 0) ^ 1;
      expect(() => checkSnpTcbAndChipId({ ...report(), chipId: chip }, ek(), 'Milan')).toThrow(expect.objectContaining({ code: 'TCB_MISMATCH' }));
      const zero = new Uint8Array(64);
      expect(() => checkSnpTcbAndChipId({ ...report(), chipId: zero }, ek(), 'Milan')).toThrow(expect.objectContaining({ code: 'TCB_MISMATCH' }));
      expect(checkSnpTcbAndChipId({ ...report(), chipId: zero, maskChipKey: true }, ek(), 'Milan').snp).toBe(8);
      expect(() => checkSnpTcbAndChipId({ ...report(), maskChipKey: true }, ek(), 'Milan')).toThrow(expect.objectContaining({ code: 'EVIDENCE_MALFORMED' }));
    });
  });
});
