/**
 * demo-lm: a small generative model in the Hugging Face / Optimum decoder layout, built
 * offline from data/clinical-notes.jsonl in well under a second, no download.
 *
 *   <outDir>/lm/  config.json generation_config.json tokenizer.json tokenizer_config.json
 *                 training.json onnx/model.onnx
 *
 * What it is (honest construction, no training loop): a one-layer, one-head decoder whose
 * weights are count statistics of the training notes.
 * - Tokens: the demo WordPiece vocabulary (every training word whole), `[CLS]` as BOS and
 *   `[SEP]` as EOS; each training note is `[CLS] words... [SEP]`.
 * - The token embedding, read straight into the logits, is the smoothed bigram
 *   log-probability table: logits += log P(next | current token).
 * - One attention head with positional (RoPE-like, multi-frequency cos/sin) queries and keys
 *   attends to the PREVIOUS token: the query of position p matches the key of position p-1
 *   with a score margin of at least `ATTN_SCALE` over every other position. Its value vector
 *   is the skip-gram log-ratio row of that token: logits += LAMBDA * (log P(x_{t+2} | x_t) - log P(x_{t+2})).
 *   The two together approximate a trigram model.
 * - The key/value cache is real: `past_key_values.0.key/value` in, `present.0.key/value` out,
 *   [batch, 1, sequence, head_dim]; the graph applies the causal mask and the attention mask.
 *
 * It speaks in the notes' words ("... radiating to the left arm. ecg shows ..."), nothing
 * more: it is a demonstration of the serving path, not a clinical model.
 */
import { createHash } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { ClinicalNote } from './dataset.js';
import {
  encodeOnnxModel,
  float32Raw,
  int64Raw,
  ONNX_FLOAT,
  ONNX_INT64,
  type NodeSpec,
  type TensorInit,
  type ValueSpec,
} from './onnx-proto.js';
import { buildVocab, CLS, CLS_ID, MASK, PAD, PAD_ID, SEP, SEP_ID, tokenizerJson, UNK, UNK_ID, WordPieceTokenizer } from './tokenizer.js';

/** Bumped when the demo-lm output format changes. */
export const DEMO_LM_VERSION = '1';
/** Longest sequence (prompt + generated tokens) demo-lm is built for. */
export const DEMO_LM_MAX_POSITIONS = 4096;
/** Frequencies of the positional queries/keys: positions are told apart up to 2^(F+1). */
const FREQUENCIES = 12;
/** Score margin of the previous position over every other (softmax weight ratio e^-20). */
const ATTN_SCALE = 20;
/** Weight of the skip-gram term. */
const LAMBDA = 0.6;
/** Additive smoothing towards the unigram distribution (bigram and skip-gram). */
const SMOOTH_BIGRAM = 0.5;
const SMOOTH_SKIP = 4;
/** Probability floor (log of it for tokens never seen in training). */
const FLOOR = 1e-9;
/** Logit of tokens that are never generated ([PAD], [UNK], [CLS], [MASK]). */
const NEVER = -1e4;
/** Skip-gram log-ratios are clipped to +-this. */
const SKIP_CLIP = 4;

/** The chat template: BOS, then the turns' text (system prompts dropped); the model continues it. */
export const DEMO_LM_CHAT_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}{% if message['role'] != 'system' %}{{ message['content'] }} {% endif %}{% endfor %}";

export interface DemoLmWeights {
  readonly vocab: readonly string[];
  /** [V, V] row-major: bigram logits (row: current token). */
  readonly bigram: Float32Array;
  /** [V, V] row-major: LAMBDA * skip-gram log-ratios (row: previous token). */
  readonly skip: Float32Array;
}

