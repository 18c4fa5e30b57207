/**
 * demo PHI tagger: a small token-classification model (labels O, NAME, ID) that the output
 * guard runs next to its rules (src/guard/tagger.ts, docs/GUARD.md "Tagger model"). Built
 * offline in well under a second from synthetic sentences: clinical sentences of
 * data/clinical-notes.jsonl with synthetic person names and identifiers inserted by templates.
 *
 * Model: per position t, logits = U[id_t] + L[id_(t-1)] + R[id_(t+1)] + b, a naive Bayes
 * tagger over the token and its two neighbours whose tables are smoothed log frequencies from
 * the labelled sentences (Gather, Pad and Slice in ONNX). The tokenizer is WordPiece over whole
 * words only (no `##` pieces), so every word is exactly one token: a known word or `[UNK]`.
 * Some of the synthetic names and every identifier are left out of the vocabulary, so `[UNK]`
 * next to "dr", "patient", "id", ... is learned as a name or an identifier: the model finds
 * names it never saw from their context. `[UNK]` is not a special token here, so the pipeline
 * reports it (a finding the guard can place).
 *
 * Deterministic: seeded generation, fixed key order, no timestamps.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ClinicalNote } from './dataset.js';
import { encodeOnnxModel, float32Raw, int64Raw, ONNX_FLOAT, ONNX_INT64 } from './onnx-proto.js';
import type { NodeSpec, TensorInit } from './onnx-proto.js';
import { SeededRng } from './rng.js';
import { CLS, MASK, MODEL_MAX_LENGTH, PAD, SEP, SPECIAL_TOKENS, tokenizerConfigJson, tokenizerJson, UNK } from './tokenizer.js';

export const PHI_LABELS = ['O', 'NAME', 'ID'] as const;
const PHI_VERSION = '1';
const SEED = 0x9e3779b1;
const SENTENCES = 4000;
/** Share of ordinary (O) words counted as [UNK] in training. */
const UNK_DROPOUT = 0.25;

// Synthetic name parts (common given names and surnames). The first two thirds go into the
// vocabulary; the rest appear in training only as [UNK], so context carries the tag.
const FIRST = ['james', 'mary', 'robert', 'patricia', 'john', 'jennifer', 'michael', 'linda', 'david', 'elizabeth', 'william', 'barbara', 'richard', 'susan', 'joseph', 'jessica', 'thomas', 'sarah', 'carlos', 'maria', 'wei', 'aisha', 'dmitri', 'fatima', 'kenji', 'priya', 'olga', 'ahmed', 'lucia', 'tunde'];
const LAST = ['smith', 'johnson', 'williams', 'brown', 'jones', 'garcia', 'miller', 'davis', 'rodriguez', 'martinez', 'hernandez', 'lopez', 'gonzalez', 'wilson', 'anderson', 'thomas', 'taylor', 'moore', 'jackson', 'martin', 'nguyen', 'kim', 'patel', 'okafor', 'ivanova', 'tanaka', 'cohen', 'haddad', 'schmidt', 'rossi'];
const TITLES = ['dr', 'mr', 'mrs', 'ms', 'nurse', 'doctor'];
const ID_WORDS: readonly (readonly string[])[] = [['patient', 'id'], ['member', 'id'], ['account', 'number'], ['policy', 'number'], ['insurance', 'id'], ['case', 'number'], ['chart', 'number'], ['record', 'id']];

type Tagged = readonly (readonly [string, number])[];

/** Words of a text as the tagger sees them (the guard splits the same way, src/guard/tagger.ts). */
export function phiWords(text: string): string[] {
  return (text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? []).map((w) => w.normalize('NFD').replace(/\p{M}/gu, ''));
}

function randomId(rng: SeededRng): string {
  const letters = 'abcdefghjkmnpqrstuvwxyz';
  let s = '';
  const n = 2 + rng.int(2);
  for (let i = 0; i < n; i++) s += letters[rng.int(letters.length)] ?? 'x';
  for (let i = 0; i < 5 + rng.int(4); i++) s += String(rng.int(10));
  return rng.chance(0.3) ? s.replace(/^[a-z]+/, '') : s;
}

