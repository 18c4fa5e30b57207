/**
 * Per-text post-processing of a batched model output, replacing the transformers.js
 * pipelines' own (which ran an ONNX Runtime TopK session per text and allocated a tensor per
 * row). Each function reads only one text's rows, so a text's result cannot depend on what it
 * was batched with; the arithmetic repeats the pipelines' float32 steps in the same order, so
 * the results are the ones the pipelines returned (a test compares them).
 */

export interface LabelScore {
  readonly label: string;
  readonly score: number;
}

export interface TokenEntity {
  readonly entity: string;
  readonly score: number;
  readonly index: number;
  readonly word: string;
}

/**
 * softmax over `logits[offset, offset + n)` into `out` (float32 like the pipeline's
 * `Float32Array.map`: exps rounded to float32, summed in double, quotients rounded).
 */
function softmaxInto(logits: Float32Array, offset: number, n: number, out: Float32Array): void {
  let max = logits[offset] ?? 0;
  for (let k = 1; k < n; k++) {
    const v = logits[offset + k] ?? 0;
    if (v > max) max = v;
  }
  let sum = 0;
  for (let k = 0; k < n; k++) {
    const e = Math.fround(Math.exp((logits[offset + k] ?? 0) - max));
    out[k] = e;
    sum += e;
  }
  for (let k = 0; k < n; k++) out[k] = (out[k] ?? 0) / sum;
}

/**
 * Every label with its softmax score, highest first; equal scores keep label order (the
 * tie rule of ONNX TopK, which the pipeline used). Throws on a non-finite score.
 */
export function rankLabels(logits: Float32Array, row: number, labels: readonly string[], scratch: Float32Array): LabelScore[] {
  const n = labels.length;
  softmaxInto(logits, row * n, n, scratch);
  const order: number[] = [];
  for (let k = 0; k < n; k++) {
    if (!Number.isFinite(scratch[k])) throw new TypeError('classification output is not finite');
    order.push(k);
  }
  order.sort((a, b) => (scratch[b] ?? 0) - (scratch[a] ?? 0) || a - b);
  return order.map((k) => ({ label: labels[k] ?? '', score: scratch[k] ?? 0 }));
}

/**
 * Mean of one text's token vectors over its real tokens, then L2-normalised: the
 * feature-extraction pipeline's `mean_pooling` (double sums, float32 result) and
 * `normalize(2, -1)` (float32 running sum of squares).
 * `hidden` is [batch, seq, dim]; the text's tokens are positions [start, start + length).
 */
export function meanPoolNormalized(hidden: Float32Array, row: number, seq: number, dim: number, start: number, length: number): number[] {
  const pooled = new Float32Array(dim);
  const base = row * seq * dim;
  for (let k = 0; k < dim; k++) {
    let sum = 0;
    for (let j = start; j < start + length; j++) sum += hidden[base + j * dim + k] ?? 0;
    pooled[k] = sum / length;
  }
  let sq = 0;
  for (let k = 0; k < dim; k++) sq = Math.fround(sq + (pooled[k] ?? 0) ** 2);
  const norm = Math.fround(sq ** 0.5);
  const out = new Array<number>(dim);
  for (let k = 0; k < dim; k++) out[k] = Math.fround((pooled[k] ?? 0) / norm);
  return out;
}

/**
 * The token-classification pipeline's "none" aggregation for one text: the top label of
 * each token (first maximum), tokens labelled "O" and tokens that decode to nothing
 * (special tokens) left out. `index` counts from the text's first token.
 */
export function tokenEntities(
  logits: Float32Array,
  row: number,
  seq: number,
  labels: readonly string[],
  ids: ArrayLike<number>,
  start: number,
  decode: (id: number) => string,
  scratch: Float32Array,
): TokenEntity[] {
  const n = labels.length;
  const out: TokenEntity[] = [];
  for (let j = 0; j < ids.length; j++) {
    const offset = (row * seq + start + j) * n;
    let best = 0;
    let max = logits[offset] ?? 0;
    for (let k = 1; k < n; k++) {
      const v = logits[offset + k] ?? 0;
      if (v > max) {
        max = v;
        best = k;
      }
    }
    const entity = labels[best] ?? '';
    if (entity === 'O') continue;
    const word = decode(ids[j] ?? 0);
    if (word === '') continue;
    softmaxInto(logits, offset, n, scratch);
    const score = scratch[best] ?? NaN;
    if (!Number.isFinite(score)) throw new TypeError('token output is not finite');
    out.push({ entity, score, index: j, word });
  }
  return out;
}
