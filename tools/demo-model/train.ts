/**
 * Training for the demo classifier: a fastText-style model (Joulin et al. 2016, "Bag of Tricks
 * for Efficient Text Classification") - token embeddings, masked mean over the sequence
 * (including [CLS] and [SEP], exactly as the ONNX graph does), then a linear layer and softmax.
 * Plain SGD on cross-entropy with a seeded shuffle; float64 while training, weights rounded to
 * float32 at the end (what the ONNX file stores), and accuracy is measured on the rounded
 * weights so the recorded number is the shipped model's.
 */
import { SeededRng } from './rng.js';

export interface TrainConfig {
  readonly dim: number;
  readonly epochs: number;
  readonly learningRate: number;
  readonly l2: number;
  readonly seed: number;
}

export const DEFAULT_TRAIN_CONFIG: TrainConfig = {
  dim: 32,
  epochs: 40,
  learningRate: 0.5,
  l2: 1e-5,
  seed: 0xc0ffee,
};

export interface Example {
  readonly ids: readonly number[];
  readonly label: number;
}

/** Weights of the trained model, row-major float32: embeddings [V, D], weight [D, C], bias [C]. */
export interface ClassifierWeights {
  readonly vocabSize: number;
  readonly dim: number;
  readonly numLabels: number;
  readonly embeddings: Float32Array;
  readonly weight: Float32Array;
  readonly bias: Float32Array;
}

function pooled(emb: ArrayLike<number>, dim: number, ids: readonly number[], out: Float64Array): void {
  out.fill(0);
  for (const t of ids) {
    const base = t * dim;
    for (let d = 0; d < dim; d++) out[d] = (out[d] ?? 0) + (emb[base + d] ?? 0);
  }
  const n = Math.max(ids.length, 1);
  for (let d = 0; d < dim; d++) out[d] = (out[d] ?? 0) / n;
}

function logitsOf(
  h: Float64Array,
  weight: ArrayLike<number>,
  bias: ArrayLike<number>,
  dim: number,
  numLabels: number,
  out: Float64Array,
): void {
  for (let c = 0; c < numLabels; c++) {
    let z = bias[c] ?? 0;
    for (let d = 0; d < dim; d++) z += (h[d] ?? 0) * (weight[d * numLabels + c] ?? 0);
    out[c] = z;
  }
}

function softmaxInPlace(z: Float64Array): void {
  let max = -Infinity;
  for (const v of z) max = Math.max(max, v);
  let sum = 0;
  for (let i = 0; i < z.length; i++) {
    const e = Math.exp((z[i] ?? 0) - max);
    z[i] = e;
    sum += e;
  }
  for (let i = 0; i < z.length; i++) z[i] = (z[i] ?? 0) / sum;
}

export function trainClassifier(
  examples: readonly Example[],
  vocabSize: number,
  numLabels: number,
  config: TrainConfig = DEFAULT_TRAIN_CONFIG,
): ClassifierWeights {
  const { dim, epochs, learningRate, l2 } = config;
  const rng = new SeededRng(config.seed);
  const emb = new Float64Array(vocabSize * dim);
  for (let i = 0; i < emb.length; i++) emb[i] = (rng.next() - 0.5) * 0.1;
  const weight = new Float64Array(dim * numLabels);
  const limit = Math.sqrt(6 / (dim + numLabels));
  for (let i = 0; i < weight.length; i++) weight[i] = (rng.next() * 2 - 1) * limit;
  const bias = new Float64Array(numLabels);

  const h = new Float64Array(dim);
  const z = new Float64Array(numLabels);
  const dh = new Float64Array(dim);
  const order = examples.map((_, i) => i);
  const totalSteps = epochs * examples.length;
  let step = 0;
  for (let epoch = 0; epoch < epochs; epoch++) {
    rng.shuffle(order);
    for (const idx of order) {
      const ex = examples[idx];
      if (ex === undefined) continue;
      // Linear learning-rate decay to zero, as fastText does.
      const lr = learningRate * (1 - step / totalSteps);
      step++;
      pooled(emb, dim, ex.ids, h);
      logitsOf(h, weight, bias, dim, numLabels, z);
      softmaxInPlace(z);
      z[ex.label] = (z[ex.label] ?? 0) - 1; // dLoss/dlogits = p - onehot
      dh.fill(0);
      for (let d = 0; d < dim; d++) {
        for (let c = 0; c < numLabels; c++) {
          const k = d * numLabels + c;
          const w = weight[k] ?? 0;
          dh[d] = (dh[d] ?? 0) + w * (z[c] ?? 0);
          weight[k] = w - lr * ((h[d] ?? 0) * (z[c] ?? 0) + l2 * w);
        }
      }
      for (let c = 0; c < numLabels; c++) bias[c] = (bias[c] ?? 0) - lr * (z[c] ?? 0);
      const scale = lr / Math.max(ex.ids.length, 1);
      for (const t of ex.ids) {
        const base = t * dim;
        for (let d = 0; d < dim; d++) emb[base + d] = (emb[base + d] ?? 0) - scale * (dh[d] ?? 0);
      }
    }
  }
  return {
    vocabSize,
    dim,
    numLabels,
    embeddings: Float32Array.from(emb),
    weight: Float32Array.from(weight),
    bias: Float32Array.from(bias),
  };
}

/** Class probabilities of the (float32) model for one token sequence. */
export function predictProbabilities(w: ClassifierWeights, ids: readonly number[]): number[] {
  const h = new Float64Array(w.dim);
  const z = new Float64Array(w.numLabels);
  pooled(w.embeddings, w.dim, ids, h);
  logitsOf(h, w.weight, w.bias, w.dim, w.numLabels, z);
  softmaxInPlace(z);
  return [...z];
}

function argmax(values: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if ((values[i] ?? -Infinity) > (values[best] ?? -Infinity)) best = i;
  return best;
}

export function accuracy(w: ClassifierWeights, examples: readonly Example[]): number {
  if (examples.length === 0) return 0;
  let correct = 0;
  for (const ex of examples) if (argmax(predictProbabilities(w, ex.ids)) === ex.label) correct++;
  return correct / examples.length;
}
