/**
 * The benchmark harness: statistics, interleaving, ratios, targets, output files, progress.
 * No timing is asserted anywhere.
 */
import { describe, expect, it } from 'vitest';
import { compare, ratio, target } from '../../bench/lib/harness.js';
import type { Arm } from '../../bench/lib/harness.js';
import { closedLoop, syncLoop } from '../../bench/lib/load.js';
import { createProgress } from '../../bench/lib/progress.js';
import { renderJson, renderSvg, renderTable } from '../../bench/lib/report.js';
import type { ScenarioReport } from '../../bench/lib/report.js';
import { latencySummary, quantile, SampleBuffer, spread } from '../../bench/lib/stats.js';
import { machineInfo } from '../../bench/lib/machine.js';
import { syntheticText } from '../../bench/lib/demo.js';

function sink(isTTY: boolean): { isTTY: boolean; columns: number; text: string; write(s: string): boolean } {
  return {
    isTTY,
    columns: 100,
    text: '',
    write(s: string) {
      this.text += s;
      return true;
    },
  };
}

describe('stats', () => {
  it('computes interpolated quantiles, spread and latency summaries', () => {
    expect(quantile([1, 2, 3, 4], 0.5)).toBe(2.5);
    expect(quantile([5], 0.99)).toBe(5);
    expect(Number.isNaN(quantile([], 0.5))).toBe(true);
    const s = spread([3, 1, 2, 5, 4]);
    expect(s).toEqual({ median: 3, min: 1, max: 5, q1: 2, q3: 4 });
    const l = latencySummary(Array.from({ length: 101 }, (_, i) => i));
    expect(l.p50).toBe(50);
    expect(l.p99).toBe(99);
    expect(l.count).toBe(101);
  });

  it('grows its sample buffer without losing samples', () => {
    const b = new SampleBuffer();
    for (let i = 0; i < 5000; i++) b.push(i);
    expect(b.length).toBe(5000);
    expect(b.values()[4999]).toBe(4999);
  });
});

