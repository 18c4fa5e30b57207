/**
 * Output of a scenario run: a table on the terminal, a JSON file and an SVG bar chart of
 * the ratios (hand-written SVG, no dependencies). Only labels and numbers are written:
 * never request or response content.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ArmResult, Comparison, Ratio } from './harness.js';
import { comparisonLabel } from './harness.js';
import type { MachineInfo } from './machine.js';
import { describeMachine } from './machine.js';
import type { Metric, ScenarioResult, Timing } from './scenario.js';
import type { LatencySummary } from './stats.js';
import { fmtMs, fmtNum, pad, round } from './format.js';

export interface ScenarioReport {
  readonly scenario: string;
  readonly title: string;
  readonly command: string;
  readonly machine: MachineInfo;
  readonly smoke: boolean;
  readonly timing: Timing;
  readonly durationS: number;
  readonly result: ScenarioResult;
}

function row(cells: readonly string[], widths: readonly number[]): string {
  return cells.map((c, i) => pad(c, widths[i] ?? c.length, i > 0)).join('  ');
}

function armCells(a: ArmResult, unit: string): string[] {
  const t = a.throughput;
  const lat = a.latencyMs;
  const extra = Object.entries(a.samples ?? {})
    .map(([k, v]) => `${k} p50 ${fmtMs(v.p50)} p99 ${fmtMs(v.p99)}`)
    .join('; ');
  return [
    `  ${a.name}`,
    `${fmtNum(t.median)} ${unit}`,
    `[${fmtNum(t.min)}..${fmtNum(t.max)}]`,
    lat === undefined ? '' : `p50 ${fmtMs(lat.p50)}`,
    lat === undefined ? '' : `p99 ${fmtMs(lat.p99)}`,
    extra,
  ];
}

export function renderTable(r: ScenarioReport): string {
  const out: string[] = [];
  out.push(`== ${r.scenario}: ${r.title}${r.smoke ? ' (SMOKE: numbers are not meaningful)' : ''}`);
  out.push(`machine: ${describeMachine(r.machine)}`);
  out.push(`command: ${r.command}`);
  out.push(`plan: ${r.timing.rounds} interleaved rounds x ${r.timing.roundMs} ms per arm after ${r.timing.warmupMs} ms warm-up; took ${r.durationS.toFixed(1)} s`);
  for (const c of r.result.comparisons) {
    out.push('');
    out.push(`${comparisonLabel(c)}   (median throughput [min..max over rounds], latency over all ops)`);
    const rows = c.arms.map((a) => armCells(a, c.unit));
    const widths = [0, 1, 2, 3, 4, 5].map((i) => Math.max(...rows.map((cells) => (cells[i] ?? '').length)));
    for (const cells of rows) out.push(row(cells, widths).trimEnd());
  }
  if (r.result.metrics.length > 0) {
    out.push('');
    for (const m of r.result.metrics) out.push(`${m.label}: ${fmtNum(m.value)} ${m.unit}`);
  }
  if (r.result.ratios.length > 0) {
    out.push('');
    out.push('ratios (median of per-round paired ratios [min..max]):');
    for (const x of r.result.ratios) {
      const t = x.target === undefined ? '' : `   target ${x.target.kind === 'min' ? '>=' : '<='} ${x.target.threshold}`;
      out.push(`  ${x.comparison}: ${x.label} = ${x.median.toFixed(3)} [${x.min.toFixed(3)}..${x.max.toFixed(3)}]${t}`);
    }
  }
  if (r.result.targets.length > 0) {
    out.push('');
    out.push('targets:');
    for (const t of r.result.targets) {
      const op = t.kind === 'min' ? '>=' : '<=';
      out.push(`  ${t.pass ? 'PASS' : 'MISS'}  ${t.label}: ${fmtNum(t.value, 4)}${t.unit} (target ${op} ${t.threshold}${t.unit})`);
    }
  }
  for (const n of r.result.notes) out.push(`note: ${n}`);
  return out.join('\n');
}

function roundLatency(l: LatencySummary): LatencySummary {
  return { p50: round(l.p50), p99: round(l.p99), mean: round(l.mean), count: l.count };
}

function jsonComparison(c: Comparison): unknown {
  return {
    ...c,
    arms: c.arms.map((a) => ({
      name: a.name,
      ops: a.ops,
      perRound: a.perRound.map((v) => round(v)),
      throughput: {
        median: round(a.throughput.median),
        min: round(a.throughput.min),
        max: round(a.throughput.max),
        q1: round(a.throughput.q1),
        q3: round(a.throughput.q3),
      },
      ...(a.latencyMs === undefined ? {} : { latencyMs: roundLatency(a.latencyMs) }),
      ...(a.samples === undefined
        ? {}
        : { samples: Object.fromEntries(Object.entries(a.samples).map(([k, v]) => [k, roundLatency(v)])) }),
    })),
  };
}

export function renderJson(r: ScenarioReport): string {
  const doc = {
    scenario: r.scenario,
    title: r.title,
    command: r.command,
    machine: r.machine,
    smoke: r.smoke,
    timing: r.timing,
    durationS: round(r.durationS, 4),
    comparisons: r.result.comparisons.map(jsonComparison),
    ratios: r.result.ratios.map((x) => ({ ...x, median: round(x.median), min: round(x.min), max: round(x.max) })),
    targets: r.result.targets.map((t) => ({ ...t, value: round(t.value) })),
    metrics: r.result.metrics.map((m: Metric) => ({ ...m, value: round(m.value) })),
    notes: r.result.notes,
  };
  return `${JSON.stringify(doc, null, 2)}\n`;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

interface Bar {
  readonly label: string;
  readonly value: number;
  readonly min?: number;
  readonly max?: number;
  readonly threshold?: number;
  readonly pass?: boolean;
}

/** A horizontal bar chart; one bar per ratio (or metric), whiskers for min..max, a tick for the target. */
export function renderSvg(title: string, subtitle: string, bars: readonly Bar[], unit: string): string {
  const labelW = 330;
  const plotW = 420;
  const rowH = 22;
  const top = 52;
  const height = top + Math.max(1, bars.length) * rowH + 34;
  const width = labelW + plotW + 90;
  let maxV = 0;
  for (const b of bars) maxV = Math.max(maxV, b.value, b.max ?? 0, b.threshold ?? 0);
  if (unit === 'x') maxV = Math.max(maxV, 1);
  maxV = maxV > 0 ? maxV * 1.08 : 1;
  const x = (v: number): number => labelW + (Math.max(0, v) / maxV) * plotW;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="100%" height="100%" fill="#fff"/>`);
  parts.push(`<text x="10" y="20" font-size="15" font-weight="bold">${esc(title)}</text>`);
  parts.push(`<text x="10" y="38" fill="#555">${esc(subtitle)}</text>`);
  bars.forEach((b, i) => {
    const y = top + i * rowH;
    const color = b.pass === undefined ? '#4a78b5' : b.pass ? '#3c9a5f' : '#c8553d';
    parts.push(`<text x="${labelW - 8}" y="${y + 14}" text-anchor="end">${esc(b.label)}</text>`);
    const w = Math.max(1, x(b.value) - labelW);
    parts.push(`<rect x="${labelW}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="${color}"/>`);
    if (b.min !== undefined && b.max !== undefined && Number.isFinite(b.min) && Number.isFinite(b.max)) {
      const cy = y + rowH / 2 - 1;
      parts.push(`<line x1="${x(b.min).toFixed(1)}" x2="${x(b.max).toFixed(1)}" y1="${cy}" y2="${cy}" stroke="#222"/>`);
    }
    if (b.threshold !== undefined) {
      const tx = x(b.threshold).toFixed(1);
      parts.push(`<line x1="${tx}" x2="${tx}" y1="${y}" y2="${y + rowH - 2}" stroke="#000" stroke-width="2" stroke-dasharray="3,2"/>`);
    }
    parts.push(`<text x="${(x(Math.max(b.value, b.max ?? 0)) + 6).toFixed(1)}" y="${y + 14}">${esc(fmtNum(b.value))}${esc(unit)}</text>`);
  });
  if (unit === 'x') {
    const one = x(1).toFixed(1);
    parts.push(`<line x1="${one}" x2="${one}" y1="${top - 4}" y2="${top + bars.length * rowH}" stroke="#888" stroke-width="1"/>`);
    parts.push(`<text x="${one}" y="${top + bars.length * rowH + 14}" text-anchor="middle" fill="#555">1.0 = baseline</text>`);
  }
  parts.push(`<text x="10" y="${height - 8}" fill="#777" font-size="10">bars: median; whiskers: min..max over interleaved rounds; dashed: target; green PASS, red MISS</text>`);
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

