import { describe, expect, it } from 'vitest';
import {
  decodeTcb,
  encodeCertTable,
  encodeTcb,
  KdsClient,
  kdsVcekUrl,
  parseCertTable,
  parseSevSnpPolicy,
  parseSnpReport,
  checkSevSnpPolicy,
  sevSnpPolicy,
  SNP_CERT_GUIDS,
  tcbAtLeast,
  type FetchLike,
  type SnpReport,
} from '../../../src/verifier/sev-snp/index.js';

const M = 'ab'.repeat(48);

describe('SEV-SNP policy parsing (fail closed)', () => {
  it('applies safe defaults', () => {
    const p = parseSevSnpPolicy({ measurements: [M] });
    expect(p).toMatchObject({ allowDebug: false, allowMigrateMa: false, allowSmt: true, vmpl: [0], allowVlek: true });
    expect(p.products).toEqual(['Milan', 'Genoa', 'Turin']);
  });
  it.each([
    [{}, /measurements is required/],
    [{ measurements: [] }, /1\.\.64/],
    [{ measurements: ['ab'] }, /48 bytes/],
    [{ measurements: [M], extra: 1 }, /unknown key/],
    [{ measurements: [M], allowDebug: 'yes' }, /boolean/],
    [{ measurements: [M], minTcb: { snp: 256 } }, /0\.\.255/],
    [{ measurements: [M], minTcb: { sn: 1 } }, /unknown minTcb key/],
    [{ measurements: [M], vmpl: [4] }, /0\.\.3/],
    [{ measurements: [M], products: ['Naples'] }, /unknown product/],
    [{ measurements: [M], hostData: 'zz' }, /hex/],
    [{ measurements: Array.from({ length: 65 }, () => M) }, /1\.\.64/],
    [[], /object/],
  ])('rejects %j', (section, msg) => {
    expect(() => parseSevSnpPolicy(section)).toThrow(msg);
    expect(() => parseSevSnpPolicy(section)).toThrow(expect.objectContaining({ code: 'POLICY_INVALID' }));
  });
});

function report(fields: Partial<SnpReport>): SnpReport {
  const raw = new Uint8Array(0x4a0);
  const dv = new DataView(raw.buffer);
  dv.setUint32(0, 2, true);
  dv.setBigUint64(8, 0x30000n, true);
  dv.setUint32(0x34, 1, true);
  raw.set(new Uint8Array(48).fill(0xab), 0x90);
  return { ...parseSnpReport(raw), ...fields };
}

describe('SEV-SNP policy evaluation', () => {
  const tcb = { bootloader: 3, tee: 0, snp: 8, microcode: 115 };
  const policy = sevSnpPolicy({ measurements: [new Uint8Array(48).fill(0xab)] });
  const code = (r: SnpReport, p = policy) => {
    try {
      checkSevSnpPolicy(r, tcb, p);
      return 'OK';
    } catch (e) {
      return (e as { code: string }).code;
    }
  };
  it('passes a matching report and fails each mismatch with its code', () => {
    expect(code(report({}))).toBe('OK');
    expect(code(report({ policy: 0xb0000n }))).toBe('DEBUG_MODE');
    expect(code(report({ policy: 0xb0000n }), { ...policy, allowDebug: true })).toBe('OK');
    expect(code(report({ policy: 0x70000n }))).toBe('POLICY_MISMATCH'); // MIGRATE_MA
    expect(code(report({}), { ...policy, allowSmt: false })).toBe('POLICY_MISMATCH');
    expect(code(report({}), { ...policy, requireSingleSocket: true })).toBe('POLICY_MISMATCH');
    expect(code(report({ measurement: new Uint8Array(48) }))).toBe('POLICY_MISMATCH');
    expect(code(report({ vmpl: 1 }))).toBe('POLICY_MISMATCH');
    expect(code(report({ vmpl: 1 }), { ...policy, vmpl: [0, 1] })).toBe('OK');
    expect(code(report({ signingKey: 'vlek' }), { ...policy, allowVlek: false })).toBe('POLICY_MISMATCH');
    expect(code(report({ guestSvn: 1 }), { ...policy, minGuestSvn: 2 })).toBe('POLICY_MISMATCH');
    expect(code(report({}), { ...policy, minTcb: { snp: 9 } })).toBe('TCB_MISMATCH');
    expect(code(report({}), { ...policy, minTcb: { snp: 8, microcode: 115 } })).toBe('OK');
    expect(code(report({}), { ...policy, hostData: new Uint8Array(32).fill(1) })).toBe('POLICY_MISMATCH');
    expect(code(report({}), { ...policy, idKeyDigests: [new Uint8Array(48).fill(1)] })).toBe('POLICY_MISMATCH');
    expect(code(report({}), { ...policy, authorKeyDigests: [new Uint8Array(48)] })).toBe('POLICY_MISMATCH');
    expect(code(report({}), { ...policy, measurements: [] })).toBe('POLICY_INVALID');
  });
});