describe('harness', () => {
  it('interleaves arms round by round, rotating who goes first', async () => {
    const order: string[] = [];
    const arm = (name: string, ops: number): Arm => ({
      name,
      measure: (ms) => {
        order.push(name);
        return Promise.resolve({ ops, elapsedMs: ms });
      },
    });
    const c = await compare('t', { c: 1 }, [arm('A', 10), arm('B', 20)], { rounds: 4, warmupMs: 1, roundMs: 100, unit: 'op/s' });
    // warm-up A, B; then AB BA AB BA
    expect(order).toEqual(['A', 'B', 'A', 'B', 'B', 'A', 'A', 'B', 'B', 'A']);
    expect(c.arms[0]?.perRound).toEqual([100, 100, 100, 100]);
    expect(c.arms[1]?.throughput.median).toBe(200);
    const r = ratio(c, 'A', 'B');
    expect(r.median).toBe(0.5);
    expect(r.comparison).toBe('t c=1');
    expect(() => ratio(c, 'A', 'nope')).toThrow(/no arm/);
  });

  it('uses work units for throughput and keeps extra distributions', async () => {
    const m = await closedLoop(2, 20, async () => {
      await new Promise((r) => setImmediate(r));
      return { units: 5, samples: { ttftMs: 1 } };
    });
    expect(m.ops).toBeGreaterThan(0);
    expect(m.units).toBe(m.ops * 5);
    expect(m.samples?.['ttftMs']?.length).toBe(m.ops);
    expect(m.latenciesMs?.length).toBe(m.ops);
  });

  it('aborts a measurement when an operation fails (no numbers from failed requests)', async () => {
    await expect(closedLoop(1, 50, () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(() => syncLoop(10, () => { throw new Error('sync boom'); })).toThrow('sync boom');
  });

  it('judges targets in both directions and treats NaN as a miss', () => {
    expect(target('a', 1, 'min', 0.95).pass).toBe(true);
    expect(target('a', 0.9, 'min', 0.95).pass).toBe(false);
    expect(target('b', 0.2, 'max', 0.3).pass).toBe(true);
    expect(target('b', 0.4, 'max', 0.3).pass).toBe(false);
    expect(target('c', Number.NaN, 'min', 0).pass).toBe(false);
  });
});

describe('report', () => {
  const report = async (): Promise<ScenarioReport> => {
    const c = await compare(
      'x',
      { size: '1KiB' },
      [
        { name: 'base', measure: (ms) => Promise.resolve({ ops: 100, elapsedMs: ms, latenciesMs: Float64Array.of(1, 2) }) },
        { name: 'sealed', measure: (ms) => Promise.resolve({ ops: 90, elapsedMs: ms, latenciesMs: Float64Array.of(1.5, 2.5) }) },
      ],
      { rounds: 2, warmupMs: 1, roundMs: 10, unit: 'req/s' },
    );
    const r = ratio(c, 'sealed', 'base');
    return {
      scenario: 'x',
      title: 'a <test> & "title"',
      command: 'npm run bench:x',
      machine: machineInfo(new Date(0)),
      smoke: true,
      timing: { rounds: 2, warmupMs: 1, roundMs: 10 },
      durationS: 0.1,
      result: {
        comparisons: [c],
        ratios: [{ ...r, target: { kind: 'min', threshold: 0.95 } }],
        targets: [target('sealed/base', r.median, 'min', 0.95, 'x')],
        metrics: [{ label: 'rss', value: 12, unit: 'MiB' }],
        notes: ['a note'],
      },
    };
  };

  it('prints machine, command, ratios and PASS/MISS', async () => {
    const text = renderTable(await report());
    expect(text).toContain('command: npm run bench:x');
    expect(text).toContain('machine: ');
    expect(text).toContain(`Node ${process.version}`);
    expect(text).toMatch(/sealed\/base = 0\.900/);
    expect(text).toMatch(/MISS {2}sealed\/base: 0\.900x \(target >= 0\.95x\)/);
  });

  it('writes parseable JSON with the machine and the exact command', async () => {
    const doc = JSON.parse(renderJson(await report())) as Record<string, unknown>;
    expect(doc['command']).toBe('npm run bench:x');
    expect((doc['machine'] as Record<string, unknown>)['cores']).toBeGreaterThan(0);
    expect((doc['targets'] as { pass: boolean }[])[0]?.pass).toBe(false);
  });

  it('escapes labels in the SVG and draws one bar per ratio', () => {
    const svg = renderSvg('t <x>', 's & t', [{ label: 'a<b', value: 1.2, min: 1, max: 1.4, threshold: 0.95, pass: true }, { label: 'c', value: 0.5 }], 'x');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('t &lt;x&gt;');
    expect(svg).toContain('a&lt;b');
    expect(svg).not.toContain('a<b');
    expect(svg.match(/<rect x=/g)?.length).toBe(2);
  });
});

describe('progress', () => {
  it('redraws a bar on a TTY and prints plain lines otherwise', () => {
    const tty = sink(true);
    const p = createProgress({ stream: tty });
    p.plan(4);
    p.status('e2e c=8: round 1/2 sealed');
    p.tick();
    p.tick();
    expect(tty.text).toContain('\r');
    expect(tty.text).toContain(' 50%');

    const plain = sink(false);
    const q = createProgress({ stream: plain });
    q.plan(4);
    q.status('e2e c=8: warm-up sealed');
    q.status('e2e c=8: round 1/2 sealed');
    q.status('e2e c=8: round 1/2 plaintext');
    q.tick();
    expect(plain.text).not.toContain('\r');
    expect(plain.text.trim().split('\n')).toEqual(['[0/4] e2e c=8']);
  });

  it('prints nothing when quiet', () => {
    const s = sink(false);
    const p = createProgress({ stream: s, quiet: true });
    p.plan(1);
    p.status('x');
    p.line('y');
    p.tick();
    expect(s.text).toBe('');
  });
});

describe('synthetic inputs', () => {
  it('are exactly the requested size and deterministic', () => {
    for (const n of [1, 256, 4096, 65536]) expect(syntheticText(n).length).toBe(n);
    expect(syntheticText(300, 3)).toBe(syntheticText(300, 3));
    expect(syntheticText(300, 3)).not.toBe(syntheticText(300, 4));
  });
});
