/**
 * Bounded concurrency with a bounded wait queue: at most `maxConcurrency` requests run at
 * the engine; up to `maxQueued` more wait; any further request is refused at once with
 * OVERLOADED instead of growing an unbounded backlog (core/semaphore.ts).
 */
import { CloisterError } from '../../errors.js';
import { FifoSemaphore } from '../../core/semaphore.js';

export class ConcurrencyGate extends FifoSemaphore {
  constructor(maxConcurrency: number, maxQueued: number) {
    super(maxConcurrency, maxQueued, () => new CloisterError('OVERLOADED', 'upstream engine queue is full', { detail: { limit: 'maxQueued', max: maxQueued } }));
  }
}
