/**
 * How generations share the CPU (docs/GENERATION.md "Sharing the cores"):
 *
 * - Admission: at most `maxActive` generations hold a KV cache at once; up to `maxQueued`
 *   more wait (FIFO); any further request is refused with OVERLOADED. KV memory is therefore
 *   bounded by maxActive * maxKvTokens * (KV bytes per token).
 * - Steps: one model step (a prefill chunk or one decode step) runs at a time, and the
 *   active generations take turns in FIFO order (round robin). Each step uses every ONNX
 *   Runtime intra-op thread: steps never compete for cores (no oversubscription), each
 *   stream's per-token latency stays predictable, and a long prompt is prefilled in chunks
 *   so it delays the others by at most one chunk.
 * - A waiter whose signal aborts leaves the queue at once (CANCELLED).
 */
import { CloisterError } from '../../errors.js';

interface Waiter {
  readonly resolve: (release: () => void) => void;
  readonly reject: (err: CloisterError) => void;
  readonly signal: AbortSignal;
  readonly onAbort: () => void;
}

function cancelled(): CloisterError {
  return new CloisterError('CANCELLED', 'the request was cancelled');
}

/** A FIFO semaphore with an optional bound on waiters. */
export class FifoSemaphore {
  readonly #max: number;
  readonly #maxQueued: number;
  readonly #what: string;
  #active = 0;
  readonly #queue: Waiter[] = [];

  constructor(max: number, maxQueued: number, what: string) {
    this.#max = max;
    this.#maxQueued = maxQueued;
    this.#what = what;
  }

  get active(): number {
    return this.#active;
  }

  get queued(): number {
    return this.#queue.length;
  }

  acquire(signal: AbortSignal): Promise<() => void> {
    if (signal.aborted) return Promise.reject(cancelled());
    if (this.#active < this.#max && this.#queue.length === 0) {
      this.#active++;
      return Promise.resolve(this.#releaser());
    }
    if (this.#queue.length >= this.#maxQueued) {
      return Promise.reject(
        new CloisterError('OVERLOADED', `the generation queue is full (${this.#what} = ${this.#maxQueued})`, {
          detail: { limit: this.#what, max: this.#maxQueued, public: true },
        }),
      );
    }
    return new Promise<() => void>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        signal,
        onAbort: () => {
          const i = this.#queue.indexOf(waiter);
          if (i !== -1) this.#queue.splice(i, 1);
          reject(cancelled());
        },
      };
      signal.addEventListener('abort', waiter.onAbort, { once: true });
      this.#queue.push(waiter);
    });
  }

  /** Refuses every waiter (engine closing). */
  rejectAll(err: CloisterError): void {
    for (const w of this.#queue.splice(0)) {
      w.signal.removeEventListener('abort', w.onAbort);
      w.reject(err);
    }
  }

  #releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.#queue.shift();
      if (next === undefined) {
        this.#active--;
        return;
      }
      next.signal.removeEventListener('abort', next.onAbort);
      next.resolve(this.#releaser());
    };
  }
}