function sentencesOf(notes: readonly ClinicalNote[]): string[][] {
  const out: string[][] = [];
  for (const n of notes) for (const s of n.text.split(/(?<=[.!?])\s+/)) if (s.length > 0) out.push(phiWords(s));
  return out;
}

/** Labelled sentences: clinical sentences with names and identifiers put in by templates. */
function syntheticSentences(notes: readonly ClinicalNote[], rng: SeededRng): Tagged[] {
  const clinical = sentencesOf(notes);
  const O = (ws: readonly string[]): [string, number][] => ws.map((w) => [w, 0]);
  const name = (): [string, number][] => {
    const parts: [string, number][] = [];
    if (rng.chance(0.7)) parts.push([rng.pick(FIRST), 1]);
    parts.push([rng.pick(LAST), 1]);
    return parts;
  };
  const out: Tagged[] = [];
  for (let i = 0; i < SENTENCES; i++) {
    const base = rng.pick(clinical);
    const cut = rng.int(base.length + 1);
    const t: [string, number][] = [];
    switch (rng.int(8)) {
      case 0:
        t.push(...O([rng.pick(TITLES)]), ...name(), ...O(base));
        break;
      case 1:
        t.push(...O(['patient']), ...name(), ...O(base));
        break;
      case 2:
        t.push(...name(), ...O(['was', 'seen', 'today']), ...O(base));
        break;
      case 3:
        t.push(...O(base.slice(0, cut)), ...O(['seen', 'with', rng.pick(TITLES)]), ...name(), ...O(base.slice(cut)));
        break;
      case 4:
        t.push(...O(base), ...O(rng.pick(ID_WORDS)), [randomId(rng), 2]);
        break;
      case 5:
        t.push(...O(rng.pick(ID_WORDS)), [randomId(rng), 2], ...O(base.slice(cut)));
        break;
      case 6:
        t.push(...O(base.slice(0, cut)), ...O(['discussed', 'with']), ...name(), ...O(['her', rng.pick(['daughter', 'son', 'husband', 'wife'])]), ...O(base.slice(cut)));
        break;
      default:
        t.push(...O(base));
    }
    out.push(t.slice(0, MODEL_MAX_LENGTH - 2));
  }
  return out;
}

interface PhiTables {
  readonly vocab: string[];
  readonly unigram: Float32Array;
  readonly left: Float32Array;
  readonly right: Float32Array;
  readonly bias: Float32Array;
}

/** Naive Bayes tables: log P(feature | label), add-one smoothed; bias log P(label). */
function trainTables(data: readonly Tagged[], vocab: readonly string[], rng: SeededRng): PhiTables {
  const index = new Map(vocab.map((w, i) => [w, i]));
  const unk = index.get(UNK) ?? 1;
  const L = PHI_LABELS.length;
  const V = vocab.length;
  const count = (): Float64Array => new Float64Array(V * L);
  const [uc, lc, rc] = [count(), count(), count()];
  const labels = new Float64Array(L);
  const cls = index.get(CLS) ?? 2;
  const sep = index.get(SEP) ?? 3;
  for (const s of data) {
    // Word dropout: some ordinary words count as [UNK], so an unknown word is not a name by itself.
    const ids = s.map(([w, y]) => (y === 0 && rng.chance(UNK_DROPOUT) ? unk : (index.get(w) ?? unk)));
    s.forEach(([, y], t) => {
      labels[y] = (labels[y] ?? 0) + 1;
      const at = (id: number): number => id * L + y;
      uc[at(ids[t] ?? unk)] = (uc[at(ids[t] ?? unk)] ?? 0) + 1;
      const prev = t === 0 ? cls : (ids[t - 1] ?? unk);
      const next = t === s.length - 1 ? sep : (ids[t + 1] ?? unk);
      lc[at(prev)] = (lc[at(prev)] ?? 0) + 1;
      rc[at(next)] = (rc[at(next)] ?? 0) + 1;
    });
  }
  const total = labels.reduce((a, b) => a + b, 0);
  const table = (c: Float64Array): Float32Array => {
    const out = new Float32Array(V * L);
    for (let y = 0; y < L; y++) {
      const denom = (labels[y] ?? 0) + V;
      for (let v = 0; v < V; v++) out[v * L + y] = Math.log(((c[v * L + y] ?? 0) + 1) / denom);
    }
    return out;
  };
  const bias = Float32Array.from(labels, (n) => Math.log((n + 1) / (total + L)));
  return { vocab: [...vocab], unigram: table(uc), left: table(lc), right: table(rc), bias };
}

