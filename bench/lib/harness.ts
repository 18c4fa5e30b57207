/**
 * The comparison harness. Every comparison measures its arms (baseline and Cloister, or
 * several variants) IN THE SAME RUN, interleaved round by round, after a warm-up of each
 * arm. Round r starts with arm (r mod n) and goes round the list, so for two arms the order
 * is AB BA AB BA ...: drift of the machine (other load, thermal state, GC of an older arm)
 * hits every arm alike. Ratios are taken per round between paired measurements, and the
 * median over rounds is reported with its min and max.
 */
import type { Measurement } from './load.js';
import type { Progress } from './progress.js';
import type { LatencySummary, Spread } from './stats.js';
import { latencySummary, median, spread } from './stats.js';

export interface Arm {
  readonly name: string;
  /** One measurement lasting about `durationMs`. */
  measure(durationMs: number): Promise<Measurement>;
}

export interface CompareOptions {
  readonly rounds: number;
  readonly warmupMs: number;
  readonly roundMs: number;
  /** Unit of throughput, e.g. "req/s", "tokens/s", "ops/s". */
  readonly unit: string;
}

export interface ArmResult {
  readonly name: string;
  /** Throughput of each round, in round order. */
  readonly perRound: readonly number[];
  readonly throughput: Spread;
  /** Operation latency over all rounds (ms). */
  readonly latencyMs?: LatencySummary;
  /** Other distributions over all rounds (ms), e.g. ttftMs. */
  readonly samples?: Readonly<Record<string, LatencySummary>>;
  readonly ops: number;
}

export interface Comparison {
  readonly name: string;
  readonly params: Readonly<Record<string, string | number>>;
  readonly unit: string;
  readonly rounds: number;
  readonly roundMs: number;
  readonly arms: readonly ArmResult[];
}

export interface Ratio {
  readonly comparison: string;
  readonly label: string;
  readonly numerator: string;
  readonly denominator: string;
  /** Median of the per-round ratios of throughput. */
  readonly median: number;
  readonly min: number;
  readonly max: number;
  /** Drawn on the chart when the ratio has a target. */
  readonly target?: { readonly kind: 'min' | 'max'; readonly threshold: number };
}

export interface TargetResult {
  readonly label: string;
  readonly value: number;
  readonly threshold: number;
  /** "min": value must be >= threshold; "max": value must be <= threshold. */
  readonly kind: 'min' | 'max';
  readonly unit: string;
  readonly pass: boolean;
}

function throughputOf(m: Measurement): number {
  const work = m.units ?? m.ops;
  return m.elapsedMs > 0 ? (work * 1000) / m.elapsedMs : 0;
}

function concat(parts: readonly Float64Array[]): Float64Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Float64Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export async function compare(
  name: string,
  params: Readonly<Record<string, string | number>>,
  arms: readonly Arm[],
  options: CompareOptions,
  progress?: Progress,
): Promise<Comparison> {
  const label = `${name} ${Object.entries(params)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ')}`.trim();
  for (const arm of arms) {
    progress?.status(`${label}: warm-up ${arm.name}`);
    await arm.measure(options.warmupMs);
  }
  const perArm = arms.map(() => ({ rounds: [] as number[], lat: [] as Float64Array[], extra: new Map<string, Float64Array[]>(), ops: 0 }));
  for (let r = 0; r < options.rounds; r++) {
    for (let k = 0; k < arms.length; k++) {
      const i = (r + k) % arms.length;
      const arm = arms[i];
      const acc = perArm[i];
      if (arm === undefined || acc === undefined) continue;
      progress?.status(`${label}: round ${r + 1}/${options.rounds} ${arm.name}`);
      const m = await arm.measure(options.roundMs);
      acc.rounds.push(throughputOf(m));
      acc.ops += m.ops;
      if (m.latenciesMs !== undefined) acc.lat.push(m.latenciesMs);
      if (m.samples !== undefined) {
        for (const [key, v] of Object.entries(m.samples)) {
          const list = acc.extra.get(key) ?? [];
          list.push(v);
          acc.extra.set(key, list);
        }
      }
      progress?.tick();
    }
  }
  const results: ArmResult[] = arms.map((arm, i) => {
    const acc = perArm[i] ?? { rounds: [], lat: [], extra: new Map<string, Float64Array[]>(), ops: 0 };
    const samples: Record<string, LatencySummary> = {};
    for (const [key, list] of acc.extra) samples[key] = latencySummary(concat(list));
    return {
      name: arm.name,
      perRound: acc.rounds,
      throughput: spread(acc.rounds),
      ...(acc.lat.length > 0 ? { latencyMs: latencySummary(concat(acc.lat)) } : {}),
      ...(acc.extra.size > 0 ? { samples } : {}),
      ops: acc.ops,
    };
  });
  return { name, params, unit: options.unit, rounds: options.rounds, roundMs: options.roundMs, arms: results };
}

export function armOf(c: Comparison, name: string): ArmResult {
  const arm = c.arms.find((a) => a.name === name);
  if (arm === undefined) throw new Error(`comparison ${c.name} has no arm ${name}`);
  return arm;
}

/** Throughput ratio numerator/denominator, paired round by round. */
export function ratio(c: Comparison, numerator: string, denominator: string, label?: string): Ratio {
  const a = armOf(c, numerator).perRound;
  const b = armOf(c, denominator).perRound;
  const per: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    if (x !== undefined && y !== undefined && y > 0) per.push(x / y);
  }
  const s = spread(per);
  return {
    comparison: comparisonLabel(c),
    label: label ?? `${numerator}/${denominator}`,
    numerator,
    denominator,
    median: s.median,
    min: s.min,
    max: s.max,
  };
}

export function comparisonLabel(c: Comparison): string {
  const p = Object.entries(c.params)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  return p.length > 0 ? `${c.name} ${p}` : c.name;
}

export function target(label: string, value: number, kind: 'min' | 'max', threshold: number, unit = ''): TargetResult {
  const pass = Number.isFinite(value) && (kind === 'min' ? value >= threshold : value <= threshold);
  return { label, value, threshold, kind, unit, pass };
}

/** Median of a list; re-exported for scenarios that combine numbers. */
export { median };