describe('TCB layouts', () => {
  it('Milan/Genoa and Turin byte orders differ', () => {
    const raw = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(decodeTcb(raw, 'Milan')).toEqual({ bootloader: 1, tee: 2, snp: 7, microcode: 8 });
    expect(decodeTcb(raw, 'Turin')).toEqual({ fmc: 1, bootloader: 2, tee: 3, snp: 4, microcode: 8 });
    expect(encodeTcb({ bootloader: 1, tee: 2, snp: 7, microcode: 8 }, 'Genoa')).toEqual(new Uint8Array([1, 2, 0, 0, 0, 0, 7, 8]));
    expect(encodeTcb({ fmc: 1, bootloader: 2, tee: 3, snp: 4, microcode: 8 }, 'Turin')).toEqual(new Uint8Array([1, 2, 3, 4, 0, 0, 0, 8]));
    expect(() => encodeTcb({ bootloader: 1, tee: 2, snp: 7, microcode: 8 }, 'Turin')).toThrow();
    expect(tcbAtLeast({ bootloader: 3, tee: 0, snp: 8, microcode: 200 }, { snp: 9 })).toBe(false);
  });
});

describe('certificate table', () => {
  const vcek = new Uint8Array([0x30, 0x82, 1, 2, 3]);
  const ask = new Uint8Array([9, 9]);
  it('round-trips and tolerates zero page padding', () => {
    const t = encodeCertTable([{ guid: SNP_CERT_GUIDS.VCEK, data: vcek }, { guid: SNP_CERT_GUIDS.ASK, data: ask }]);
    const padded = new Uint8Array(4096);
    padded.set(t);
    const e = parseCertTable(padded);
    expect(e.map((x) => x.guid)).toEqual([SNP_CERT_GUIDS.VCEK, SNP_CERT_GUIDS.ASK]);
    expect(e[0]?.data).toEqual(vcek);
    padded[4000] = 1;
    expect(() => parseCertTable(padded)).toThrow(expect.objectContaining({ code: 'EVIDENCE_MALFORMED' }));
  });
  it('rejects bad offsets, overlaps, duplicates, missing terminator and limits', () => {
    const t = encodeCertTable([{ guid: SNP_CERT_GUIDS.VCEK, data: vcek }]);
    const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
    const intoHeader = t.slice();
    dv(intoHeader).setUint32(16, 8, true);
    expect(() => parseCertTable(intoHeader)).toThrow(/entry list/);
    const pastEnd = t.slice();
    dv(pastEnd).setUint32(20, 1000, true);
    expect(() => parseCertTable(pastEnd)).toThrow(/past the table/);
    expect(() => parseCertTable(t.subarray(0, 30))).toThrow(/terminating/);
    const dup = encodeCertTable([{ guid: SNP_CERT_GUIDS.VCEK, data: vcek }, { guid: SNP_CERT_GUIDS.VCEK, data: ask }]);
    expect(() => parseCertTable(dup)).toThrow(/duplicate/);
    const overlap = encodeCertTable([{ guid: SNP_CERT_GUIDS.VCEK, data: vcek }, { guid: SNP_CERT_GUIDS.ASK, data: ask }]);
    dv(overlap).setUint32(24 + 16, dv(overlap).getUint32(16, true), true);
    expect(() => parseCertTable(overlap)).toThrow(/overlap/);
    expect(() => parseCertTable(t, { maxTableBytes: 10 })).toThrow(expect.objectContaining({ code: 'LIMIT_EXCEEDED' }));
    expect(() => parseCertTable(t, { maxCertBytes: 4 })).toThrow(expect.objectContaining({ code: 'LIMIT_EXCEEDED' }));
    const many = encodeCertTable(Object.values(SNP_CERT_GUIDS).map((guid) => ({ guid, data: ask })));
    expect(() => parseCertTable(many, { maxEntries: 3 })).toThrow(expect.objectContaining({ code: 'LIMIT_EXCEEDED' }));
  });
});

