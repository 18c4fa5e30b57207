/**
 * Runs every benchmark scenario for a moment (`smoke` timing), as `npm run bench:smoke`
 * does, and checks the reports are complete. Timings are never asserted: this proves the
 * harness and scenarios run, and that the outputs hold no request content.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runScenarios } from '../../bench/run.js';
import { createProgress } from '../../bench/lib/progress.js';
import { SCENARIO_NAMES } from '../../bench/scenarios/index.js';

describe('bench smoke', () => {
  let dir = '';
  afterAll(async () => {
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  it('rejects an unknown scenario name', async () => {
    await expect(
      runScenarios({ scenarios: ['nope'], smoke: true, outDir: null, command: 'test', progress: createProgress({ quiet: true }), print: false }),
    ).rejects.toThrow(/unknown scenario/);
  });

  it('runs every scenario and writes a JSON report and an SVG chart for each', async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'cloister-bench-'));
    const reports = await runScenarios({
      scenarios: SCENARIO_NAMES,
      smoke: true,
      outDir: dir,
      command: 'vitest test/bench/smoke.test.ts',
      progress: createProgress({ quiet: true }),
      print: false,
    });
    expect(reports.map((r) => r.scenario)).toEqual([...SCENARIO_NAMES]);
    for (const r of reports) {
      expect(r.smoke).toBe(true);
      for (const c of r.result.comparisons) {
        expect(c.arms.length).toBeGreaterThan(0);
        for (const a of c.arms) {
          expect(a.perRound).toHaveLength(c.rounds);
          expect(a.ops).toBeGreaterThan(0);
        }
      }
      for (const t of r.result.targets) expect(typeof t.pass).toBe('boolean');
      const json = JSON.parse(await readFile(path.join(dir, `${r.scenario}.json`), 'utf8')) as Record<string, unknown>;
      expect(json['scenario']).toBe(r.scenario);
      expect(json['command']).toBe('vitest test/bench/smoke.test.ts');
      const svg = await readFile(path.join(dir, `${r.scenario}.svg`), 'utf8');
      expect(svg.startsWith('<svg')).toBe(true);
    }
    // Request texts are synthetic clinical words; none may appear in any output.
    for (const f of await readdir(dir)) {
      const text = await readFile(path.join(dir, f), 'utf8');
      expect(text).not.toMatch(/hypertension|prescribed|denies nausea/);
    }
  }, 60_000);
});
