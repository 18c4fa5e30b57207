/**
 * The random-weight llama of random-llama.ts as a GGUF file (f32 or Q8_0), for the llama.cpp anchor
 * of bench:generate: the same shape and the same weights (the same generator, seeds and
 * order), laid out as llama.cpp's convert_hf_to_gguf.py writes a LlamaForCausalLM:
 * - linear weights as [out, in] (ONNX MatMul holds [in, out]: transposed here);
 * - q_proj and k_proj rows permuted from HF's rotate-half to llama.cpp's interleaved RoPE;
 * - a SentencePiece ("llama") vocabulary of the model's size: the five special tokens, the
 *   words of the ONNX tokenizer at the same ids, and the last 256 ids as byte tokens
 *   (<0x00>..<0xFF>, which llama.cpp's SPM vocabulary expects). The bench feeds token ids, so
 *   the strings only have to load.
 * Tensors are streamed to the file one by one (the 135M shape is 540 MB of fp32).
 * Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (version 3, little endian).
 */
import { open } from 'node:fs/promises';

import { CLS_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS, UNK_ID } from '../../tools/demo-model/tokenizer.js';
import { randomFloats, type LlamaShape } from './random-llama.js';

const ALIGN = 32;
const T_UINT32 = 4;
const T_INT32 = 5;
const T_FLOAT32 = 6;
const T_STRING = 8;
const T_ARRAY = 9;
const GGML_F32 = 0;
const GGML_Q8_0 = 8;
/** llama.cpp's LLAMA_FTYPE_ALL_F32 and LLAMA_FTYPE_MOSTLY_Q8_0. */
const FILE_TYPE = { f32: 0, q8_0: 7 } as const;
/** Q8_0: blocks of 32 values, an fp16 scale then 32 int8 (ggml's block_q8_0, 34 bytes). */
const Q8_BLOCK = 32;
const Q8_BLOCK_BYTES = 34;

export type GgufType = 'f32' | 'q8_0';

/** float32 to IEEE half (round to nearest even), as ggml's GGML_FP32_TO_FP16. */
function toHalf(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0] as number;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) === 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++;
  if ((h & 0x7fff) >= 0x7c00) e = 0x1f;
  return sign | h;
}

/** ggml's quantize_row_q8_0_ref: per block of 32, d = max|x| / 127, q = round(x / d). */
export function quantizeQ8_0(x: Float32Array): Buffer {
  if (x.length % Q8_BLOCK !== 0) throw new Error(`random llama GGUF: Q8_0 needs rows of a multiple of ${Q8_BLOCK} values, got ${x.length}`);
  const out = Buffer.alloc((x.length / Q8_BLOCK) * Q8_BLOCK_BYTES);
  for (let b = 0; b < x.length / Q8_BLOCK; b++) {
    let amax = 0;
    for (let i = 0; i < Q8_BLOCK; i++) amax = Math.max(amax, Math.abs(x[b * Q8_BLOCK + i] as number));
    const d = amax / 127;
    const id = d === 0 ? 0 : 1 / d;
    const at = b * Q8_BLOCK_BYTES;
    out.writeUInt16LE(toHalf(d), at);
    // roundf: halves away from zero.
    for (let i = 0; i < Q8_BLOCK; i++) {
      const v = (x[b * Q8_BLOCK + i] as number) * id;
      out.writeInt8(Math.sign(v) * Math.round(Math.abs(v)), at + 2 + i);
    }
  }
  return out;
}

type Kv =
  | { readonly key: string; readonly u32: number }
  | { readonly key: string; readonly f32: number }
  | { readonly key: string; readonly str: string }
  | { readonly key: string; readonly strs: readonly string[] }
  | { readonly key: string; readonly f32s: Float32Array }
  | { readonly key: string; readonly i32s: Int32Array };

