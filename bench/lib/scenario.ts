/** The contract every scenario in bench/scenarios implements. */
import type { Comparison, Ratio, TargetResult } from './harness.js';
import type { Progress } from './progress.js';

export interface Timing {
  readonly rounds: number;
  readonly warmupMs: number;
  readonly roundMs: number;
}

export interface ScenarioContext {
  /** Smoke mode: a second or two per scenario, numbers are not meaningful. */
  readonly smoke: boolean;
  readonly progress: Progress;
  /** Absolute path of the repository root (for models/ and test/vectors). */
  readonly repoRoot: string;
  /** Default interleaving plan for this mode; scenarios may scale it. */
  readonly timing: Timing;
}

export interface Metric {
  readonly label: string;
  readonly value: number;
  readonly unit: string;
}

export interface ScenarioResult {
  readonly comparisons: readonly Comparison[];
  readonly ratios: readonly Ratio[];
  readonly targets: readonly TargetResult[];
  /** Single values that are not throughput comparisons (memory, one-off timings). */
  readonly metrics: readonly Metric[];
  /** Content-free notes: skipped parts and why, caveats. */
  readonly notes: readonly string[];
}

export interface Scenario {
  readonly name: string;
  readonly title: string;
  run(ctx: ScenarioContext): Promise<ScenarioResult>;
}

/** A mutable builder scenarios fill in, then return. */
export class ResultBuilder {
  readonly comparisons: Comparison[] = [];
  readonly ratios: Ratio[] = [];
  readonly targets: TargetResult[] = [];
  readonly metrics: Metric[] = [];
  readonly notes: string[] = [];

  result(): ScenarioResult {
    return {
      comparisons: this.comparisons,
      ratios: this.ratios,
      targets: this.targets,
      metrics: this.metrics,
      notes: this.notes,
    };
  }
}
