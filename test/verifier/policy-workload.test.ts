/**
 * Policies must identify the workload, not only the platform (issue 17 item 7):
 * Nitro/simulated PCR0, or PCR8, or PCR1+PCR2; SEV-SNP a launch measurement; TDX RTMR0..2
 * besides MRTD unless the loudly named allowMrtdOnly_UNSAFE is set. Each refusal is
 * POLICY_INVALID naming what is missing; each accepted form parses.
 */
import { describe, expect, it } from 'vitest';
import { nitroPcrsProblem, policyFromJson, policyWarnings } from '../../src/verifier/policy.js';
import { verifyEvidence } from '../../src/verifier/verify.js';
import { checkTdxPolicy, parseTdxPolicy, tdxPolicy } from '../../src/verifier/tdx/policy.js';
import type { TdReport } from '../../src/verifier/tdx/quote.js';
import { CloisterError } from '../../src/errors.js';

const PCR = 'ab'.repeat(48);
const M = 'cd'.repeat(48);

function refusal(fn: () => unknown): CloisterError {
  try {
    fn();
  } catch (err) {
    if (err instanceof CloisterError) return err;
    throw err;
  }
  throw new Error('expected a refusal');
}

describe('nitro and simulated: PCR0, or PCR8, or PCR1+PCR2', () => {
  const refused: [string, Record<string, string>][] = [
    ['only PCR3 (parent IAM role)', { '3': PCR }],
    ['only PCR4 (parent instance id)', { '4': PCR }],
    ['PCR3 and PCR4', { '3': PCR, '4': PCR }],
    ['only PCR1', { '1': PCR }],
    ['only PCR2', { '2': PCR }],
    ['PCR1, PCR3, PCR4', { '1': PCR, '3': PCR, '4': PCR }],
  ];
  for (const platform of ['nitro', 'simulated'] as const) {
    for (const [name, pcrs] of refused) {
      it(`${platform}: refuses ${name}, naming what it has and what it needs`, () => {
        const e = refusal(() => policyFromJson({ version: 1, platforms: { [platform]: { pcrs } } }));
        expect(e.code).toBe('POLICY_INVALID');
        expect(e.message).toContain(`platforms.${platform}.pcrs names ${Object.keys(pcrs).map((k) => `PCR${k}`).join(', ')}`);
        expect(e.message).toMatch(/does not identify the enclave image: pin PCR0 \(image\), or PCR8 \(signing certificate\), or both PCR1/);
      });
    }
    const accepted: [string, Record<string, string>][] = [
      ['PCR0', { '0': PCR }],
      ['PCR8', { '8': PCR }],
      ['PCR1 and PCR2', { '1': PCR, '2': PCR }],
      ['PCR0 with PCR3 and PCR4', { '0': PCR, '3': PCR, '4': PCR }],
    ];
    for (const [name, pcrs] of accepted) {
      it(`${platform}: accepts ${name}`, () => {
        const p = policyFromJson({ version: 1, platforms: { [platform]: { pcrs } } });
        expect(p.platforms[platform]?.pcrs.size).toBe(Object.keys(pcrs).length);
      });
    }
  }

  it('a policy built in code with only PCR3/PCR4 is refused by verifyEvidence before any evidence is read', async () => {
    const pcrs = new Map([[3, new Uint8Array(48).fill(1)], [4, new Uint8Array(48).fill(2)]]);
    expect(nitroPcrsProblem(pcrs)).toMatch(/names PCR3, PCR4/);
    const err = await verifyEvidence(
      { platform: 'nitro', evidence: new Uint8Array([0]), keyConfig: new Uint8Array([0]) },
      { policy: { version: 1, platforms: { nitro: { pcrs } }, nonceRequired: false } },
    ).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'POLICY_INVALID', step: 'policy' });
  });
});

describe('sev-snp: a launch measurement is required', () => {
  it('refuses a section without measurements, saying why', () => {
    const e = refusal(() => policyFromJson({ version: 1, platforms: { 'sev-snp': { allowSmt: true } } }));
    expect(e.code).toBe('POLICY_INVALID');
    expect(e.message).toMatch(/measurements is required: the launch measurement is what identifies the guest/);
  });
  it('refuses an empty measurement list', () => {
    expect(refusal(() => policyFromJson({ version: 1, platforms: { 'sev-snp': { measurements: [] } } })).code).toBe('POLICY_INVALID');
  });
  it('accepts one measurement', () => {
    expect(policyFromJson({ version: 1, platforms: { 'sev-snp': { measurements: [M] } } }).platforms['sev-snp']?.measurements).toHaveLength(1);
  });
});

