/**
 * The CI share of the fuzz campaigns (fuzz/targets.ts): every target, a fixed seed, a small
 * number of runs. `npm run fuzz` runs the full campaign (>= 1 000 000 runs per decoder target).
 * A crash, an accepted mutant or a differential mismatch fails here with the reproduction
 * line; a target whose vectors are missing fails under CI=true.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { runTarget } from '../../fuzz/run-target.js';
import { FuzzFailure, TARGETS } from '../../fuzz/targets.js';
import { applyMutation, mutatedInputs } from '../../fuzz/mutate.js';

const SEED = 20_261_207;
const SCALE = 0.002;

describe('fuzz targets, short seeded run', () => {
  for (const t of TARGETS) {
    it(`${t.name} (${t.kind})`, async () => {
      const r = await runTarget(t, { seed: SEED, scale: SCALE, requireVectors: process.env['CI'] === 'true' });
      if (r.outcome === 'unavailable') {
        console.warn(`[fuzz] ${t.name}: ${r.detail ?? 'unavailable'}`);
        return;
      }
      expect(r.detail ?? '', r.name).toBe('');
      expect(r.outcome).toBe('passed');
      expect(r.runs).toBeGreaterThanOrEqual(Math.min(t.fullRuns, Math.round(t.fullRuns * SCALE)));
    });
  }
});

describe('the harness can fail', () => {
  it('a decoder that crashes on some input is reported with a reproduction line', async () => {
    const crashing = {
      name: 'crashing',
      kind: 'decoder' as const,
      describe: 'test',
      fullRuns: 1000,
      vectors: [],
      property: () =>
        fc.property(mutatedInputs([new Uint8Array([1, 2, 3, 4])]), (m) => {
          if (m.bytes.byteLength !== 4) throw new FuzzFailure(`length ${m.bytes.byteLength}`);
        }) as unknown as fc.IProperty<[unknown]>,
    };
    const r = await runTarget(crashing, { seed: 1, runs: 1000, requireVectors: false });
    expect(r.outcome).toBe('failed');
    expect(r.detail).toMatch(/--target crashing --seed 1 --path /);
  });

  it('a target with missing vectors fails when vectors are required, and is unavailable otherwise', async () => {
    const t = { ...TARGETS[0], name: 'needs-vectors', vectors: ['nowhere/absent.bin'] } as (typeof TARGETS)[number];
    expect((await runTarget(t, { seed: 1, runs: 1, requireVectors: true })).outcome).toBe('failed');
    expect((await runTarget(t, { seed: 1, runs: 1, requireVectors: false })).outcome).toBe('unavailable');
  });

  it('mutations change bytes the way they say', () => {
    const b = new Uint8Array([0, 1, 2, 3]);
    expect([...applyMutation(b, { op: 'flip', at: 0, bit: 7 }, [])]).toEqual([0x80, 1, 2, 3]);
    expect([...applyMutation(b, { op: 'truncate', at: 0x8000 }, [])]).toEqual([0, 1]);
    expect([...applyMutation(b, { op: 'insert', at: 0, bytes: new Uint8Array([9]) }, [])]).toEqual([9, 0, 1, 2, 3]);
    expect([...applyMutation(b, { op: 'delete', at: 0x4000, length: 2 }, [])]).toEqual([0, 3]);
    expect([...applyMutation(b, { op: 'duplicate', at: 0xc000, length: 9 }, [])]).toEqual([0, 1, 2, 3, 3]);
    expect([...applyMutation(b, { op: 'splice', at: 0x8000, other: 0, from: 0 }, [new Uint8Array([7, 8])])]).toEqual([0, 1, 7, 8]);
    expect([...b]).toEqual([0, 1, 2, 3]);
  });
});
