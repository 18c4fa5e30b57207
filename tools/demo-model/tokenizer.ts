/**
 * A BERT-style WordPiece tokenizer for the demo models, and its Hugging Face `tokenizer.json`.
 *
 * The builder tokenizes the training notes itself (so training needs no ONNX runtime) with the
 * same algorithm the Hugging Face tokenizers library applies to the emitted tokenizer.json:
 * BertNormalizer (clean text, lowercase, strip accents), BertPreTokenizer (split on whitespace
 * and punctuation), greedy longest-match-first WordPiece with the `##` continuation prefix,
 * then `[CLS] ... [SEP]` via TemplateProcessing. A test compares the two on the whole data set.
 */

const PAD = '[PAD]';
const UNK = '[UNK]';
const CLS = '[CLS]';
const SEP = '[SEP]';
const MASK = '[MASK]';
/** Fixed ids of the special tokens (first five vocabulary entries). */
const SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK] as const;
export const PAD_ID = 0;
const UNK_ID = 1;
const CLS_ID = 2;
const SEP_ID = 3;

const CONTINUATION = '##';
const MAX_INPUT_CHARS_PER_WORD = 100;

/** Longest sequence (including [CLS] and [SEP]) the models accept; longer input is truncated. */
export const MODEL_MAX_LENGTH = 128;

function isControl(cp: number): boolean {
  if (cp === 0x09 || cp === 0x0a || cp === 0x0d) return false;
  return /\p{Cc}|\p{Cf}/u.test(String.fromCodePoint(cp));
}

function isWhitespace(cp: number): boolean {
  if (cp === 0x20 || cp === 0x09 || cp === 0x0a || cp === 0x0d) return true;
  return /\p{Zs}/u.test(String.fromCodePoint(cp));
}

/** BERT's punctuation: all non-alphanumeric ASCII printable characters, plus Unicode P*. */
function isPunctuation(cp: number): boolean {
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) {
    return true;
  }
  return /\p{P}/u.test(String.fromCodePoint(cp));
}

