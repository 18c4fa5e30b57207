/**
 * Load generators. A closed loop keeps `concurrency` operations in flight for a fixed time
 * and records each operation's latency; the sync loop times CPU-bound work on the calling
 * thread (one core) in small batches so the clock read does not dominate.
 */
import { performance } from 'node:perf_hooks';
import { SampleBuffer } from './stats.js';

export interface Measurement {
  /** Completed operations. */
  readonly ops: number;
  readonly elapsedMs: number;
  /** Per-operation latency in milliseconds (async loops only). */
  readonly latenciesMs?: Float64Array;
  /** Work units other than operations (e.g. tokens) completed; throughput uses these when set. */
  readonly units?: number;
  /** Other per-operation distributions in milliseconds, e.g. { ttftMs }. */
  readonly samples?: Readonly<Record<string, Float64Array>>;
}

export interface OpResult {
  /** Units completed by this operation (tokens); defaults to 1 op. */
  readonly units?: number;
  readonly samples?: Readonly<Record<string, number>>;
}

function isOpResult(v: unknown): v is OpResult {
  return typeof v === 'object' && v !== null && ('units' in v || 'samples' in v);
}

/**
 * Run `op` with `concurrency` workers for `durationMs` (an op may return an OpResult to
 * report work units or extra samples); operations started before the
 * deadline finish and are counted. An operation that throws aborts the loop: a benchmark
 * never reports numbers that include failed requests.
 */
export async function closedLoop(
  concurrency: number,
  durationMs: number,
  op: (worker: number) => Promise<unknown>,
): Promise<Measurement> {
  const latencies = new SampleBuffer();
  const extra = new Map<string, SampleBuffer>();
  let ops = 0;
  let units = 0;
  let sawUnits = false;
  const start = performance.now();
  const deadline = start + durationMs;
  const worker = async (id: number): Promise<void> => {
    while (performance.now() < deadline) {
      const t0 = performance.now();
      const result = await op(id);
      const r = isOpResult(result) ? result : undefined;
      latencies.push(performance.now() - t0);
      ops++;
      if (r !== undefined) {
        if (r.units !== undefined) {
          units += r.units;
          sawUnits = true;
        }
        if (r.samples !== undefined) {
          for (const [k, v] of Object.entries(r.samples)) {
            let buf = extra.get(k);
            if (buf === undefined) {
              buf = new SampleBuffer();
              extra.set(k, buf);
            }
            buf.push(v);
          }
        }
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, i) => worker(i)));
  const elapsedMs = performance.now() - start;
  const samples: Record<string, Float64Array> = {};
  for (const [k, v] of extra) samples[k] = v.values();
  return {
    ops,
    elapsedMs,
    latenciesMs: latencies.values(),
    ...(sawUnits ? { units } : {}),
    ...(extra.size > 0 ? { samples } : {}),
  };
}

/**
 * Time a synchronous operation on this thread for about `durationMs`, in batches of
 * `batch` calls; each batch's mean is one latency sample.
 */
export function syncLoop(durationMs: number, op: () => void, batch = 16): Measurement {
  const latencies = new SampleBuffer();
  let ops = 0;
  const start = performance.now();
  const deadline = start + durationMs;
  let now = start;
  while (now < deadline) {
    const t0 = now;
    for (let i = 0; i < batch; i++) op();
    now = performance.now();
    latencies.push((now - t0) / batch);
    ops += batch;
  }
  return { ops, elapsedMs: now - start, latenciesMs: latencies.values() };
}

/** Like `syncLoop`, for operations that return a promise but are CPU-bound (run one at a time). */
export async function serialLoop(durationMs: number, op: () => Promise<unknown>): Promise<Measurement> {
  return closedLoop(1, durationMs, async () => {
    await op();
  });
}
