/**
 * Order statistics for benchmark samples. Quantiles use linear interpolation between
 * closest ranks (the "R-7" definition, the one numpy and most spreadsheets use), so small
 * sample counts give stable, comparable numbers.
 */

export interface Spread {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  /** First and third quartile. */
  readonly q1: number;
  readonly q3: number;
}

export interface LatencySummary {
  readonly p50: number;
  readonly p99: number;
  readonly mean: number;
  readonly count: number;
}

function sorted(values: ArrayLike<number>): Float64Array {
  const out = Float64Array.from(values);
  out.sort();
  return out;
}

/** Quantile q in [0, 1] of already-sorted values; NaN for an empty sample. */
export function quantileSorted(values: Float64Array, q: number): number {
  const n = values.length;
  if (n === 0) return Number.NaN;
  const pos = (n - 1) * Math.min(1, Math.max(0, q));
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  const a = values[lo] ?? Number.NaN;
  const b = values[hi] ?? Number.NaN;
  return a + (b - a) * (pos - lo);
}

export function quantile(values: ArrayLike<number>, q: number): number {
  return quantileSorted(sorted(values), q);
}

export function median(values: ArrayLike<number>): number {
  return quantile(values, 0.5);
}

export function spread(values: ArrayLike<number>): Spread {
  const s = sorted(values);
  return {
    median: quantileSorted(s, 0.5),
    min: s.length === 0 ? Number.NaN : (s[0] ?? Number.NaN),
    max: s.length === 0 ? Number.NaN : (s[s.length - 1] ?? Number.NaN),
    q1: quantileSorted(s, 0.25),
    q3: quantileSorted(s, 0.75),
  };
}

export function latencySummary(values: ArrayLike<number>): LatencySummary {
  const s = sorted(values);
  let sum = 0;
  for (const v of s) sum += v;
  return {
    p50: quantileSorted(s, 0.5),
    p99: quantileSorted(s, 0.99),
    mean: s.length === 0 ? Number.NaN : sum / s.length,
    count: s.length,
  };
}

/** A growable list of float samples that does not allocate per sample. */
export class SampleBuffer {
  #data = new Float64Array(1024);
  #length = 0;

  push(value: number): void {
    if (this.#length === this.#data.length) {
      const next = new Float64Array(this.#data.length * 2);
      next.set(this.#data);
      this.#data = next;
    }
    this.#data[this.#length++] = value;
  }

  get length(): number {
    return this.#length;
  }

  values(): Float64Array {
    return this.#data.slice(0, this.#length);
  }
}
