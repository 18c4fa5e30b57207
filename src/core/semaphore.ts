/**
 * A FIFO semaphore with a bounded wait queue: at most `max` holders at once; up to
 * `maxQueued` more wait in order; any further acquire is refused at once with the caller's
 * OVERLOADED error instead of growing an unbounded backlog. A waiter whose signal aborts
 * leaves the queue at once (CANCELLED). Used by the upstream engine's gate and by the
 * generation engine's slots and steps.
 */
import { CloisterError } from '../errors.js';

interface Waiter {
  readonly resolve: (release: () => void) => void;
  readonly reject: (err: CloisterError) => void;
  readonly signal: AbortSignal;
  readonly onAbort: () => void;
}

function cancelled(): CloisterError {
  return new CloisterError('CANCELLED', 'request cancelled');
}

export class FifoSemaphore {
  readonly #max: number;
  readonly #maxQueued: number;
  readonly #overloaded: () => CloisterError;
  #active = 0;
  readonly #queue: Waiter[] = [];

  /** `overloaded`: the error for an acquire that finds the queue full (names the limit). */
  constructor(max: number, maxQueued: number, overloaded: () => CloisterError) {
    this.#max = max;
    this.#maxQueued = maxQueued;
    this.#overloaded = overloaded;
  }

  get active(): number {
    return this.#active;
  }

  get queued(): number {
    return this.#queue.length;
  }

  /** Resolves with a release function (call it exactly once); rejects OVERLOADED or CANCELLED. */
  acquire(signal: AbortSignal): Promise<() => void> {
    if (signal.aborted) return Promise.reject(cancelled());
    if (this.#active < this.#max && this.#queue.length === 0) {
      this.#active++;
      return Promise.resolve(this.#releaser());
    }
    if (this.#queue.length >= this.#maxQueued) return Promise.reject(this.#overloaded());
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

  /** Refuses every waiter (closing). */
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
