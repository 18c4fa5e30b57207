/**
 * Real SEV-SNP evidence from test/vectors/sev-snp (see its README and sidecars).
 * Vendored into the project: a fresh clone runs them.
 */
import { describe, expect, it } from 'vitest';
import {
  AMD_PRODUCT_ROOTS,
  encodeCertTable,
  parseAmdEndorsementKey,
  parseSnpReport,
  SNP_CERT_GUIDS,
  sevSnpPolicy,
  verifyAmdChain,
  verifySevSnpEvidence,
  type SevSnpPolicy,
  type SnpReport,
} from '../../../src/verifier/sev-snp/index.js';
import type { EvidenceBundle, VerificationReport } from '../../../src/core/types.js';
import { hex } from '../../helpers/bytes.js';
import { describeWithVectors, readVector, readVectorJson } from '../../helpers/vectors.js';

const read = (f: string): Uint8Array => readVector(`sev-snp/${f}`);
const sidecar = (f: string): Record<string, unknown> => readVectorJson<Record<string, unknown>>(`sev-snp/${f}`);

interface Vec {
  name: string;
  report: string;
  vcek: string;
  json: string;
  at: Date;
  product: 'Milan' | 'Genoa';
}
const VECS: Vec[] = [
  { name: 'virtee milan v2', report: 'snp_virtee_milan_report.bin', vcek: 'snp_virtee_milan_vcek.der', json: 'snp_virtee_milan.json', at: new Date('2024-06-01T00:00:00Z'), product: 'Milan' },
  { name: 'tinfoil genoa v3', report: 'snp_tinfoil_genoa_report.bin', vcek: 'snp_tinfoil_genoa_vcek.der', json: 'snp_tinfoil_genoa.json', at: new Date('2026-02-01T00:00:00Z'), product: 'Genoa' },
  { name: 'go-sev-guest milan v2 (debug)', report: 'snp_gosevguest_milan_report.bin', vcek: 'snp_gosevguest_milan_vcek.der', json: 'snp_gosevguest_milan.json', at: new Date('2024-06-01T00:00:00Z'), product: 'Milan' },
];

function measurementOf(json: string): Uint8Array {
  const m = String(sidecar(json)['expected_measurement']).slice(0, 96);
  return hex(m);
}

function bundle(report: Uint8Array, certificates?: Uint8Array): EvidenceBundle {
  return { platform: 'sev-snp', evidence: report, keyConfig: new Uint8Array([0xa1, 0x01, 0x01]), ...(certificates ? { certificates } : {}) };
}

/** Parse `v`'s report and verify it against the default policy for its sidecar measurement. */
async function verifyWithDefaultPolicy(v: Vec): Promise<{ r: SnpReport; res: VerificationReport }> {
  const r = parseSnpReport(read(v.report));
  const res = await verifySevSnpEvidence(bundle(read(v.report)), {
    policy: sevSnpPolicy({ measurements: [measurementOf(v.json)] }),
    vcek: read(v.vcek),
    at: v.at,
    expectedReportData: r.reportData,
  });
  return { r, res };
}

function step(r: VerificationReport, name: string): { ok: boolean; code?: string } | undefined {
  return r.steps.find((s) => s.step === name);
}

function failing(r: VerificationReport): string | undefined {
  return r.steps.find((s) => !s.ok)?.code;
}

