/**
 * `npm run fuzz`: runs every fuzz target (fuzz/targets.ts) with fast-check and prints, per
 * target, the executions, the time and the outcome. A crash, an accepted mutant or a
 * differential mismatch fails the run (exit 1) and prints the seed and path that reproduce
 * it (`--seed S --path P --target NAME`). Usage errors exit 2.
 *
 *   npm run fuzz                                 full campaign (>= 1 000 000 runs per decoder target)
 *   npm run fuzz -- --scale 0.01                 1 % of every target's full run
 *   npm run fuzz -- --target cbor,wire --runs 50000 --seed 42
 *   npm run fuzz -- --json fuzz-report.json      also write the report as JSON
 */
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { runTarget } from './run-target.js';
import type { RunOptions, TargetResult } from './run-target.js';
import { TARGETS } from './targets.js';
import type { FuzzTarget } from './targets.js';

function usage(message: string): never {
  process.stderr.write(`fuzz: ${message}\nusage: npm run fuzz -- [--target a,b] [--runs N | --scale F] [--seed S] [--path P] [--json FILE]\n`);
  process.exit(2);
}

function parseArgs(argv: readonly string[]): { targets: FuzzTarget[]; options: RunOptions; json?: string } {
  let names: string[] | undefined;
  let runs: number | undefined;
  let scale: number | undefined;
  let seed = Date.now() % 2 ** 31;
  let path: string | undefined;
  let json: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (value === undefined) usage(`${flag ?? ''} needs a value`);
    i += 1;
    switch (flag) {
      case '--target':
        names = value.split(',');
        break;
      case '--runs':
        runs = Number(value);
        if (!Number.isSafeInteger(runs) || runs < 1) usage(`--runs must be a positive integer, got ${value}`);
        break;
      case '--scale':
        scale = Number(value);
        if (!Number.isFinite(scale) || scale <= 0) usage(`--scale must be a positive number, got ${value}`);
        break;
      case '--seed':
        seed = Number(value);
        if (!Number.isSafeInteger(seed)) usage(`--seed must be an integer, got ${value}`);
        break;
      case '--path':
        path = value;
        break;
      case '--json':
        json = value;
        break;
      default:
        usage(`unknown option ${flag ?? ''}`);
    }
  }
  const known = new Map(TARGETS.map((t) => [t.name, t]));
  const targets = (names ?? [...known.keys()]).map((n) => known.get(n) ?? usage(`unknown target ${n} (targets: ${[...known.keys()].join(', ')})`));
  const options: RunOptions = { seed, requireVectors: process.env['CI'] === 'true', ...(runs === undefined ? {} : { runs }), ...(scale === undefined ? {} : { scale }), ...(path === undefined ? {} : { path }) };
  return json === undefined ? { targets, options } : { targets, options, json };
}

async function main(): Promise<void> {
  const { targets, options, json } = parseArgs(process.argv.slice(2));
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  process.stdout.write(`fuzz: ${targets.length} targets, seed ${options.seed}, ${cpu} x${os.cpus().length}, Node ${process.version}\n`);
  const results: TargetResult[] = [];
  for (const t of targets) {
    const r = await runTarget(t, options);
    results.push(r);
    const rate = r.seconds > 0 ? Math.round(r.runs / r.seconds) : 0;
    process.stdout.write(`${r.outcome.padEnd(11)} ${r.name.padEnd(18)} ${r.kind.padEnd(12)} ${String(r.runs).padStart(9)} runs ${r.seconds.toFixed(1).padStart(7)} s ${String(rate).padStart(8)}/s\n`);
    if (r.detail !== undefined) process.stdout.write(`  ${r.detail}\n`);
  }
  const failed = results.filter((r) => r.outcome === 'failed').length;
  const total = results.reduce((a, r) => a + r.runs, 0);
  process.stdout.write(`fuzz: ${total} executions, ${failed} failed target(s), ${results.filter((r) => r.outcome === 'unavailable').length} unavailable\n`);
  if (json !== undefined) {
    writeFileSync(json, `${JSON.stringify({ date: new Date().toISOString(), machine: { cpu, cores: os.cpus().length, node: process.version }, seed: options.seed, results }, null, 2)}\n`);
  }
  process.exitCode = failed > 0 ? 1 : 0;
}

await main();
