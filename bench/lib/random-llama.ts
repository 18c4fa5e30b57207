/**
 * A llama-architecture decoder with random weights, in the HF/Optimum layout, for
 * bench:generate: random weights cost exactly what trained ones do. Real blocks: RMSNorm,
 * rotary position embeddings, grouped-query attention with a KV cache (past_key_values.N /
 * present.N, [batch, kv_heads, sequence, head_dim]), causal and attention masks, SwiGLU MLP,
 * final norm and LM head. The default shape is SmolLM2-135M's (HuggingFaceTB/SmolLM2-135M:
 * hidden 576, 30 layers, 9 heads, 3 KV heads, MLP 1536, vocabulary 49 152), the largest
 * common small model whose fp32 weights fit one protobuf (< 2 GiB) without external data.
 * Variants: fp32 (onnx/model.onnx) and q8 (onnx/model_quantized.onnx, quantize_dynamic's form).
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { CLS_ID, SEP_ID, SPECIAL_TOKENS, tokenizerConfigJson, tokenizerJson } from '../../tools/demo-model/tokenizer.js';
import { encodeOnnxModel, int64Raw, ONNX_FLOAT, ONNX_INT64, ONNX_INT8, type NodeSpec, type TensorInit, type ValueSpec } from '../../tools/demo-model/onnx-proto.js';

export interface LlamaShape {
  readonly hidden: number;
  readonly layers: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly intermediate: number;
  readonly vocab: number;
  readonly maxPositions: number;
}

export const SMOLLM2_135M: LlamaShape = { hidden: 576, layers: 30, heads: 9, kvHeads: 3, intermediate: 1536, vocab: 49_152, maxPositions: 8192 };

/** The weights' generator (also used by random-llama-gguf.ts to write the same weights). */
export function randomFloats(n: number, std: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    // Uniform in [-std*sqrt(3), std*sqrt(3)): the variance of N(0, std^2).
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * std * 1.732;
  }
  return out;
}

