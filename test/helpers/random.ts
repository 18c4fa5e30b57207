/** Test-only seeded randomness, so any failing property case reproduces. Not a test file itself. */
import { SeededRng } from '../../tools/demo-model/rng.js';

/** A mulberry32 generator of floats in [0, 1): the same PRNG the demo model build uses. */
export function mulberry32(seed: number): () => number {
  const rng = new SeededRng(seed >>> 0);
  return () => rng.next();
}
