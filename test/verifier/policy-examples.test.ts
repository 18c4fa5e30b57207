/**
 * The example policies in docs/policies parse, and each accepts the real vendored evidence it
 * was written for (so the documented format and the examples stay true), while a changed
 * measurement in it is refused naming the actual value.
 */
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parsePolicy } from '../../src/verifier/policy.js';
import { run } from '../../src/cli/commands/verify.js';
import { describeWithVectors, readVectorJson, REPO_ROOT, vectorPath } from '../helpers/vectors.js';

const example = (name: string): string => path.join(REPO_ROOT, 'docs', 'policies', `${name}.json`);
const work = mkdtempSync(path.join(tmpdir(), 'cloister-policy-ex-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await run(argv, { out: (t) => out.push(t), err: (t) => err.push(t) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('docs/policies examples', () => {
  it('each parses and has exactly its platform section', () => {
    for (const name of ['nitro', 'sev-snp', 'tdx'] as const) {
      const p = parsePolicy(readFileSync(example(name)));
      expect(Object.keys(p.platforms)).toEqual([name]);
    }
  });

  it('docs/POLICY.md links every example', () => {
    const doc = readFileSync(path.join(REPO_ROOT, 'docs', 'POLICY.md'), 'utf8');
    for (const name of ['nitro', 'sev-snp', 'tdx']) expect(doc).toContain(`(policies/${name}.json)`);
  });
});

describeWithVectors(['nitro', 'sev-snp', 'tdx'], 'docs/policies examples against the evidence they describe', () => {
  const tdxAt = (): string => new Date((readVectorJson<{ now_used: number }>('tdx/tdx_phala_v4.json').now_used - 3600) * 1000).toISOString();
  const cases = (): { name: string; argv: string[] }[] => [
    { name: 'nitro', argv: [vectorPath('nitro/nitro_base_nov2024.cbor'), '--platform', 'nitro', '--at', '2024-11-30T16:22:48Z'] },
    {
      name: 'sev-snp',
      argv: [vectorPath('sev-snp/snp_virtee_milan_report.bin'), '--platform', 'sev-snp', '--vcek', vectorPath('sev-snp/snp_virtee_milan_vcek.der'), '--at', '2024-06-01T00:00:00Z'],
    },
    { name: 'tdx', argv: [vectorPath('tdx/tdx_phala_v4_quote.bin'), '--platform', 'tdx', '--collateral', vectorPath('tdx/tdx_phala_v4_collateral.json'), '--at', tdxAt()] },
  ];

  it('each example accepts its evidence (exit 0)', async () => {
    for (const c of cases()) {
      // Raw vendor evidence binds no key config of ours: --inspect checks the policy and says so.
      const r = await cli([...c.argv, '--policy', example(c.name), '--inspect']);
      expect(r.code, `${c.name}: ${r.err}`).toBe(0);
      expect(r.out).toContain('NOT checked  binding');
      expect(r.out).not.toContain('NOT checked  policy');
    }
  });

  it('a changed first measurement is refused with POLICY_MISMATCH naming both values', async () => {
    for (const c of cases()) {
      const p = JSON.parse(readFileSync(example(c.name), 'utf8')) as { platforms: Record<string, Record<string, unknown>> };
      const s = p.platforms[c.name] ?? {};
      const key = c.name === 'nitro' ? 'pcrs' : c.name === 'sev-snp' ? 'measurements' : 'mrTd';
      let original = '';
      if (key === 'pcrs') {
        const pcrs = s['pcrs'] as Record<string, string>;
        original = pcrs['0'] ?? '';
        pcrs['0'] = 'ab'.repeat(48);
      } else {
        const list = s[key] as string[];
        original = list[0] ?? '';
        list[0] = 'ab'.repeat(48);
      }
      const changed = path.join(work, `${c.name}.json`);
      writeFileSync(changed, JSON.stringify(p));
      const r = await cli([...c.argv, '--policy', changed]);
      expect(r.code).toBe(1);
      expect(r.err).toContain('POLICY_MISMATCH');
      expect(r.err).toContain(original);
      expect(r.err).toContain('ab'.repeat(48));
    }
  });

  it('tdx: the example without RTMR0..2 is refused (POLICY_INVALID); with allowMrtdOnly_UNSAFE it verifies, warns, and the report says so', async () => {
    const tdxCase = cases().find((c) => c.name === 'tdx');
    if (tdxCase === undefined) throw new Error('no tdx case');
    const p = JSON.parse(readFileSync(example('tdx'), 'utf8')) as { platforms: { tdx: Record<string, unknown> } };
    p.platforms.tdx = Object.fromEntries(Object.entries(p.platforms.tdx).filter(([k]) => !['rtmr0', 'rtmr1', 'rtmr2'].includes(k)));
    const bare = path.join(work, 'tdx-mrtd-only.json');
    writeFileSync(bare, JSON.stringify(p));
    const refused = await cli([...tdxCase.argv, '--policy', bare]);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/POLICY_INVALID: policy '.*tdx-mrtd-only\.json': tdx policy: rtmr0, rtmr1, rtmr2 are missing/);

    p.platforms.tdx['allowMrtdOnly_UNSAFE'] = true;
    const unsafe = path.join(work, 'tdx-mrtd-only-unsafe.json');
    writeFileSync(unsafe, JSON.stringify(p));
    const r = await cli([...tdxCase.argv, '--policy', unsafe, '--json', '--inspect']);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toContain('cloister verify: tdx policy: WARNING allowMrtdOnly_UNSAFE: RTMR0, RTMR1, RTMR2 not checked');
    const report = JSON.parse(r.out) as { steps: { step: string; ok: boolean; detail?: string }[] };
    expect(report.steps.find((s) => s.step === 'policy')?.detail).toMatch(/^WARNING allowMrtdOnly_UNSAFE/);
  });
});