/** Counts the notes' token statistics into the two tables. Deterministic. */
export function demoLmWeights(notes: readonly ClinicalNote[]): DemoLmWeights {
  const texts = notes.filter((n) => n.split === 'train').map((n) => n.text);
  const vocab = buildVocab(texts, 1);
  const tok = new WordPieceTokenizer(vocab);
  const v = vocab.length;
  const uni = new Float64Array(v);
  const bi = new Float64Array(v * v);
  const biRow = new Float64Array(v);
  const sk = new Float64Array(v * v);
  const skRow = new Float64Array(v);
  let total = 0;
  for (const text of texts) {
    const ids = tok.encode(text, Number.MAX_SAFE_INTEGER);
    for (let i = 1; i < ids.length; i++) {
      const w = ids[i] as number;
      uni[w] = (uni[w] ?? 0) + 1;
      total++;
      const a = ids[i - 1] as number;
      bi[a * v + w] = (bi[a * v + w] ?? 0) + 1;
      biRow[a] = (biRow[a] ?? 0) + 1;
      if (i >= 2) {
        const b = ids[i - 2] as number;
        sk[b * v + w] = (sk[b * v + w] ?? 0) + 1;
        skRow[b] = (skRow[b] ?? 0) + 1;
      }
    }
  }
  const never = new Set([PAD_ID, UNK_ID, CLS_ID, vocab.indexOf(MASK)]);
  const pUni = (w: number): number => (uni[w] ?? 0) / total;
  const bigram = new Float32Array(v * v);
  const skip = new Float32Array(v * v);
  for (let a = 0; a < v; a++) {
    for (let w = 0; w < v; w++) {
      if (never.has(w)) {
        bigram[a * v + w] = NEVER;
        continue;
      }
      const pb = ((bi[a * v + w] ?? 0) + SMOOTH_BIGRAM * pUni(w)) / ((biRow[a] ?? 0) + SMOOTH_BIGRAM);
      bigram[a * v + w] = Math.log(Math.max(pb, FLOOR));
      const ps = ((sk[a * v + w] ?? 0) + SMOOTH_SKIP * pUni(w)) / ((skRow[a] ?? 0) + SMOOTH_SKIP);
      const ratio = pUni(w) > 0 ? Math.log(Math.max(ps, FLOOR) / pUni(w)) : 0;
      skip[a * v + w] = LAMBDA * Math.max(-SKIP_CLIP, Math.min(SKIP_CLIP, ratio));
    }
  }
  return { vocab, bigram, skip };
}

const B = 'batch_size';
const S = 'sequence_length';
const P = 'past_sequence_length';
const T = 'total_sequence_length';

