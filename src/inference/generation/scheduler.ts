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
import { FifoSemaphore } from '../../core/semaphore.js';

/** A FIFO semaphore whose full queue is refused OVERLOADED naming `limit` (a public, content-free message). */
export function generationSemaphore(max: number, maxQueued: number, limit: string): FifoSemaphore {
  return new FifoSemaphore(max, maxQueued, () =>
    new CloisterError('OVERLOADED', `the generation queue is full (${limit} = ${maxQueued})`, { detail: { limit, max: maxQueued, public: true } }),
  );
}

export type { FifoSemaphore };