class Writer {
  readonly #chunks: Buffer[] = [];
  #length = 0;
  get length(): number {
    return this.#length;
  }
  bytes(b: Buffer): void {
    this.#chunks.push(b);
    this.#length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.bytes(b);
  }
  u64(v: number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.bytes(b);
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.bytes(b);
  }
  result(): Buffer {
    return Buffer.concat(this.#chunks);
  }
}

function writeKv(w: Writer, kv: Kv): void {
  w.str(kv.key);
  if ('u32' in kv) {
    w.u32(T_UINT32);
    w.u32(kv.u32);
  } else if ('f32' in kv) {
    w.u32(T_FLOAT32);
    const b = Buffer.alloc(4);
    b.writeFloatLE(kv.f32);
    w.bytes(b);
  } else if ('str' in kv) {
    w.u32(T_STRING);
    w.str(kv.str);
  } else if ('strs' in kv) {
    w.u32(T_ARRAY);
    w.u32(T_STRING);
    w.u64(kv.strs.length);
    for (const s of kv.strs) w.str(s);
  } else {
    const arr = 'f32s' in kv ? kv.f32s : kv.i32s;
    w.u32(T_ARRAY);
    w.u32('f32s' in kv ? T_FLOAT32 : T_INT32);
    w.u64(arr.length);
    w.bytes(Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength));
  }
}

interface TensorPlan {
  readonly name: string;
  /** GGUF dimensions, innermost first (ne[0] is the row length). */
  readonly ne: readonly number[];
  readonly data: () => Float32Array;
}

/** [rows, cols] row-major to [cols, rows] row-major. */
function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c] as number;
  return out;
}

/** convert_hf_to_gguf's LlamaModel.permute on [out, in] rows: rotate-half pairs to interleaved pairs. */
function permuteRope(w: Float32Array, nHead: number, headDim: number, cols: number): Float32Array {
  const out = new Float32Array(w.length);
  const half = headDim / 2;
  for (let h = 0; h < nHead; h++) {
    for (let j = 0; j < 2; j++) {
      for (let i = 0; i < half; i++) {
        const from = (h * headDim + j * half + i) * cols;
        const to = (h * headDim + 2 * i + j) * cols;
        out.set(w.subarray(from, from + cols), to);
      }
    }
  }
  return out;
}

/**
 * Writes `path`: the GGUF of randomLlamaOnnx(shape, seed, std). `type` q8_0: every matrix
 * (embeddings, linear layers, output) in Q8_0, the norms in f32, as convert_hf_to_gguf.py
 * --outtype q8_0 writes them.
 */
