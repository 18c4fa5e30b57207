/**
 * The bundled demo models and synthetic inputs for the benchmarks. Inputs are generated
 * text of a requested size: benchmarks never read or write real request content.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { buildDemoModels } from '../../tools/demo-model/build.js';

export interface DemoModelDirs {
  readonly classifierDir: string;
  readonly embedderDir: string;
  /** Set when the models had to be built now (the build is deterministic). */
  readonly builtMs?: number;
}

/** models/demo/{classifier,embedder}, built on first use (what `npm start` would do). */
export async function ensureDemoModels(repoRoot: string): Promise<DemoModelDirs> {
  const outDir = path.join(repoRoot, 'models', 'demo');
  const classifierDir = path.join(outDir, 'classifier');
  const embedderDir = path.join(outDir, 'embedder');
  const ready = [classifierDir, embedderDir].every((d) => existsSync(path.join(d, 'onnx', 'model.onnx')) && existsSync(path.join(d, 'config.json')));
  if (ready) return { classifierDir, embedderDir };
  // The data set path is given explicitly: the compiled bench lives under build/bench/.
  const r = await buildDemoModels({ outDir, datasetPath: path.join(repoRoot, 'data', 'clinical-notes.jsonl') });
  return { classifierDir: r.classifierDir, embedderDir: r.embedderDir, builtMs: r.buildMs };
}

const WORDS = [
  'patient', 'reports', 'mild', 'chest', 'pain', 'after', 'exercise', 'no', 'fever', 'history', 'of',
  'hypertension', 'prescribed', 'daily', 'follow', 'up', 'in', 'two', 'weeks', 'blood', 'pressure',
  'stable', 'denies', 'nausea', 'the', 'and', 'with', 'was', 'seen', 'for', 'routine', 'check',
];

/** Deterministic synthetic note of exactly `bytes` ASCII characters (seeded, so arms get equal inputs). */
export function syntheticText(bytes: number, seed = 1): string {
  let s = seed >>> 0 || 1;
  const parts: string[] = [];
  let len = 0;
  while (len <= bytes) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const w = WORDS[s % WORDS.length] ?? 'note';
    parts.push(w);
    len += w.length + 1;
  }
  return parts.join(' ').slice(0, bytes);
}
