/** Number formatting shared by the terminal table, the JSON file and the SVG chart. */

export function fmtNum(v: number, digits = 3): string {
  if (!Number.isFinite(v)) return 'n/a';
  const a = Math.abs(v);
  if (a >= 100_000) return `${(v / 1000).toFixed(0)}k`;
  if (a >= 10_000) return `${(v / 1000).toFixed(1)}k`;
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return v.toPrecision(digits);
  if (a === 0) return '0';
  return v.toPrecision(Math.max(1, digits - 1));
}

export function fmtMs(v: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  if (v < 0.01) return `${(v * 1000).toFixed(1)}us`;
  if (v < 1) return `${(v * 1000).toFixed(0)}us`;
  if (v < 100) return `${v.toFixed(2)}ms`;
  return `${v.toFixed(0)}ms`;
}

export function fmtBytes(n: number): string {
  if (n >= 1024 * 1024 && n % (1024 * 1024) === 0) return `${n / (1024 * 1024)}MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024}KiB`;
  return `${n}B`;
}

/** Round for JSON: keeps files small and diffs readable. */
export function round(v: number, sig = 5): number {
  if (!Number.isFinite(v) || v === 0) return v;
  return Number(v.toPrecision(sig));
}

export function pad(s: string, width: number, right = false): string {
  return right ? s.padStart(width) : s.padEnd(width);
}