function phiOnnx(t: PhiTables): Uint8Array {
  const L = PHI_LABELS.length;
  const V = t.vocab.length;
  const nodes: NodeSpec[] = [
    { name: 'unigram', opType: 'Gather', inputs: ['unigram.weight', 'input_ids'], outputs: ['u'] },
    { name: 'left', opType: 'Gather', inputs: ['left.weight', 'input_ids'], outputs: ['l_here'] },
    { name: 'right', opType: 'Gather', inputs: ['right.weight', 'input_ids'], outputs: ['r_here'] },
    // The left-neighbour feature of position t is the table row of token t-1: shift right by one.
    { name: 'l_pad', opType: 'Pad', inputs: ['l_here', 'pad_front'], outputs: ['l_padded'] },
    { name: 'l_shift', opType: 'Slice', inputs: ['l_padded', 'zero', 'minus_one', 'axis_seq'], outputs: ['l'] },
    { name: 'r_pad', opType: 'Pad', inputs: ['r_here', 'pad_back'], outputs: ['r_padded'] },
    { name: 'r_shift', opType: 'Slice', inputs: ['r_padded', 'one', 'int_max', 'axis_seq'], outputs: ['r'] },
    { name: 'sum_ul', opType: 'Add', inputs: ['u', 'l'], outputs: ['ul'] },
    { name: 'sum_ulr', opType: 'Add', inputs: ['ul', 'r'], outputs: ['ulr'] },
    { name: 'bias', opType: 'Add', inputs: ['ulr', 'bias.weight'], outputs: ['logits'] },
  ];
  const i64 = (name: string, values: number[]): TensorInit => ({ name, dims: [values.length], dataType: ONNX_INT64, raw: int64Raw(values) });
  const initializers: TensorInit[] = [
    { name: 'unigram.weight', dims: [V, L], dataType: ONNX_FLOAT, raw: float32Raw(t.unigram) },
    { name: 'left.weight', dims: [V, L], dataType: ONNX_FLOAT, raw: float32Raw(t.left) },
    { name: 'right.weight', dims: [V, L], dataType: ONNX_FLOAT, raw: float32Raw(t.right) },
    { name: 'bias.weight', dims: [L], dataType: ONNX_FLOAT, raw: float32Raw(t.bias) },
    i64('pad_front', [0, 1, 0, 0, 0, 0]),
    i64('pad_back', [0, 0, 0, 0, 1, 0]),
    i64('zero', [0]),
    i64('one', [1]),
    i64('minus_one', [-1]),
    i64('int_max', [2 ** 31 - 1]),
    i64('axis_seq', [1]),
  ];
  return encodeOnnxModel(
    {
      name: 'cloister_demo_phi_tagger',
      docString: 'Naive Bayes token tagger (O, NAME, ID) over the token and its two neighbours.',
      nodes,
      initializers,
      inputs: [
        { name: 'input_ids', elemType: ONNX_INT64, shape: ['batch_size', 'sequence_length'] },
        { name: 'attention_mask', elemType: ONNX_INT64, shape: ['batch_size', 'sequence_length'] },
      ],
      outputs: [{ name: 'logits', elemType: ONNX_FLOAT, shape: ['batch_size', 'sequence_length', L] }],
      metadata: { cloister_demo_model_version: PHI_VERSION },
    },
    PHI_VERSION,
  );
}

export interface PhiTaggerResult {
  readonly dir: string;
  readonly vocabSize: number;
  /** Token accuracy on held-out synthetic sentences (names unseen in training among them). */
  readonly heldOutNameRecall: number;
}