/** The decoder graph (opset 17) over the two tables; see the module comment. */
export function demoLmOnnx(w: DemoLmWeights, metadata: Readonly<Record<string, string>>): Uint8Array {
  const v = w.vocab.length;
  const f = FREQUENCIES;
  // theta_k = pi / 2^k, k = 1..F: the score of key j for query position q is
  // sum_k cos(theta_k (q - j)), F at j = q and at most F - 1 elsewhere (|q - j| < 2^(F+1)).
  const theta = Array.from({ length: f }, (_, k) => Math.PI / 2 ** (k + 1));
  // Projection of the 2F positional features into head_dim (= V): [I_2F | 0] (q scaled).
  const kProj = new Float32Array(2 * f * v);
  const qProj = new Float32Array(2 * f * v);
  for (let i = 0; i < 2 * f; i++) {
    kProj[i * v + i] = 1;
    qProj[i * v + i] = ATTN_SCALE;
  }
  const nodes: NodeSpec[] = [
    // Positional features of the keys (positions p) and queries (p - 1): [B, S, 2F].
    { name: 'pos_f', opType: 'Cast', inputs: ['position_ids'], outputs: ['pos'], intAttrs: { to: ONNX_FLOAT } },
    { name: 'pos_u', opType: 'Unsqueeze', inputs: ['pos', 'axis_last'], outputs: ['pos3'] },
    { name: 'k_angle', opType: 'Mul', inputs: ['pos3', 'theta'], outputs: ['k_ang'] },
    { name: 'prev_pos', opType: 'Sub', inputs: ['pos3', 'one_f'], outputs: ['pos3_prev'] },
    { name: 'q_angle', opType: 'Mul', inputs: ['pos3_prev', 'theta'], outputs: ['q_ang'] },
    { name: 'k_cos', opType: 'Cos', inputs: ['k_ang'], outputs: ['k_c'] },
    { name: 'k_sin', opType: 'Sin', inputs: ['k_ang'], outputs: ['k_s'] },
    { name: 'q_cos', opType: 'Cos', inputs: ['q_ang'], outputs: ['q_c'] },
    { name: 'q_sin', opType: 'Sin', inputs: ['q_ang'], outputs: ['q_s'] },
    { name: 'k_feat', opType: 'Concat', inputs: ['k_c', 'k_s'], outputs: ['k_pos'], intAttrs: { axis: -1 } },
    { name: 'q_feat', opType: 'Concat', inputs: ['q_c', 'q_s'], outputs: ['q_pos'], intAttrs: { axis: -1 } },
    { name: 'k_proj', opType: 'MatMul', inputs: ['k_pos', 'self_attn.k_proj.weight'], outputs: ['k_new3'] },
    { name: 'q_proj', opType: 'MatMul', inputs: ['q_pos', 'self_attn.q_proj.weight'], outputs: ['q3'] },
    { name: 'v_embed', opType: 'Gather', inputs: ['self_attn.v_embed.weight', 'input_ids'], outputs: ['v_new3'] },
    // [B, S, D] -> [B, 1, S, D] (one head), appended to the cache along the sequence axis.
    { name: 'k_head', opType: 'Unsqueeze', inputs: ['k_new3', 'axis_head'], outputs: ['k_new'] },
    { name: 'v_head', opType: 'Unsqueeze', inputs: ['v_new3', 'axis_head'], outputs: ['v_new'] },
    { name: 'q_head', opType: 'Unsqueeze', inputs: ['q3', 'axis_head'], outputs: ['q'] },
    { name: 'k_cache', opType: 'Concat', inputs: ['past_key_values.0.key', 'k_new'], outputs: ['present.0.key'], intAttrs: { axis: 2 } },
    { name: 'v_cache', opType: 'Concat', inputs: ['past_key_values.0.value', 'v_new'], outputs: ['present.0.value'], intAttrs: { axis: 2 } },
    // scores [B, 1, S, T] = q k^T
    { name: 'k_t', opType: 'Transpose', inputs: ['present.0.key'], outputs: ['k_tr'], intsAttrs: { perm: [0, 1, 3, 2] } },
    { name: 'scores', opType: 'MatMul', inputs: ['q', 'k_tr'], outputs: ['raw_scores'] },
    // Causal mask: key index j <= query index (T - S + i); and the attention mask [B, T].
    { name: 'shape_k', opType: 'Shape', inputs: ['present.0.key'], outputs: ['k_shape'] },
    { name: 'total_len', opType: 'Gather', inputs: ['k_shape', 'idx_seq'], outputs: ['t_len'], intAttrs: { axis: 0 } },
    { name: 'shape_ids', opType: 'Shape', inputs: ['input_ids'], outputs: ['ids_shape'] },
    { name: 'new_len', opType: 'Gather', inputs: ['ids_shape', 'idx_one'], outputs: ['s_len'], intAttrs: { axis: 0 } },
    { name: 'past_len', opType: 'Sub', inputs: ['t_len', 's_len'], outputs: ['p_len'] },
    { name: 'key_idx', opType: 'Range', inputs: ['zero_i', 't_len', 'one_i'], outputs: ['k_idx'] },
    { name: 'query_idx', opType: 'Range', inputs: ['p_len', 't_len', 'one_i'], outputs: ['q_idx'] },
    { name: 'query_col', opType: 'Unsqueeze', inputs: ['q_idx', 'axis_last_1d'], outputs: ['q_col'] },
    { name: 'causal', opType: 'LessOrEqual', inputs: ['k_idx', 'q_col'], outputs: ['causal_st'] },
    { name: 'mask_bool', opType: 'Cast', inputs: ['attention_mask'], outputs: ['mask_b'], intAttrs: { to: 9 } },
    { name: 'mask_4d', opType: 'Unsqueeze', inputs: ['mask_b', 'axes_12'], outputs: ['mask_b4'] },
    { name: 'allowed', opType: 'And', inputs: ['causal_st', 'mask_b4'], outputs: ['allowed_bst'] },
    { name: 'masked', opType: 'Where', inputs: ['allowed_bst', 'raw_scores', 'neg_big'], outputs: ['scores_m'] },
    { name: 'softmax', opType: 'Softmax', inputs: ['scores_m'], outputs: ['probs'], intAttrs: { axis: -1 } },
    { name: 'attend', opType: 'MatMul', inputs: ['probs', 'present.0.value'], outputs: ['attn4'] },
    { name: 'attn_squeeze', opType: 'Squeeze', inputs: ['attn4', 'axis_head'], outputs: ['attn'] },
    { name: 'bigram', opType: 'Gather', inputs: ['embed_tokens.weight', 'input_ids'], outputs: ['bigram_logits'] },
    { name: 'logits', opType: 'Add', inputs: ['bigram_logits', 'attn'], outputs: ['logits'] },
  ];
  const initializers: TensorInit[] = [
    { name: 'embed_tokens.weight', dims: [v, v], dataType: ONNX_FLOAT, raw: float32Raw(w.bigram) },
    { name: 'self_attn.v_embed.weight', dims: [v, v], dataType: ONNX_FLOAT, raw: float32Raw(w.skip) },
    { name: 'self_attn.k_proj.weight', dims: [2 * f, v], dataType: ONNX_FLOAT, raw: float32Raw(kProj) },
    { name: 'self_attn.q_proj.weight', dims: [2 * f, v], dataType: ONNX_FLOAT, raw: float32Raw(qProj) },
    { name: 'theta', dims: [f], dataType: ONNX_FLOAT, raw: float32Raw(theta) },
    { name: 'one_f', dims: [], dataType: ONNX_FLOAT, raw: float32Raw([1]) },
    { name: 'neg_big', dims: [], dataType: ONNX_FLOAT, raw: float32Raw([-1e9]) },
    { name: 'axis_last', dims: [1], dataType: ONNX_INT64, raw: int64Raw([2]) },
    { name: 'axis_last_1d', dims: [1], dataType: ONNX_INT64, raw: int64Raw([1]) },
    { name: 'axis_head', dims: [1], dataType: ONNX_INT64, raw: int64Raw([1]) },
    { name: 'axes_12', dims: [2], dataType: ONNX_INT64, raw: int64Raw([1, 2]) },
    { name: 'idx_seq', dims: [], dataType: ONNX_INT64, raw: int64Raw([2]) },
    { name: 'idx_one', dims: [], dataType: ONNX_INT64, raw: int64Raw([1]) },
    { name: 'zero_i', dims: [], dataType: ONNX_INT64, raw: int64Raw([0]) },
    { name: 'one_i', dims: [], dataType: ONNX_INT64, raw: int64Raw([1]) },
  ];
  const inputs: ValueSpec[] = [
    { name: 'input_ids', elemType: ONNX_INT64, shape: [B, S] },
    { name: 'attention_mask', elemType: ONNX_INT64, shape: [B, T] },
    { name: 'position_ids', elemType: ONNX_INT64, shape: [B, S] },
    { name: 'past_key_values.0.key', elemType: ONNX_FLOAT, shape: [B, 1, P, v] },
    { name: 'past_key_values.0.value', elemType: ONNX_FLOAT, shape: [B, 1, P, v] },
  ];
  const outputs: ValueSpec[] = [
    { name: 'logits', elemType: ONNX_FLOAT, shape: [B, S, v] },
    { name: 'present.0.key', elemType: ONNX_FLOAT, shape: [B, 1, T, v] },
    { name: 'present.0.value', elemType: ONNX_FLOAT, shape: [B, 1, T, v] },
  ];
  return encodeOnnxModel(
    {
      name: 'cloister_demo_lm',
      docString: 'One-layer decoder: bigram log-probabilities plus one previous-token attention head carrying skip-gram log-ratios, with a KV cache.',
      nodes,
      initializers,
      inputs,
      outputs,
      metadata,
    },
    DEMO_LM_VERSION,
  );
}

