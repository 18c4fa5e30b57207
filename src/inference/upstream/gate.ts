/**
 * Bounded concurrency with a bounded wait queue: at most `maxConcurrency` requests run at
 * the engine; up to `maxQueued` more wait; any further request is refused at once with
 * OVERLOADED instead of growing an unbounded backlog.
 */
import { CloisterError } from '../../errors.js';

interface Waiter {
  readonly resolve: (release: () => void) => void;
  readonly reject: (err: CloisterError) => void;
  readonly signal: AbortSignal;
  readonly onAbort: () => void;
}

export class ConcurrencyGate {
  readonly #max: number;
  readonly #maxQueued: number;
  #active = 0;
  readonly #queue: Waiter[] = [];

  constructor(maxConcurrency: number, maxQueued: number) {
    this.#max = maxConcurrency;
    this.#maxQueued = maxQueued;
  }

  get active(): number {
    return this.#active;
  }

  get queued(): number {
    return this.#queue.length;
  }

  /** Resolves with a release function (call it exactly once); rejects OVERLOADED or CANCELLED. */
  acquire(signal: AbortSignal): Promise<() => void> {
    if (signal.aborted) return Promise.reject(new CloisterError('CANCELLED', 'request cancelled'));
    if (this.#active < this.#max) {
      this.#active++;
      return Promise.resolve(this.#releaser());
    }
    if (this.#queue.length >= this.#maxQueued) {
      return Promise.reject(new CloisterError('OVERLOADED', 'upstream engine queue is full', {
        detail: { limit: 'maxQueued', max: this.#maxQueued },
      }));
    }
    return new Promise<() => void>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        signal,
        onAbort: () => {
          const i = this.#queue.indexOf(waiter);
          if (i !== -1) this.#queue.splice(i, 1);
          reject(new CloisterError('CANCELLED', 'request cancelled'));
        },
      };
      signal.addEventListener('abort', waiter.onAbort, { once: true });
      this.#queue.push(waiter);
    });
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