function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/** Builds `<dir>` (replaced): config.json, tokenizer files, onnx/model.onnx, training.json. */
export async function writePhiTagger(dir: string, notes: readonly ClinicalNote[], datasetSha256: string): Promise<PhiTaggerResult> {
  const rng = new SeededRng(SEED);
  const data = syntheticSentences(notes.filter((n) => n.split === 'train'), rng);
  const heldOut = syntheticSentences(notes.filter((n) => n.split === 'test'), new SeededRng((SEED ^ 0xffff) >>> 0)).slice(0, 500);
  // Vocabulary: clinical words seen at least twice, two thirds of the name parts, the labels' cue words.
  const counts = new Map<string, number>();
  for (const s of data) for (const [w, y] of s) if (y === 0) counts.set(w, (counts.get(w) ?? 0) + 1);
  const known = new Set([...FIRST.slice(0, 20), ...LAST.slice(0, 20)]);
  const words = [...counts].filter(([w, n]) => n >= 2 && !FIRST.includes(w) && !LAST.includes(w)).map(([w]) => w);
  const vocab = [...SPECIAL_TOKENS, ...[...new Set([...words, ...known])].sort()];
  const tables = trainTables(data, vocab, rng);

  // Held-out recall of name tokens, by the same arithmetic as the graph.
  const index = new Map(vocab.map((w, i) => [w, i]));
  let names = 0;
  let found = 0;
  const L = PHI_LABELS.length;
  for (const s of heldOut) {
    const ids = [index.get(CLS) ?? 2, ...s.map(([w]) => index.get(w) ?? 1), index.get(SEP) ?? 3];
    s.forEach(([, y], k) => {
      if (y !== 1) return;
      names++;
      const t = k + 1;
      let best = 0;
      let max = -Infinity;
      for (let c = 0; c < L; c++) {
        const v = (tables.unigram[(ids[t] ?? 1) * L + c] ?? 0) + (tables.left[(ids[t - 1] ?? 1) * L + c] ?? 0) + (tables.right[(ids[t + 1] ?? 1) * L + c] ?? 0) + (tables.bias[c] ?? 0);
        if (v > max) {
          max = v;
          best = c;
        }
      }
      if (best === 1) found++;
    });
  }
  const heldOutNameRecall = names === 0 ? 0 : found / names;

  const tok = tokenizerJson(vocab);
  // [UNK] is reported like a word (not special), so a tagged unknown word reaches the guard.
  tok['added_tokens'] = (tok['added_tokens'] as Record<string, unknown>[]).filter((t) => t['content'] !== UNK);
  const config = {
    architectures: ['BertForTokenClassification'],
    model_type: 'bert',
    vocab_size: vocab.length,
    max_position_embeddings: MODEL_MAX_LENGTH,
    pad_token_id: 0,
    id2label: Object.fromEntries(PHI_LABELS.map((l, i) => [String(i), l])),
    label2id: Object.fromEntries(PHI_LABELS.map((l, i) => [l, i])),
    'transformers.js_config': { dtype: 'fp32' },
    cloister_demo: { version: PHI_VERSION, task: 'token-classification', dataset_sha256: datasetSha256 },
  };
  const training = {
    cloister_demo_model_version: PHI_VERSION,
    model: 'naive Bayes token tagger: unigram, left and right neighbour tables (add-one smoothed log frequencies)',
    data: `${SENTENCES} synthetic sentences: clinical sentences of the train split with synthetic names and identifiers`,
    labels: PHI_LABELS,
    vocab_size: vocab.length,
    held_out_name_recall: Math.round(heldOutNameRecall * 1e4) / 1e4,
    special_tokens: [PAD, CLS, SEP, MASK],
  };
  await rm(dir, { recursive: true, force: true });
  await mkdir(join(dir, 'onnx'), { recursive: true });
  await writeFile(join(dir, 'config.json'), json(config));
  await writeFile(join(dir, 'tokenizer.json'), json(tok));
  await writeFile(join(dir, 'tokenizer_config.json'), json(tokenizerConfigJson()));
  await writeFile(join(dir, 'training.json'), json(training));
  await writeFile(join(dir, 'onnx', 'model.onnx'), phiOnnx(tables));
  return { dir, vocabSize: vocab.length, heldOutNameRecall };
}