describe('AMD KDS client (injected fetch, no network)', () => {
  const chipId = new Uint8Array(64).map((_, i) => i);
  it('builds the Milan/Genoa and Turin URLs', () => {
    expect(kdsVcekUrl({ product: 'Milan', chipId, reportedTcb: { bootloader: 3, tee: 0, snp: 8, microcode: 115 } })).toBe(
      `https://kdsintf.amd.com/vcek/v1/Milan/${Buffer.from(chipId).toString('hex')}?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115`,
    );
    expect(kdsVcekUrl({ product: 'Turin', chipId, reportedTcb: { fmc: 1, bootloader: 2, tee: 0, snp: 3, microcode: 9 } })).toBe(
      'https://kdsintf.amd.com/vcek/v1/Turin/0001020304050607?fmcSPL=1&blSPL=2&teeSPL=0&snpSPL=3&ucodeSPL=9',
    );
  });
  it('caches, cools down after a failure, and bounds the response size', async () => {
    let now = 0;
    let calls = 0;
    let fail = true;
    const fetch: FetchLike = () => {
      calls++;
      if (fail) return Promise.reject(new Error('down'));
      return Promise.resolve({ ok: true, status: 200, arrayBuffer: () => Promise.resolve(new Uint8Array([0x30, 1, 2]).buffer) });
    };
    const kds = new KdsClient({ fetch, now: () => now, cooldownMs: 1000 });
    const req = { product: 'Genoa' as const, chipId, reportedTcb: { bootloader: 1, tee: 0, snp: 1, microcode: 1 } };
    await expect(kds.fetchVcek(req)).rejects.toMatchObject({ code: 'CONNECTION_FAILED' });
    await expect(kds.fetchVcek(req)).rejects.toMatchObject({ code: 'RATE_LIMITED' });
    expect(calls).toBe(1);
    now = 2000;
    fail = false;
    expect(await kds.fetchVcek(req)).toEqual(new Uint8Array([0x30, 1, 2]));
    expect(await kds.fetchVcek(req)).toEqual(new Uint8Array([0x30, 1, 2]));
    expect(calls).toBe(2);
    const small = new KdsClient({ fetch, maxResponseBytes: 2 });
    await expect(small.fetchVcek(req)).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED' });
  });
});

describe('no aliasing of caller buffers', () => {
  it('parseSnpReport copies: overwriting the input (a pooled Buffer view) changes nothing', () => {
    const pool = Buffer.allocUnsafe(0x4a0 + 16);
    pool.fill(0);
    const raw = pool.subarray(8, 8 + 0x4a0);
    raw.writeUInt32LE(2, 0);
    raw.writeBigUInt64LE(0x30000n, 8);
    raw.writeUInt32LE(1, 0x34);
    raw.fill(0xab, 0x90, 0xc0);
    const r = parseSnpReport(raw);
    pool.fill(0xff);
    expect(r.measurement).toEqual(new Uint8Array(48).fill(0xab));
    expect(r.signedBytes[0x90]).toBe(0xab);
    expect(r.measurement.buffer).not.toBe(pool.buffer);
  });
});

describe('report versions 3 and 5', () => {
  function base(version: number): Uint8Array {
    const raw = new Uint8Array(0x4a0);
    const dv = new DataView(raw.buffer);
    dv.setUint32(0, version, true);
    dv.setBigUint64(8, 0x30000n, true);
    dv.setUint32(0x34, 1, true);
    return raw;
  }
  it('v3 reads CPUID family/model/stepping; v2 requires those bytes to be zero', () => {
    const v3 = base(3);
    v3.set([0x1a, 0x02, 0x01], 0x188);
    expect(parseSnpReport(v3).cpuid).toEqual({ family: 0x1a, model: 0x02, stepping: 0x01 });
    const v2 = base(2);
    v2.set([0x19], 0x188);
    expect(() => parseSnpReport(v2)).toThrow(expect.objectContaining({ code: 'EVIDENCE_MALFORMED' }));
  });
  it('v5 reads the mitigation vectors and checks the reserved range after them', () => {
    const v5 = base(5);
    new DataView(v5.buffer).setBigUint64(0x1f8, 5n, true);
    new DataView(v5.buffer).setBigUint64(0x200, 7n, true);
    const r = parseSnpReport(v5);
    expect([r.launchMitVector, r.currentMitVector]).toEqual([5n, 7n]);
    const v3 = base(3);
    new DataView(v3.buffer).setBigUint64(0x1f8, 5n, true);
    expect(() => parseSnpReport(v3)).toThrow(expect.objectContaining({ code: 'EVIDENCE_MALFORMED' }));
    v5[0x208] = 1;
    expect(() => parseSnpReport(v5)).toThrow(expect.objectContaining({ code: 'EVIDENCE_MALFORMED' }));
    expect(() => parseSnpReport(base(4))).toThrow(expect.objectContaining({ code: 'EVIDENCE_MALFORMED' }));
    expect(() => parseSnpReport(base(1))).toThrow(expect.objectContaining({ code: 'EVIDENCE_MALFORMED' }));
  });
});