export function barsOf(result: ScenarioResult): { bars: Bar[]; unit: string } {
  if (result.ratios.length > 0) {
    return {
      unit: 'x',
      bars: result.ratios.map((r: Ratio) => ({
        label: `${r.comparison.replace(/^\S+ /, '')} ${r.label}`.trim(),
        value: r.median,
        min: r.min,
        max: r.max,
        ...(r.target === undefined
          ? {}
          : {
              threshold: r.target.threshold,
              pass: r.target.kind === 'min' ? r.median >= r.target.threshold : r.median <= r.target.threshold,
            }),
      })),
    };
  }
  const unit = result.metrics[0]?.unit ?? '';
  return {
    unit: ` ${unit}`,
    bars: result.metrics.filter((m) => m.unit === unit).map((m) => ({ label: m.label, value: m.value })),
  };
}

export async function writeReport(dir: string, r: ScenarioReport): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const jsonPath = path.join(dir, `${r.scenario}.json`);
  const svgPath = path.join(dir, `${r.scenario}.svg`);
  await writeFile(jsonPath, renderJson(r));
  const { bars, unit } = barsOf(r.result);
  const subtitle = `${r.machine.cpuModel}, ${r.machine.cores} cores, Node ${r.machine.node}, ${r.machine.date.slice(0, 10)}${r.smoke ? ' (smoke)' : ''}`;
  await writeFile(svgPath, renderSvg(`${r.scenario}: ${r.title}`, subtitle, bars, unit));
  return [jsonPath, svgPath];
}
