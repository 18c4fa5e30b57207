/**
 * Summarises V8 CPU profiles (`node --cpu-prof`) of a benchmark run, for the "measured reason
 * for a miss" that docs/PERFORMANCE.md gives: self time per source file and inclusive time per
 * function, both per operation when the number of operations is given.
 *
 *   node --cpu-prof --cpu-prof-dir=prof build/bench/bench/run.js e2e --smoke --out /tmp/x
 *     (forked children inherit --cpu-prof: the server process writes its own profile)
 *   npm run bench:profile -- prof/CPU.*.cpuprofile [--ops N] [--match REGEX] [--top K]
 *
 * Profiles hold function names and source positions only (no request content).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}
interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
  readonly children?: readonly number[];
}
interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** A source URL shortened to what identifies it: src/..., bench/..., node:..., or the package. */
function shortFile(url: string, fallback: string): string {
  if (url === '') return fallback;
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) return `npm:${url.slice(nm + 'node_modules/'.length)}`;
  const m = /\/(src|bench|dist)\/(.*)$/.exec(url);
  return m === null ? url : `${m[1]}/${m[2]}`;
}

export interface ProfileSummary {
  readonly totalMs: number;
  readonly idleShare: number;
  readonly selfByFile: readonly (readonly [string, number])[];
  readonly inclusiveByFunction: readonly (readonly [string, number])[];
}

export function summarise(p: CpuProfile): ProfileSummary {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfUs = new Map<number, number>();
  p.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  let total = 0;
  let idle = 0;
  const selfByFile = new Map<string, number>();
  const inclusive = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (node === undefined) continue;
    total += us;
    if (node.callFrame.functionName === '(idle)') idle += us;
    const file = shortFile(node.callFrame.url, node.callFrame.functionName);
    selfByFile.set(file, (selfByFile.get(file) ?? 0) + us);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const f = byId.get(cur)?.callFrame;
      if (f === undefined || f.url === '') continue;
      const key = `${f.functionName || '(anonymous)'} ${shortFile(f.url, '')}:${f.lineNumber + 1}`;
      if (seen.has(key)) continue;
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + us);
    }
  }
  const sorted = (m: Map<string, number>): [string, number][] => [...m].sort((a, b) => b[1] - a[1]);
  return { totalMs: total / 1000, idleShare: total === 0 ? 0 : idle / total, selfByFile: sorted(selfByFile), inclusiveByFunction: sorted(inclusive) };
}

function main(): number {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { ops: { type: 'string' }, match: { type: 'string' }, top: { type: 'string' } } });
  if (positionals.length === 0) {
    console.error('usage: profile-summary PROFILE.cpuprofile ... [--ops N] [--match REGEX] [--top K]');
    return 2;
  }
  const ops = values.ops === undefined ? undefined : Number(values.ops);
  const top = values.top === undefined ? 25 : Number(values.top);
  const match = values.match === undefined ? undefined : new RegExp(values.match);
  const per = (us: number): string => (ops === undefined || !(ops > 0) ? '' : `${(us / ops).toFixed(1).padStart(8)} us/op`);
  for (const file of positionals) {
    const s = summarise(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile);
    const totalUs = s.totalMs * 1000;
    console.log(`== ${file}: ${s.totalMs.toFixed(0)} ms sampled, ${(s.idleShare * 100).toFixed(1)} % idle`);
    console.log('-- self time by file');
    for (const [k, us] of s.selfByFile.slice(0, top)) console.log(`${((us / totalUs) * 100).toFixed(1).padStart(5)} % ${per(us)}  ${k}`);
    console.log('-- inclusive time by function');
    for (const [k, us] of s.inclusiveByFunction.filter(([k]) => match === undefined || match.test(k)).slice(0, top)) console.log(`${((us / totalUs) * 100).toFixed(1).padStart(5)} % ${per(us)}  ${k}`);
  }
  return 0;
}

if (process.argv[1] !== undefined && /profile-summary\.js$/.test(process.argv[1])) process.exitCode = main();
