/**
 * The ONNX engine's bounded request queue with batching: requests wait per model (at most
 * `maxQueueDepth` across all models; OVERLOADED when full); one model call per model runs at
 * a time, and with batching on, the requests that arrived while it ran are merged into the
 * next call (up to `maxBatchSize` texts) and the results split back per request.
 *
 * An aborted signal removes a queued request (CANCELLED); a request whose batch is already
 * running is answered CANCELLED at once and its share of the result dropped.
 */
import { CloisterError } from '../../errors.js';

export interface BatchQueueOptions {
  readonly maxQueueDepth: number;
  readonly maxBatchSize: number;
  readonly batching: boolean;
}

/** Counters for benchmarks and tests; no content. */
export interface BatchQueueStats {
  /** Model calls made for requests (the start-up checks are not counted; name kept from the pipeline days). */
  readonly pipelineCalls: number;
  /** Requests answered through those calls. */
  readonly requests: number;
  /** Most texts in one model call so far. */
  readonly largestBatch: number;
}

/** One model call over `texts`: one result per text. */
export type BatchCall<M> = (model: M, texts: string[]) => Promise<unknown[]>;

interface Job {
  readonly texts: readonly string[];
  settled: boolean;
  resolve(results: unknown[]): void;
  reject(err: CloisterError): void;
}

interface Lane {
  readonly jobs: Job[];
  running: boolean;
}

export class BatchQueue<M extends object> {
  readonly #options: BatchQueueOptions;
  readonly #call: BatchCall<M>;
  readonly #failure: (model: M, cause: unknown) => CloisterError;
  readonly #lanes = new Map<M, Lane>();
  readonly #inFlight = new Set<Promise<void>>();
  #queued = 0;
  #stats = { pipelineCalls: 0, requests: 0, largestBatch: 0 };
  #open = true;

  /** `failure` turns a failed call into the error every request of its batch gets. */
  constructor(options: BatchQueueOptions, call: BatchCall<M>, failure: (model: M, cause: unknown) => CloisterError) {
    this.#options = options;
    this.#call = call;
    this.#failure = failure;
  }

  /** Requests currently waiting (not running). */
  get queued(): number {
    return this.#queued;
  }

  stats(): BatchQueueStats {
    return { ...this.#stats };
  }

  /** Queue `texts` for `model`; resolves with one result per text. */
  enqueue(model: M, texts: readonly string[], signal: AbortSignal): Promise<unknown[]> {
    if (this.#queued >= this.#options.maxQueueDepth) {
      throw new CloisterError('OVERLOADED', 'the ONNX engine queue is full', { detail: { maxQueueDepth: this.#options.maxQueueDepth } });
    }
    let lane = this.#lanes.get(model);
    if (lane === undefined) {
      lane = { jobs: [], running: false };
      this.#lanes.set(model, lane);
    }
    const jobs = lane.jobs;
    return new Promise<unknown[]>((resolvePromise, rejectPromise) => {
      const onAbort = (): void => {
        const i = jobs.indexOf(job);
        if (i >= 0) {
          jobs.splice(i, 1);
          this.#queued--;
        }
        job.reject(cancelled());
      };
      const settle = (): boolean => {
        if (job.settled) return false;
        job.settled = true;
        signal.removeEventListener('abort', onAbort);
        return true;
      };
      const job: Job = {
        texts,
        settled: false,
        resolve: (r) => {
          if (settle()) resolvePromise(r);
        },
        reject: (e) => {
          if (settle()) rejectPromise(e);
        },
      };
      signal.addEventListener('abort', onAbort, { once: true });
      jobs.push(job);
      this.#queued++;
      this.#pump(model);
    });
  }

  /** Reject every queued request with `err()` and wait for the running calls. */
  async close(err: () => CloisterError): Promise<void> {
    this.#open = false;
    for (const lane of this.#lanes.values()) {
      for (const job of lane.jobs.splice(0)) {
        this.#queued--;
        job.reject(err());
      }
    }
    await Promise.allSettled([...this.#inFlight]);
  }

  #pump(model: M): void {
    const lane = this.#lanes.get(model);
    if (lane === undefined || lane.running || lane.jobs.length === 0 || !this.#open) return;
    const { batching, maxBatchSize } = this.#options;
    const batch: Job[] = [];
    let count = 0;
    while (lane.jobs.length > 0) {
      const next = lane.jobs[0];
      if (next === undefined) break;
      if (batch.length > 0 && (!batching || count + next.texts.length > maxBatchSize)) break;
      lane.jobs.shift();
      this.#queued--;
      batch.push(next);
      count += next.texts.length;
      if (!batching) break;
    }
    lane.running = true;
    const done = this.#runBatch(model, batch).finally(() => {
      lane.running = false;
      this.#inFlight.delete(done);
      this.#pump(model);
    });
    this.#inFlight.add(done);
  }

  async #runBatch(model: M, batch: readonly Job[]): Promise<void> {
    const live = batch.filter((j) => !j.settled);
    if (live.length === 0) return;
    const texts = live.flatMap((j) => j.texts);
    this.#stats.pipelineCalls++;
    this.#stats.requests += live.length;
    this.#stats.largestBatch = Math.max(this.#stats.largestBatch, texts.length);
    try {
      const results = await this.#call(model, texts);
      let offset = 0;
      for (const job of live) {
        job.resolve(results.slice(offset, offset + job.texts.length));
        offset += job.texts.length;
      }
    } catch (cause) {
      const err = this.#failure(model, cause);
      for (const job of live) job.reject(err);
    }
  }
}

export function cancelled(): CloisterError {
  return new CloisterError('CANCELLED', 'the request was cancelled');
}
