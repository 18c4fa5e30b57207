/**
 * Benchmark entry point.
 *
 *   npm run bench                 all scenarios, results into bench/results/
 *   npm run bench:e2e             one scenario (also crypto, stream, attest, batch, memory)
 *   npm run bench:smoke           every scenario for a second or two (bench/results/tmp/)
 *   node build/bench/bench/run.js [scenario ...] [--smoke] [--out DIR] [--quiet]
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { machineInfo } from './lib/machine.js';
import { createProgress } from './lib/progress.js';
import type { Progress } from './lib/progress.js';
import type { ScenarioResult, Timing } from './lib/scenario.js';
import { renderTable, writeReport } from './lib/report.js';
import type { ScenarioReport } from './lib/report.js';
import { SCENARIOS, SCENARIO_NAMES } from './scenarios/index.js';

export const FULL_TIMING: Timing = { rounds: 6, warmupMs: 300, roundMs: 500 };
export const SMOKE_TIMING: Timing = { rounds: 2, warmupMs: 20, roundMs: 60 };

export interface RunOptions {
  readonly scenarios: readonly string[];
  readonly smoke: boolean;
  /** Folder for JSON and SVG; null writes nothing. */
  readonly outDir: string | null;
  readonly command: string;
  readonly progress?: Progress;
  /** Print the tables (default true). */
  readonly print?: boolean;
  readonly repoRoot?: string;
}

/** The repository root, whether running from bench/ (vitest) or build/bench/bench/ (compiled). */
export function findRepoRoot(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const parts = here.split(path.sep);
  const i = parts.lastIndexOf('build');
  if (i > 0 && parts[i + 1] === 'bench') return parts.slice(0, i).join(path.sep);
  return path.resolve(here, '..');
}

export async function runScenarios(options: RunOptions): Promise<ScenarioReport[]> {
  const unknown = options.scenarios.filter((s) => !SCENARIO_NAMES.includes(s));
  if (unknown.length > 0) throw new Error(`unknown scenario(s): ${unknown.join(', ')}; known: ${SCENARIO_NAMES.join(', ')}`);
  const progress = options.progress ?? createProgress();
  const repoRoot = options.repoRoot ?? findRepoRoot();
  const timing = options.smoke ? SMOKE_TIMING : FULL_TIMING;
  const reports: ScenarioReport[] = [];
  for (const name of options.scenarios) {
    const load = SCENARIOS[name];
    if (load === undefined) continue;
    const scenario = await load();
    progress.line(`-- ${name}: ${scenario.title}`);
    const t0 = performance.now();
    const result: ScenarioResult = await scenario.run({ smoke: options.smoke, progress, repoRoot, timing });
    const report: ScenarioReport = {
      scenario: name,
      title: scenario.title,
      command: options.command,
      machine: machineInfo(),
      smoke: options.smoke,
      timing,
      durationS: (performance.now() - t0) / 1000,
      result,
    };
    reports.push(report);
    if (options.print !== false) {
      progress.done();
      process.stdout.write(`${renderTable(report)}\n\n`);
    }
    if (options.outDir !== null) await writeReport(options.outDir, report);
  }
  progress.done();
  return reports;
}

function commandLine(): string {
  const event = process.env['npm_lifecycle_event'];
  const script = process.argv.slice(1).map((a) => path.relative(process.cwd(), a) || a);
  const node = `node ${script.join(' ')}`;
  return event !== undefined && event.startsWith('bench') ? `npm run ${event} (${node})` : node;
}

async function main(argv: readonly string[]): Promise<number> {
  let smoke = false;
  let quiet = false;
  let outDir: string | undefined;
  const names: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--smoke') smoke = true;
    else if (a === '--quiet') quiet = true;
    else if (a === '--out') outDir = argv[++i];
    else if (a === '--help' || a === '-h') {
      console.log(`usage: run.js [${SCENARIO_NAMES.join('|')} ...] [--smoke] [--out DIR] [--quiet]`);
      return 0;
    } else if (a !== undefined) names.push(a);
  }
  const repoRoot = findRepoRoot();
  const dir = outDir ?? path.join(repoRoot, 'bench', 'results', ...(smoke ? ['tmp', 'smoke'] : []));
  const started = performance.now();
  const reports = await runScenarios({
    scenarios: names.length > 0 ? names : SCENARIO_NAMES,
    smoke,
    outDir: dir,
    command: commandLine(),
    progress: createProgress({ quiet }),
    repoRoot,
  });
  const misses = reports.flatMap((r) => r.result.targets.filter((t) => !t.pass).map((t) => `${r.scenario}: ${t.label}`));
  console.log(`results: ${path.relative(process.cwd(), dir) || dir} (${reports.length} scenario(s), ${((performance.now() - started) / 1000).toFixed(0)} s)`);
  if (misses.length > 0) console.log(`targets missed: ${misses.length}\n  ${misses.join('\n  ')}`);
  // A missed target is a finding to report, not a failure of the benchmark run.
  return 0;
}

const invoked = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (invoked) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      // Errors carry codes and labels only; never request content.
      console.error(err instanceof Error ? `bench failed: ${err.name}: ${err.message}` : 'bench failed');
      process.exitCode = 1;
    },
  );
}
