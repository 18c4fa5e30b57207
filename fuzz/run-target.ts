/** One fuzz target run with fast-check: the result, never a throw for a property failure. */
import { performance } from 'node:perf_hooks';
import fc from 'fast-check';
import { existsSync } from 'node:fs';
import { vectorPath } from '../test/helpers/vectors.js';
import type { FuzzTarget } from './targets.js';

export interface TargetResult {
  readonly name: string;
  readonly kind: string;
  readonly runs: number;
  readonly seconds: number;
  readonly outcome: 'passed' | 'failed' | 'unavailable';
  readonly detail?: string;
}

export interface RunOptions {
  readonly runs?: number;
  readonly scale?: number;
  readonly seed: number;
  readonly path?: string;
  /** A target whose vectors are missing fails instead of being reported unavailable. */
  readonly requireVectors: boolean;
}

/** Run one target; never throws for a property failure (it is the result). */
export async function runTarget(t: FuzzTarget, o: RunOptions): Promise<TargetResult> {
  const runs = o.runs ?? Math.max(1, Math.round(t.fullRuns * (o.scale ?? 1)));
  // A plain existence check: the fuzz runner decides what a missing vector means (requireVectors).
  if (t.vectors.some((v) => !existsSync(vectorPath(v)))) {
    const detail = `vectors missing: ${t.vectors.join(', ')}`;
    return { name: t.name, kind: t.kind, runs: 0, seconds: 0, outcome: o.requireVectors ? 'failed' : 'unavailable', detail };
  }
  const started = performance.now();
  let property;
  try {
    property = t.property();
  } catch (err) {
    return { name: t.name, kind: t.kind, runs: 0, seconds: 0, outcome: 'failed', detail: `setup failed: ${String(err)}` };
  }
  const details = await fc.check(property, { numRuns: runs, seed: o.seed, ...(o.path === undefined ? {} : { path: o.path }), endOnFailure: false });
  const seconds = (performance.now() - started) / 1000;
  if (!details.failed) return { name: t.name, kind: t.kind, runs: details.numRuns, seconds, outcome: 'passed' };
  const cause = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
  return {
    name: t.name,
    kind: t.kind,
    runs: details.numRuns,
    seconds,
    outcome: 'failed',
    detail: `${cause.slice(0, 2000)}\n  reproduce: npm run fuzz -- --target ${t.name} --seed ${details.seed} --path ${details.counterexamplePath ?? ''}`,
  };
}