function isCjk(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

/** BertNormalizer { clean_text, handle_chinese_chars, strip_accents (= lowercase), lowercase }. */
function bertNormalize(text: string): string {
  let out = '';
  for (const ch of text) {
    const cp = ch.codePointAt(0) ?? 0;
    if (cp === 0 || cp === 0xfffd || isControl(cp)) continue;
    if (isWhitespace(cp)) out += ' ';
    else if (isCjk(cp)) out += ` ${ch} `;
    else out += ch;
  }
  return out.normalize('NFD').replace(/\p{Mn}/gu, '').toLowerCase();
}

/** BertPreTokenizer: whitespace-separated words, each punctuation character its own word. */
function bertPreTokenize(normalized: string): string[] {
  const words: string[] = [];
  let cur = '';
  for (const ch of normalized) {
    const cp = ch.codePointAt(0) ?? 0;
    if (isWhitespace(cp)) {
      if (cur !== '') words.push(cur);
      cur = '';
    } else if (isPunctuation(cp)) {
      if (cur !== '') words.push(cur);
      words.push(ch);
      cur = '';
    } else {
      cur += ch;
    }
  }
  if (cur !== '') words.push(cur);
  return words;
}

export class WordPieceTokenizer {
  readonly vocab: readonly string[];
  readonly #ids: ReadonlyMap<string, number>;

  constructor(vocab: readonly string[]) {
    SPECIAL_TOKENS.forEach((t, i) => {
      if (vocab[i] !== t) throw new Error('vocabulary must start with the special tokens');
    });
    const ids = new Map<string, number>();
    vocab.forEach((t, i) => {
      if (ids.has(t)) throw new Error('duplicate vocabulary entry');
      ids.set(t, i);
    });
    this.vocab = [...vocab];
    this.#ids = ids;
  }

  /** Greedy longest-match-first WordPiece; an unsplittable word becomes one [UNK]. */
  wordPiece(word: string): number[] {
    const chars = [...word];
    if (chars.length > MAX_INPUT_CHARS_PER_WORD) return [UNK_ID];
    const out: number[] = [];
    let start = 0;
    while (start < chars.length) {
      let end = chars.length;
      let found: number | undefined;
      while (start < end) {
        const piece = (start > 0 ? CONTINUATION : '') + chars.slice(start, end).join('');
        found = this.#ids.get(piece);
        if (found !== undefined) break;
        end--;
      }
      if (found === undefined) return [UNK_ID];
      out.push(found);
      start = end;
    }
    return out;
  }

  /**
   * Token ids with [CLS]/[SEP], truncated to `maxLength` the way transformers.js truncates
   * (`truncation: true` keeps the first `maxLength` ids of the post-processed sequence).
   */
  encode(text: string, maxLength: number = MODEL_MAX_LENGTH): number[] {
    const ids: number[] = [CLS_ID];
    for (const w of bertPreTokenize(bertNormalize(text))) ids.push(...this.wordPiece(w));
    ids.push(SEP_ID);
    return ids.slice(0, maxLength);
  }
}

/**
 * Vocabulary: special tokens, every character seen (alone and as `##c`, so any word made of
 * known characters tokenizes), then whole words seen at least `minCount` times in training
 * text, most frequent first (ties by code-unit order) - a deterministic order.
 */
export function buildVocab(trainingTexts: readonly string[], minCount: number): string[] {
  const counts = new Map<string, number>();
  const chars = new Set<string>('abcdefghijklmnopqrstuvwxyz0123456789');
  for (const text of trainingTexts) {
    for (const w of bertPreTokenize(bertNormalize(text))) {
      counts.set(w, (counts.get(w) ?? 0) + 1);
      for (const c of w) chars.add(c);
    }
  }
  const sortedChars = [...chars].sort();
  const vocab: string[] = [...SPECIAL_TOKENS, ...sortedChars, ...sortedChars.map((c) => CONTINUATION + c)];
  const present = new Set(vocab);
  const words = [...counts.entries()]
    .filter(([w, n]) => n >= minCount && !present.has(w))
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([w]) => w);
  return [...vocab, ...words];
}

/** The Hugging Face tokenizers JSON (format version 1.0) for this tokenizer. */
export function tokenizerJson(vocab: readonly string[]): Record<string, unknown> {
  const vocabMap: Record<string, number> = {};
  vocab.forEach((t, i) => {
    vocabMap[t] = i;
  });
  const special = (id: string): Record<string, unknown> => ({
    id,
    ids: [vocab.indexOf(id)],
    tokens: [id],
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: SPECIAL_TOKENS.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [
        { SpecialToken: { id: CLS, type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: SEP, type_id: 0 } },
      ],
      pair: [
        { SpecialToken: { id: CLS, type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: SEP, type_id: 0 } },
        { Sequence: { id: 'B', type_id: 1 } },
        { SpecialToken: { id: SEP, type_id: 1 } },
      ],
      special_tokens: { [CLS]: special(CLS), [SEP]: special(SEP) },
    },
    decoder: { type: 'WordPiece', prefix: CONTINUATION, cleanup: true },
    model: {
      type: 'WordPiece',
      unk_token: UNK,
      continuing_subword_prefix: CONTINUATION,
      max_input_chars_per_word: MAX_INPUT_CHARS_PER_WORD,
      vocab: vocabMap,
    },
  };
}

/** tokenizer_config.json: selects transformers.js's BertTokenizer and the truncation length. */
export function tokenizerConfigJson(): Record<string, unknown> {
  return {
    tokenizer_class: 'BertTokenizer',
    do_lower_case: true,
    model_max_length: MODEL_MAX_LENGTH,
    padding_side: 'right',
    truncation_side: 'right',
    clean_up_tokenization_spaces: true,
    pad_token: PAD,
    unk_token: UNK,
    cls_token: CLS,
    sep_token: SEP,
    mask_token: MASK,
  };
}
