/**
 * Next-token choice: OpenAI presence/frequency penalties, then greedy (temperature 0) or
 * seeded sampling with temperature, top-k and top-p. Deterministic for a given seed: the PRNG
 * is the engine's own (not Math.random, not the library's), and every tie is broken by the
 * lower token id.
 */

/** A small seeded PRNG (splitmix32 over the seed's two 32-bit halves); not for cryptography. */
export class SamplingRng {
  #state: number;

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new RangeError('seed must be a safe integer');
    const lo = seed >>> 0;
    const hi = Math.floor(seed / 2 ** 32) >>> 0;
    this.#state = (lo ^ Math.imul(hi, 0x9e3779b1)) >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x9e3779b9) >>> 0;
    let z = this.#state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return ((z ^ (z >>> 16)) >>> 0) / 4294967296;
  }
}

export interface SamplingParams {
  /** 0: greedy. */
  readonly temperature: number;
  /** 1: off. */
  readonly topP: number;
  /** 0: off. */
  readonly topK: number;
  readonly presencePenalty: number;
  readonly frequencyPenalty: number;
}

/**
 * Tokens below this probability (after temperature) are not candidates for top-p/top-k
 * sampling: sorting a 150k vocabulary every step would cost more than the model step. Their
 * mass together is at most vocabSize * 1e-9 (0.00015 for 150k tokens).
 */
export const CANDIDATE_FLOOR = 1e-9;

/** logits[id] -= count(id) * frequency + presence, for every id generated so far (in place). */
export function applyPenalties(logits: Float32Array, counts: ReadonlyMap<number, number>, p: SamplingParams): void {
  if (p.presencePenalty === 0 && p.frequencyPenalty === 0) return;
  for (const [id, n] of counts) {
    if (id >= 0 && id < logits.length) logits[id] = (logits[id] ?? 0) - n * p.frequencyPenalty - p.presencePenalty;
  }
}

/** Index of the largest logit; the lowest index on ties. */
export function argmax(logits: Float32Array): number {
  let best = 0;
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const x = logits[i] as number;
    if (x > max) {
      max = x;
      best = i;
    }
  }
  return best;
}

/** Chooses the next token from (penalised) logits. */
export function chooseToken(logits: Float32Array, p: SamplingParams, rng: SamplingRng): number {
  if (p.temperature === 0) return argmax(logits);
  const max = logits[argmax(logits)] as number;
  const scale = 1 / p.temperature;
  // Softmax with temperature; candidates above the floor.
  let sum = 0;
  const weights = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) {
    const w = Math.exp(((logits[i] as number) - max) * scale);
    weights[i] = w;
    sum += w;
  }
  const ids: number[] = [];
  for (let i = 0; i < weights.length; i++) if ((weights[i] as number) / sum >= CANDIDATE_FLOOR) ids.push(i);
  ids.sort((a, b) => (weights[b] as number) - (weights[a] as number) || a - b);
  let keep = ids.length;
  if (p.topK > 0) keep = Math.min(keep, p.topK);
  if (p.topP < 1) {
    let mass = 0;
    for (let i = 0; i < keep; i++) {
      mass += (weights[ids[i] as number] as number) / sum;
      if (mass >= p.topP) {
        keep = i + 1;
        break;
      }
    }
  }
  let kept = 0;
  for (let i = 0; i < keep; i++) kept += weights[ids[i] as number] as number;
  let u = rng.next() * kept;
  for (let i = 0; i < keep; i++) {
    u -= weights[ids[i] as number] as number;
    if (u < 0) return ids[i] as number;
  }
  return ids[keep - 1] as number;
}