export async function writeRandomLlamaGguf(path: string, shape: LlamaShape, seed = 1, std = 0.02, type: GgufType = 'f32'): Promise<void> {
  const { hidden, layers, heads, kvHeads, intermediate, vocab } = shape;
  const d = hidden / heads;
  if (vocab < SPECIAL_TOKENS.length + 256) throw new Error(`random llama GGUF: vocabulary ${vocab} below ${SPECIAL_TOKENS.length + 256} (special and byte tokens)`);
  // The seeds in randomLlamaOnnx's order: embeddings, then per layer q, k, v, o, gate, up, down, then the LM head.
  const seedOf = (layer: number, which: number): number => seed + 1 + layer * 7 + which;
  const linear = (s: number, inDim: number, outDim: number): Float32Array => transpose(randomFloats(inDim * outDim, std, s), inDim, outDim);
  const ones = (n: number) => (): Float32Array => new Float32Array(n).fill(1);
  const tensors: TensorPlan[] = [{ name: 'token_embd.weight', ne: [hidden, vocab], data: () => randomFloats(vocab * hidden, std, seed) }];
  for (let l = 0; l < layers; l++) {
    const p = `blk.${l}`;
    tensors.push(
      { name: `${p}.attn_norm.weight`, ne: [hidden], data: ones(hidden) },
      { name: `${p}.attn_q.weight`, ne: [hidden, heads * d], data: () => permuteRope(linear(seedOf(l, 0), hidden, heads * d), heads, d, hidden) },
      { name: `${p}.attn_k.weight`, ne: [hidden, kvHeads * d], data: () => permuteRope(linear(seedOf(l, 1), hidden, kvHeads * d), kvHeads, d, hidden) },
      { name: `${p}.attn_v.weight`, ne: [hidden, kvHeads * d], data: () => linear(seedOf(l, 2), hidden, kvHeads * d) },
      { name: `${p}.attn_output.weight`, ne: [heads * d, hidden], data: () => linear(seedOf(l, 3), heads * d, hidden) },
      { name: `${p}.ffn_norm.weight`, ne: [hidden], data: ones(hidden) },
      { name: `${p}.ffn_gate.weight`, ne: [hidden, intermediate], data: () => linear(seedOf(l, 4), hidden, intermediate) },
      { name: `${p}.ffn_up.weight`, ne: [hidden, intermediate], data: () => linear(seedOf(l, 5), hidden, intermediate) },
      { name: `${p}.ffn_down.weight`, ne: [intermediate, hidden], data: () => linear(seedOf(l, 6), intermediate, hidden) },
    );
  }
  tensors.push(
    { name: 'output_norm.weight', ne: [hidden], data: ones(hidden) },
    { name: 'output.weight', ne: [hidden, vocab], data: () => linear(seedOf(layers, 0), hidden, vocab) },
  );

  const words = vocab - SPECIAL_TOKENS.length - 256;
  const tokens = [...SPECIAL_TOKENS, ...Array.from({ length: words }, (_, i) => `\u2581w${i}`), ...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)];
  // Token types: 1 normal, 2 unknown, 3 control, 6 byte.
  const types = Int32Array.from(tokens, (_, i) => (i === UNK_ID ? 2 : i < SPECIAL_TOKENS.length ? 3 : i >= SPECIAL_TOKENS.length + words ? 6 : 1));
  const kvs: Kv[] = [
    { key: 'general.architecture', str: 'llama' },
    { key: 'general.name', str: 'cloister random llama (bench:generate)' },
    { key: 'general.file_type', u32: FILE_TYPE[type] },
    { key: 'llama.vocab_size', u32: vocab },
    { key: 'llama.context_length', u32: shape.maxPositions },
    { key: 'llama.embedding_length', u32: hidden },
    { key: 'llama.block_count', u32: layers },
    { key: 'llama.feed_forward_length', u32: intermediate },
    { key: 'llama.attention.head_count', u32: heads },
    { key: 'llama.attention.head_count_kv', u32: kvHeads },
    { key: 'llama.rope.dimension_count', u32: d },
    { key: 'llama.rope.freq_base', f32: 10000 },
    { key: 'llama.attention.layer_norm_rms_epsilon', f32: 1e-5 },
    { key: 'tokenizer.ggml.model', str: 'llama' },
    { key: 'tokenizer.ggml.tokens', strs: tokens },
    { key: 'tokenizer.ggml.scores', f32s: new Float32Array(vocab) },
    { key: 'tokenizer.ggml.token_type', i32s: types },
    { key: 'tokenizer.ggml.bos_token_id', u32: CLS_ID },
    { key: 'tokenizer.ggml.eos_token_id', u32: SEP_ID },
    { key: 'tokenizer.ggml.unknown_token_id', u32: UNK_ID },
    { key: 'tokenizer.ggml.padding_token_id', u32: PAD_ID },
  ];

  const head = new Writer();
  head.bytes(Buffer.from('GGUF', 'latin1'));
  head.u32(3);
  head.u64(tensors.length);
  head.u64(kvs.length);
  for (const kv of kvs) writeKv(head, kv);
  const pad = (n: number): number => (ALIGN - (n % ALIGN)) % ALIGN;
  const quantized = (t: TensorPlan): boolean => type === 'q8_0' && t.ne.length === 2;
  let offset = 0;
  for (const t of tensors) {
    head.str(t.name);
    head.u32(t.ne.length);
    for (const n of t.ne) head.u64(n);
    head.u32(quantized(t) ? GGML_Q8_0 : GGML_F32);
    head.u64(offset);
    const n = t.ne.reduce((a, b) => a * b, 1);
    offset += quantized(t) ? (n / Q8_BLOCK) * Q8_BLOCK_BYTES : n * 4;
    offset += pad(offset);
  }
  const file = await open(path, 'w');
  try {
    await file.write(head.result());
    await file.write(Buffer.alloc(pad(head.length)));
    for (const t of tensors) {
      const data = t.data();
      const n = t.ne.reduce((a, b) => a * b, 1);
      if (data.length !== n) throw new Error(`random llama GGUF: tensor ${t.name} has ${data.length} values, expected ${n}`);
      const bytes = quantized(t) ? quantizeQ8_0(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      await file.write(bytes);
      await file.write(Buffer.alloc(pad(bytes.byteLength)));
    }
  } finally {
    await file.close();
  }
}