describe('tdx: RTMR0, RTMR1 and RTMR2 besides MRTD', () => {
  const all = { mrTd: [M], rtmr0: [M], rtmr1: [M], rtmr2: [M] };
  const refused: [string, Record<string, unknown>, string][] = [
    ['MRTD only', { mrTd: [M] }, 'rtmr0, rtmr1, rtmr2 are missing'],
    ['MRTD and RTMR0', { mrTd: [M], rtmr0: [M] }, 'rtmr1, rtmr2 are missing'],
    ['without RTMR2 (kernel command line)', { mrTd: [M], rtmr0: [M], rtmr1: [M] }, 'rtmr2 is missing'],
    ['without RTMR1 (kernel, initrd)', { mrTd: [M], rtmr0: [M], rtmr2: [M] }, 'rtmr1 is missing'],
    ['MRTD and RTMR3 only', { mrTd: [M], rtmr3: [M] }, 'rtmr0, rtmr1, rtmr2 are missing'],
    ['the unsafe switch set to false', { mrTd: [M], allowMrtdOnly_UNSAFE: false }, 'rtmr0, rtmr1, rtmr2 are missing'],
  ];
  for (const [name, section, missing] of refused) {
    it(`refuses ${name}`, () => {
      const e = refusal(() => policyFromJson({ version: 1, platforms: { tdx: section } }));
      expect(e.code).toBe('POLICY_INVALID');
      expect(e.message).toContain(missing);
      expect(e.message).toMatch(/MRTD measures only the TD firmware.*any workload booted on that firmware would be accepted.*"allowMrtdOnly_UNSAFE": true/);
    });
  }

  it('refuses a non-boolean unsafe switch', () => {
    expect(refusal(() => parseTdxPolicy({ mrTd: [M], allowMrtdOnly_UNSAFE: 'yes' })).message).toMatch(/allowMrtdOnly_UNSAFE must be a boolean/);
  });

  it('accepts MRTD with RTMR0..2, and then warns about nothing', () => {
    const p = policyFromJson({ version: 1, platforms: { tdx: all } });
    expect(p.platforms.tdx?.rtmr2).toHaveLength(1);
    expect(p.platforms.tdx?.allowMrtdOnlyUnsafe).toBeUndefined();
    expect(policyWarnings(p)).toEqual([]);
  });

  it('accepts MRTD only with "allowMrtdOnly_UNSAFE": true, and warns loudly', () => {
    const p = policyFromJson({ version: 1, platforms: { tdx: { mrTd: [M], allowMrtdOnly_UNSAFE: true } } });
    expect(p.platforms.tdx?.allowMrtdOnlyUnsafe).toBe(true);
    expect(policyWarnings(p)).toEqual(['tdx policy: WARNING allowMrtdOnly_UNSAFE: RTMR0, RTMR1, RTMR2 not checked, any workload on this firmware is accepted']);
  });

  it('checkTdxPolicy holds a policy built in code to the same rule, and returns the unsafe note', () => {
    const z = new Uint8Array(48);
    const report = { mrTd: z, rtmrs: [z, z, z, z], mrConfigId: z, mrOwner: z, mrOwnerConfig: z, mrSeam: z, tdAttributes: new Uint8Array(8) } as unknown as TdReport;
    expect(refusal(() => checkTdxPolicy(report, tdxPolicy({ mrTd: [z] }))).code).toBe('POLICY_INVALID');
    expect(checkTdxPolicy(report, tdxPolicy({ mrTd: [z], rtmr0: [z], rtmr1: [z], rtmr2: [z] }))).toBeUndefined();
    expect(checkTdxPolicy(report, tdxPolicy({ mrTd: [z], rtmr0: [z], allowMrtdOnlyUnsafe: true }))).toMatch(/^WARNING allowMrtdOnly_UNSAFE: RTMR1, RTMR2 not checked/);
  });
});