describeWithVectors('sev-snp', 'SEV-SNP real vectors', () => {
  for (const v of VECS) {
    describe(v.name, () => {
      const report = () => read(v.report);
      const vcek = () => read(v.vcek);
      const meta = () => sidecar(v.json);
      const policy = (extra: Partial<SevSnpPolicy> = {}): SevSnpPolicy => sevSnpPolicy({ measurements: [measurementOf(v.json)], ...extra });

      it('parses with the sidecar version and TCB', () => {
        const r = parseSnpReport(report());
        expect(r.version).toBe(meta()['report_version']);
        expect(r.signingKey).toBe('vcek');
      });

      it('verifies chain, signature, TCB and chip_id with the VCEK given by the caller', async () => {
        const res = await verifySevSnpEvidence(bundle(report()), {
          policy: policy({ allowDebug: true }),
          vcek: vcek(),
          at: v.at,
          expectedReportData: parseSnpReport(report()).reportData,
        });
        expect(res.steps.map((s) => [s.step, s.ok])).toEqual([
          ['decode', true],
          ['endorsement-key', true],
          ['chain', true],
          ['signature', true],
          ['tcb', true],
          ['policy', true],
          ['binding', true],
        ]);
        expect(res.ok).toBe(true);
        expect(res.claims?.details['product']).toBe(v.product);
        expect(res.claims?.details['reportedTcb']).toEqual({
          bootloader: (meta()['reported_tcb'] as Record<string, number>)['blSPL'],
          tee: (meta()['reported_tcb'] as Record<string, number>)['teeSPL'],
          snp: (meta()['reported_tcb'] as Record<string, number>)['snpSPL'],
          microcode: (meta()['reported_tcb'] as Record<string, number>)['ucodeSPL'],
        });
      });

      it('verifies with the VCEK inside a certificate table (auxblob)', async () => {
        const ark = AMD_PRODUCT_ROOTS.find((p) => p.product === v.product);
        if (!ark) throw new Error('no roots');
        const der = (pem: string) => new Uint8Array(Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64'));
        const table = encodeCertTable([
          { guid: SNP_CERT_GUIDS.ARK, data: der(ark.arkPem) },
          { guid: SNP_CERT_GUIDS.ASK, data: der(ark.askPem) },
          { guid: SNP_CERT_GUIDS.VCEK, data: vcek() },
        ]);
        const padded = new Uint8Array(table.byteLength + 4096);
        padded.set(table);
        const res = await verifySevSnpEvidence(bundle(report(), padded), {
          policy: policy({ allowDebug: true }),
          at: v.at,
          skipBinding: true,
        });
        expect(failing(res)).toBeUndefined();
        expect(res.ok).toBe(true);
      });

      it('fails the binding step with the default key-config binding (foreign report_data)', async () => {
        const res = await verifySevSnpEvidence(bundle(report()), { policy: policy({ allowDebug: true }), vcek: vcek(), at: v.at });
        expect(res.ok).toBe(false);
        expect(step(res, 'binding')).toMatchObject({ ok: false, code: 'BINDING_MISMATCH' });
        expect(res.claims).toBeDefined();
      });

      it('rejects a chain verified with the wrong product roots', async () => {
        const other = v.product === 'Milan' ? 'Genoa' : 'Milan';
        const res = await verifySevSnpEvidence(bundle(report()), {
          policy: policy({ allowDebug: true, products: [other, 'Turin'] }),
          vcek: vcek(),
          at: v.at,
          skipBinding: true,
        });
        expect(step(res, 'chain')).toMatchObject({ ok: false, code: 'ROOT_UNTRUSTED' });
        expect(res.claims).toBeUndefined();
      });

      it('rejects outside the VCEK validity window', async () => {
        const res = await verifySevSnpEvidence(bundle(report()), {
          policy: policy({ allowDebug: true }),
          vcek: vcek(),
          at: new Date('2040-01-01T00:00:00Z'),
          skipBinding: true,
        });
        expect(step(res, 'chain')).toMatchObject({ ok: false, code: 'CERT_EXPIRED' });
      });

      it('rejects another VCEK (signature fails or chip/TCB differ)', async () => {
        const otherVcek = VECS.find((o) => o.vcek !== v.vcek && o.product === v.product);
        if (!otherVcek) return;
        const res = await verifySevSnpEvidence(bundle(report()), {
          policy: policy({ allowDebug: true }),
          vcek: read(otherVcek.vcek),
          at: v.at,
          skipBinding: true,
        });
        expect(res.ok).toBe(false);
        expect(step(res, 'signature')).toMatchObject({ ok: false, code: 'EVIDENCE_SIGNATURE_INVALID' });
      });
    });
  }

  it('the debug-policy report verifies cryptographically but fails the default policy with DEBUG_MODE', async () => {
    const v = VECS[2];
    if (!v) throw new Error('missing vector');
    const { r, res } = await verifyWithDefaultPolicy(v);
    expect(r.policy).toBe(0xb0000n);
    expect(step(res, 'signature')?.ok).toBe(true);
    expect(step(res, 'tcb')?.ok).toBe(true);
    expect(step(res, 'policy')).toMatchObject({ ok: false, code: 'DEBUG_MODE' });
    expect(res.ok).toBe(false);
    expect(res.claims?.details['policy']).toMatchObject({ debug: true });
  });

  it('production-policy reports pass the default (no-debug) policy', async () => {
    for (const v of VECS.slice(0, 2)) {
      const { r, res } = await verifyWithDefaultPolicy(v);
      expect(r.policy).toBe(0x30000n);
      expect(res.ok).toBe(true);
    }
  });

  it('rejects a report whose measurement is not in the policy', async () => {
    const v = VECS[0];
    if (!v) throw new Error('missing vector');
    const res = await verifySevSnpEvidence(bundle(read(v.report)), {
      policy: sevSnpPolicy({ measurements: [new Uint8Array(48)] }),
      vcek: read(v.vcek),
      at: v.at,
      skipBinding: true,
    });
    expect(step(res, 'policy')).toMatchObject({ ok: false, code: 'POLICY_MISMATCH' });
  });

  it('Turin VCEK: Turin TCB layout (fmc) and 8-byte hwID, chain verifies with the Turin roots only', () => {
    const ek = parseAmdEndorsementKey(read('snpchain_virtee_turin_vcek.der'));
    expect(ek.product).toBe('Turin');
    expect(ek.tcb.fmc).toBe(0);
    expect(ek.tcb.microcode).toBe(9);
    expect(ek.hwId?.byteLength).toBe(8);
    const at = new Date('2025-06-01T00:00:00Z');
    expect(verifyAmdChain(ek, { at }).product).toBe('Turin');
    expect(() => verifyAmdChain(ek, { at, products: ['Milan', 'Genoa'] })).toThrow(expect.objectContaining({ code: 'ROOT_UNTRUSTED' }));
    const milanOnly = AMD_PRODUCT_ROOTS.filter((p) => p.product !== 'Turin');
    expect(() => verifyAmdChain(ek, { at, roots: milanOnly })).toThrow(expect.objectContaining({ code: 'ROOT_UNTRUSTED' }));
  });

  it('rejects a certificate table whose ARK is not the pinned one', async () => {
    const v = VECS[0];
    if (!v) throw new Error('missing vector');
    const genoa = AMD_PRODUCT_ROOTS.find((p) => p.product === 'Genoa');
    if (!genoa) throw new Error('no roots');
    const der = (pem: string) => new Uint8Array(Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64'));
    const table = encodeCertTable([
      { guid: SNP_CERT_GUIDS.ARK, data: der(genoa.arkPem) },
      { guid: SNP_CERT_GUIDS.VCEK, data: read(v.vcek) },
    ]);
    const res = await verifySevSnpEvidence(bundle(read(v.report), table), {
      policy: sevSnpPolicy({ measurements: [measurementOf(v.json)] }),
      at: v.at,
      skipBinding: true,
    });
    expect(step(res, 'chain')).toMatchObject({ ok: false, code: 'ROOT_UNTRUSTED' });
  });
});