function f32(name: string, dims: number[], data: Float32Array): TensorInit {
  return { name, dims, dataType: ONNX_FLOAT, raw: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}


/**
 * Symmetric per-tensor int8 quantization of a weight, as onnxruntime's quantize_dynamic
 * (weight_type QInt8, the q8 `model_quantized.onnx` of Optimum and transformers.js) does:
 * scale = max|w| / 127, zero point 0.
 */
export function quantizeInt8(w: Float32Array): { q: Int8Array; scale: number } {
  let max = 0;
  for (const x of w) max = Math.max(max, Math.abs(x));
  const scale = max === 0 ? 1 : max / 127;
  const q = new Int8Array(w.length);
  for (let i = 0; i < w.length; i++) q[i] = Math.max(-127, Math.min(127, Math.round((w[i] as number) / scale)));
  return { q, scale };
}

/**
 * The random llama's graph. `dtype` q8: every linear layer (the MatMuls with a weight; the
 * embedding Gather stays fp32) is written as quantize_dynamic writes it: DynamicQuantizeLinear
 * of the activation, MatMulInteger against int8 weights, Cast, and a Mul by the product of the
 * two scales (ONNX Runtime fuses these into its int8 kernels).
 */
export function randomLlamaOnnx(shape: LlamaShape, seed = 1, std = 0.02, dtype: 'fp32' | 'q8' = 'fp32'): Uint8Array {
  const { hidden, layers, heads, kvHeads, intermediate, vocab } = shape;
  const d = hidden / heads;
  const groups = heads / kvHeads;
  const nodes: NodeSpec[] = [];
  const inits: TensorInit[] = [];
  let k = 0;
  const node = (opType: string, inputs: string[], outputs: string[] | string, attrs: Partial<Pick<NodeSpec, 'intAttrs' | 'intsAttrs'>> = {}): string => {
    const outs = Array.isArray(outputs) ? outputs : [outputs];
    nodes.push({ name: `n${k++}`, opType, inputs, outputs: outs, ...attrs });
    return outs[0] as string;
  };
  const i64 = (name: string, values: number[], dims: number[] = [values.length]): string => {
    inits.push({ name, dims, dataType: ONNX_INT64, raw: int64Raw(values) });
    return name;
  };
  const scalar = (name: string, v: number): string => {
    inits.push(f32(name, [], Float32Array.from([v])));
    return name;
  };
  let seedN = seed;
  const weight = (name: string, dims: number[]): string => {
    inits.push(f32(name, dims, randomFloats(dims.reduce((a, b) => a * b, 1), std, seedN++)));
    return name;
  };
  /** x [.., in] times the weight `name` [in, out], fp32 or as quantize_dynamic writes it. */
  const linear = (x: string, name: string, dims: [number, number], out: string): string => {
    if (dtype === 'fp32') return node('MatMul', [x, weight(name, dims)], out);
    const { q, scale } = quantizeInt8(randomFloats(dims[0] * dims[1], std, seedN++));
    inits.push({ name: `${name}_quantized`, dims, dataType: ONNX_INT8, raw: new Uint8Array(q.buffer, q.byteOffset, q.byteLength) });
    inits.push({ name: `${name}_zero_point`, dims: [], dataType: ONNX_INT8, raw: new Uint8Array(1) });
    scalar(`${name}_scale`, scale);
    node('DynamicQuantizeLinear', [x], [`${out}.xq`, `${out}.xs`, `${out}.xz`]);
    const acc = node('MatMulInteger', [`${out}.xq`, `${name}_quantized`, `${out}.xz`, `${name}_zero_point`], `${out}.i32`);
    const f = node('Cast', [acc], `${out}.f`, { intAttrs: { to: ONNX_FLOAT } });
    const sc = node('Mul', [`${out}.xs`, `${name}_scale`], `${out}.scale`);
    return node('Mul', [f, sc], out);
  };
  const ones = (name: string, n: number): string => {
    inits.push(f32(name, [n], new Float32Array(n).fill(1)));
    return name;
  };
  scalar('eps', 1e-5);
  scalar('neg_big', -1e9);
  scalar('scale', 1 / Math.sqrt(d));
  i64('ax_last', [-1]);
  i64('ax_2', [2]);
  i64('axes_123', [1, 2, 3]);
  i64('ax_1', [1]);
  i64('idx_2', [2], []);
  i64('idx_1', [1], []);
  i64('zero', [0], []);
  i64('one', [1], []);
  i64('half_split', [d / 2, d / 2]);
  i64('shape_q', [0, 0, heads, d]);
  i64('shape_kv', [0, 0, kvHeads, d]);
  i64('shape_q5', [0, kvHeads, groups, -1, d]);
  i64('shape_out', [0, 0, hidden]);
  const invFreq = Float32Array.from({ length: d / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / d));
  inits.push(f32('inv_freq', [d / 2], invFreq));

  // Rotary tables [B, 1, S, D] from position_ids.
  const pos = node('Cast', ['position_ids'], 'pos_f', { intAttrs: { to: ONNX_FLOAT } });
  const pos3 = node('Unsqueeze', [pos, 'ax_last'], 'pos3');
  const ang = node('Mul', [pos3, 'inv_freq'], 'ang');
  const emb = node('Concat', [ang, ang], 'emb', { intAttrs: { axis: -1 } });
  const cos = node('Unsqueeze', [node('Cos', [emb], 'cos3'), 'ax_1'], 'cos');
  const sin = node('Unsqueeze', [node('Sin', [emb], 'sin3'), 'ax_1'], 'sin');
  // Masks: causal [S, T] and attention [B, 1, 1, 1, T].
  const idsShape = node('Shape', ['input_ids'], 'ids_shape');
  const sLen = node('Gather', [idsShape, 'idx_1'], 's_len', { intAttrs: { axis: 0 } });
  const maskShape = node('Shape', ['attention_mask'], 'mask_shape');
  const tLen = node('Gather', [maskShape, 'idx_1'], 't_len', { intAttrs: { axis: 0 } });
  const pLen = node('Sub', [tLen, sLen], 'p_len');
  const kIdx = node('Range', ['zero', tLen, 'one'], 'k_idx');
  const qIdx = node('Unsqueeze', [node('Range', [pLen, tLen, 'one'], 'q_idx'), 'ax_1'], 'q_col');
  const causal = node('LessOrEqual', [kIdx, qIdx], 'causal');
  const maskB = node('Unsqueeze', [node('Cast', ['attention_mask'], 'mask_bool', { intAttrs: { to: 9 } }), 'axes_123'], 'mask5');
  const allowed = node('And', [causal, maskB], 'allowed');

  const rmsNorm = (x: string, w: string, p: string): string => {
    const sq = node('Mul', [x, x], `${p}.sq`);
    const mean = node('ReduceMean', [sq], `${p}.mean`, { intsAttrs: { axes: [-1] }, intAttrs: { keepdims: 1 } });
    const rstd = node('Reciprocal', [node('Sqrt', [node('Add', [mean, 'eps'], `${p}.var`)], `${p}.std`)], `${p}.rstd`);
    return node('Mul', [node('Mul', [x, rstd], `${p}.normed`), w], `${p}.out`);
  };
  const rope = (x: string, p: string): string => {
    node('Split', [x, 'half_split'], [`${p}.x1`, `${p}.x2`], { intAttrs: { axis: -1 } });
    const rot = node('Concat', [node('Neg', [`${p}.x2`], `${p}.nx2`), `${p}.x1`], `${p}.rot`, { intAttrs: { axis: -1 } });
    return node('Add', [node('Mul', [x, cos], `${p}.xc`), node('Mul', [rot, sin], `${p}.rs`)], `${p}.out`);
  };

  let h = node('Gather', [weight('model.embed_tokens.weight', [vocab, hidden]), 'input_ids'], 'h0');
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}`;
    const x = rmsNorm(h, ones(`${p}.input_layernorm.weight`, hidden), `${p}.ln1`);
    const q = node('Reshape', [linear(x, `${p}.q_proj`, [hidden, heads * d], `${p}.q`), 'shape_q'], `${p}.q4`);
    const kk = node('Reshape', [linear(x, `${p}.k_proj`, [hidden, kvHeads * d], `${p}.k`), 'shape_kv'], `${p}.k4`);
    const v = node('Reshape', [linear(x, `${p}.v_proj`, [hidden, kvHeads * d], `${p}.v`), 'shape_kv'], `${p}.v4`);
    const qh = rope(node('Transpose', [q], `${p}.qh`, { intsAttrs: { perm: [0, 2, 1, 3] } }), `${p}.qr`);
    const kh = rope(node('Transpose', [kk], `${p}.kh`, { intsAttrs: { perm: [0, 2, 1, 3] } }), `${p}.kr`);
    const vh = node('Transpose', [v], `${p}.vh`, { intsAttrs: { perm: [0, 2, 1, 3] } });
    const kAll = node('Concat', [`past_key_values.${l}.key`, kh], `present.${l}.key`, { intAttrs: { axis: 2 } });
    const vAll = node('Concat', [`past_key_values.${l}.value`, vh], `present.${l}.value`, { intAttrs: { axis: 2 } });
    // Grouped-query attention: queries [B, kvH, G, S, D] against keys [B, kvH, 1, D, T].
    const q5 = node('Reshape', [qh, 'shape_q5'], `${p}.q5`);
    const kT = node('Transpose', [node('Unsqueeze', [kAll, 'ax_2'], `${p}.k5`)], `${p}.k5t`, { intsAttrs: { perm: [0, 1, 2, 4, 3] } });
    const scores = node('Mul', [node('MatMul', [q5, kT], `${p}.qk`), 'scale'], `${p}.scores`);
    const probs = node('Softmax', [node('Where', [allowed, scores, 'neg_big'], `${p}.masked`)], `${p}.probs`, { intAttrs: { axis: -1 } });
    const ctx = node('MatMul', [probs, node('Unsqueeze', [vAll, 'ax_2'], `${p}.v5`)], `${p}.ctx5`);
    const merged = node('Reshape', [node('Transpose', [ctx], `${p}.ctxt`, { intsAttrs: { perm: [0, 3, 1, 2, 4] } }), 'shape_out'], `${p}.ctx`);
    h = node('Add', [h, linear(merged, `${p}.o_proj`, [heads * d, hidden], `${p}.attn`)], `${p}.h1`);
    const y = rmsNorm(h, ones(`${p}.post_attention_layernorm.weight`, hidden), `${p}.ln2`);
    const gate = linear(y, `${p}.gate_proj`, [hidden, intermediate], `${p}.gate`);
    const silu = node('Mul', [gate, node('Sigmoid', [gate], `${p}.sig`)], `${p}.silu`);
    const up = linear(y, `${p}.up_proj`, [hidden, intermediate], `${p}.up`);
    const down = linear(node('Mul', [silu, up], `${p}.act`), `${p}.down_proj`, [intermediate, hidden], `${p}.down`);
    h = node('Add', [h, down], `${p}.h2`);
  }
  const hn = rmsNorm(h, ones('model.norm.weight', hidden), 'final');
  linear(hn, 'lm_head.weight', [hidden, vocab], 'logits');

  const inputs: ValueSpec[] = [
    { name: 'input_ids', elemType: ONNX_INT64, shape: ['batch_size', 'sequence_length'] },
    { name: 'attention_mask', elemType: ONNX_INT64, shape: ['batch_size', 'total_sequence_length'] },
    { name: 'position_ids', elemType: ONNX_INT64, shape: ['batch_size', 'sequence_length'] },
  ];
  const outputs: ValueSpec[] = [{ name: 'logits', elemType: ONNX_FLOAT, shape: ['batch_size', 'sequence_length', vocab] }];
  for (let l = 0; l < layers; l++) {
    for (const kind of ['key', 'value']) {
      inputs.push({ name: `past_key_values.${l}.${kind}`, elemType: ONNX_FLOAT, shape: ['batch_size', kvHeads, 'past_sequence_length', d] });
      outputs.push({ name: `present.${l}.${kind}`, elemType: ONNX_FLOAT, shape: ['batch_size', kvHeads, 'total_sequence_length', d] });
    }
  }
  return encodeOnnxModel({ name: 'random_llama', docString: 'llama-architecture decoder with random weights (bench:generate)', nodes, initializers: inits, inputs, outputs, metadata: {} }, 'bench');
}

/**
 * Writes the model directory: the random graph, a config.json of the shape, and a WordPiece
 * tokenizer whose vocabulary is the special tokens and the words w0, w1, ... (one per id, so
 * every generated token decodes to text). Prompts are made of those words.
 */
export async function writeRandomLlama(dir: string, shape: LlamaShape, std = 0.02, dtypes: readonly ('fp32' | 'q8')[] = ['fp32']): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(join(dir, 'onnx'), { recursive: true });
  const config = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: shape.vocab,
    hidden_size: shape.hidden,
    intermediate_size: shape.intermediate,
    num_hidden_layers: shape.layers,
    num_attention_heads: shape.heads,
    num_key_value_heads: shape.kvHeads,
    head_dim: shape.hidden / shape.heads,
    max_position_embeddings: shape.maxPositions,
    bos_token_id: CLS_ID,
    eos_token_id: SEP_ID,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: false,
  };
  const vocab = [...SPECIAL_TOKENS, ...Array.from({ length: shape.vocab - SPECIAL_TOKENS.length }, (_, i) => `w${i}`)];
  await writeFile(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  await writeFile(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: SEP_ID, do_sample: false }));
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson(vocab)));
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfigJson()));
  // The file names transformers.js reads for each dtype (src/inference/generation/model.ts).
  if (dtypes.includes('fp32')) await writeFile(join(dir, 'onnx', 'model.onnx'), randomLlamaOnnx(shape, 1, std));
  if (dtypes.includes('q8')) await writeFile(join(dir, 'onnx', 'model_quantized.onnx'), randomLlamaOnnx(shape, 1, std, 'q8'));
}