function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/** Writes `dir` (replaced as a whole: a stale extra file would change the model digest). */
export async function writeDemoLm(dir: string, notes: readonly ClinicalNote[], datasetSha256: string): Promise<{ vocabSize: number }> {
  const w = demoLmWeights(notes);
  const v = w.vocab.length;
  const sepId = SEP_ID;
  const config = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: v,
    hidden_size: v,
    intermediate_size: v,
    num_hidden_layers: 1,
    num_attention_heads: 1,
    num_key_value_heads: 1,
    head_dim: v,
    max_position_embeddings: DEMO_LM_MAX_POSITIONS,
    bos_token_id: CLS_ID,
    eos_token_id: sepId,
    pad_token_id: PAD_ID,
    tie_word_embeddings: false,
    use_cache: true,
    'transformers.js_config': { dtype: 'fp32' },
    cloister_demo: {
      version: DEMO_LM_VERSION,
      task: 'text-generation',
      construction: 'bigram log-probabilities + previous-token attention head with skip-gram log-ratios (count statistics of the training notes)',
      dataset_sha256: datasetSha256,
    },
  };
  const generationConfig = { bos_token_id: CLS_ID, eos_token_id: sepId, pad_token_id: PAD_ID, do_sample: true, temperature: 0.7, top_k: 40, top_p: 0.95 };
  const tok = tokenizerJson(w.vocab) as Record<string, unknown>;
  // A causal LM gets BOS only (no trailing [SEP]): the model continues the text.
  tok['post_processor'] = {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: CLS, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [{ SpecialToken: { id: CLS, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: { [CLS]: { id: CLS, ids: [CLS_ID], tokens: [CLS] } },
  };
  const tokConfig = {
    tokenizer_class: 'BertTokenizer',
    do_lower_case: true,
    model_max_length: DEMO_LM_MAX_POSITIONS,
    padding_side: 'left',
    clean_up_tokenization_spaces: true,
    bos_token: CLS,
    eos_token: SEP,
    pad_token: PAD,
    unk_token: UNK,
    cls_token: CLS,
    sep_token: SEP,
    mask_token: MASK,
    chat_template: DEMO_LM_CHAT_TEMPLATE,
  };
  const training = {
    cloister_demo_lm_version: DEMO_LM_VERSION,
    dataset: { file: 'data/clinical-notes.jsonl', sha256: datasetSha256, split: 'train' },
    construction: config.cloister_demo.construction,
    hyperparameters: { frequencies: FREQUENCIES, attention_scale: ATTN_SCALE, lambda: LAMBDA, smooth_bigram: SMOOTH_BIGRAM, smooth_skip: SMOOTH_SKIP },
    vocab_size: v,
  };
  const metadata = { cloister_demo_lm_version: DEMO_LM_VERSION, dataset_sha256: datasetSha256 };
  await rm(dir, { recursive: true, force: true });
  await mkdir(join(dir, 'onnx'), { recursive: true });
  const files: Record<string, string | Uint8Array> = {
    'config.json': json(config),
    'generation_config.json': json(generationConfig),
    'tokenizer.json': json(tok),
    'tokenizer_config.json': json(tokConfig),
    'training.json': json(training),
    'onnx/model.onnx': demoLmOnnx(w, metadata),
  };
  for (const [name, data] of Object.entries(files)) await writeFile(join(dir, name), data);
  return { vocabSize: v };
}

/** SHA-256 hex of bytes (the data set's, recorded in the model files). */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
