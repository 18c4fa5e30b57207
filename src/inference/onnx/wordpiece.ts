/**
 * A fast path for BERT WordPiece tokenizers on plain ASCII text. Once batching removed the
 * per-call overhead, transformers.js' tokenizer was most of the engine's main thread (two
 * regular expressions per character in BertNormalizer, string joins per WordPiece probe).
 *
 * It reproduces transformers.js 4.x (tokenizers: BertNormalizer, BertPreTokenizer,
 * WordPiece, TemplateProcessing) exactly, and only where that is easy to be sure of:
 * - the tokenizer.json must have exactly that shape, otherwise `fastWordPiece` returns
 *   undefined and the engine uses the library for everything;
 * - a text is taken only when every character is printable ASCII, tab, LF or CR (where
 *   cleaning, CJK spacing and accent stripping are no-ops and lowercasing is per character)
 *   and no added token (e.g. "[SEP]") occurs in it; `encode` returns undefined otherwise and
 *   the caller uses the library for that text.
 * The engine also compares both on probe texts at load (PROBE_TEXTS) and a test compares
 * them over the demo data set and random ASCII strings.
 */
import { isRecord } from '../../core/validate.js';

interface FastEncoding {
  readonly ids: number[];
  /** Absent without a post-processor (the library returns none then either). */
  readonly typeIds?: number[];
}

export interface FastWordPiece {
  /** Ids with special tokens, not truncated; undefined: use the library for this text. */
  encode(text: string): FastEncoding | undefined;
}

/** Texts that exercise every branch; the engine checks both tokenizers agree on them at load. */
export const PROBE_TEXTS: readonly string[] = [
  'start-up check',
  'Pt. c/o chest-pain (3/10), BP 120/80; HR=72 bpm... denies SOB!',
  "  Tabs\tand\nnewlines\r\n  and   spaces  ",
  'UNKNOWNWORD zzqx qwertyuiop ECG ecg Ecg',
  `${'a'.repeat(120)} ${'b'.repeat(99)}x`,
  '~`!@#$%^&*()_+-={}[]|\\:";\'<>?,./ 0123456789',
  '',
];

function isId(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0x7fff_ffff;
}

/** ASCII punctuation as BertPreTokenizer's class sees it (\p{P} plus the four ASCII symbol ranges). */
function isAsciiPunct(c: number): boolean {
  return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
}

/** Printable ASCII, tab, LF and CR only: where BertNormalizer reduces to the steps below. */
function isPlainAscii(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (!((c >= 0x20 && c <= 0x7e) || c === 9 || c === 10 || c === 13)) return false;
  }
  return true;
}

/** BertNormalizer on plain ASCII: tab/LF/CR become spaces; CJK spacing and accents are no-ops. */
function normalizeAscii(text: string, lowercase: boolean): string {
  const norm = text.replace(/[\t\n\r]/g, ' ');
  return lowercase ? norm.toLowerCase() : norm;
}

interface TemplateItem {
  /** Special token id, or -1 for the text's own tokens. */
  readonly id: number;
  readonly typeId: number;
}

/** Builds the fast path from tokenizer.json and tokenizer_config.json, or undefined if unsupported. */
export function fastWordPiece(tokenizerJson: unknown, tokenizerConfig: unknown): FastWordPiece | undefined {
  if (!isRecord(tokenizerJson) || !isRecord(tokenizerConfig)) return undefined;
  if (tokenizerConfig['remove_space'] === true || tokenizerConfig['do_lowercase_and_remove_accent'] === true) return undefined;
  const { normalizer, pre_tokenizer: pre, model, post_processor: post, added_tokens: added } = tokenizerJson;
  if (!isRecord(normalizer) || normalizer['type'] !== 'BertNormalizer' || normalizer['clean_text'] !== true) return undefined;
  const lowercase = normalizer['lowercase'];
  if (typeof lowercase !== 'boolean') return undefined;
  if (!isRecord(pre) || pre['type'] !== 'BertPreTokenizer') return undefined;
  if (!isRecord(model) || model['type'] !== 'WordPiece' || model['fuse_unk'] === true) return undefined;
  const { vocab: rawVocab, unk_token: unkToken, continuing_subword_prefix: prefix } = model;
  const maxWordChars = model['max_input_chars_per_word'] ?? 100;
  if (!isRecord(rawVocab) || typeof unkToken !== 'string' || typeof prefix !== 'string' || !isId(maxWordChars)) return undefined;
  if (!Array.isArray(added)) return undefined;

  // transformers.js adds the added tokens to the WordPiece vocabulary and looks them up first.
  const vocab = new Map<string, number>();
  for (const [token, id] of Object.entries(rawVocab)) {
    if (!isId(id)) return undefined;
    vocab.set(token, id);
  }
  const addedIds = new Map<string, number>();
  const addedContents: string[] = [];
  for (const a of added) {
    if (!isRecord(a) || typeof a['content'] !== 'string' || a['content'] === '' || !isId(a['id'])) return undefined;
    const content = a['content'];
    vocab.set(content, a['id']);
    addedIds.set(content, a['id']);
    addedContents.push(content, content.toLowerCase());
    if (a['normalized'] === true) {
      // The library also matches the normalized form; only ASCII forms are computed here.
      if (!isPlainAscii(content)) return undefined;
      const normalized = normalizeAscii(content, lowercase);
      if (normalized === '') return undefined;
      addedIds.set(normalized, a['id']);
      addedContents.push(normalized);
    }
  }
  const idOf = (token: string): number | undefined => addedIds.get(token) ?? vocab.get(token);
  const unkId = idOf(unkToken);
  if (unkId === undefined) return undefined;
  // WordPiece matches against `vocab`; the id of a match goes through the added tokens first.
  const matchId = new Map<string, number>();
  let longest = 0;
  for (const [token, id] of vocab) {
    matchId.set(token, addedIds.get(token) ?? id);
    longest = Math.max(longest, token.length);
  }

  let template: TemplateItem[] | undefined;
  if (post === null) {
    template = undefined;
  } else if (isRecord(post) && post['type'] === 'TemplateProcessing' && Array.isArray(post['single'])) {
    template = [];
    for (const item of post['single']) {
      if (!isRecord(item)) return undefined;
      const special = item['SpecialToken'];
      const seq = item['Sequence'];
      if (isRecord(special) && typeof special['id'] === 'string' && isId(special['type_id'])) {
        template.push({ id: idOf(special['id']) ?? unkId, typeId: special['type_id'] });
      } else if (isRecord(seq) && seq['id'] === 'A' && isId(seq['type_id'])) {
        template.push({ id: -1, typeId: seq['type_id'] });
      } else {
        return undefined;
      }
    }
  } else {
    return undefined;
  }

  const wordPiece = (word: string, out: number[]): void => {
    if (word.length > maxWordChars) {
      out.push(unkId);
      return;
    }
    const mark = out.length;
    let start = 0;
    while (start < word.length) {
      let end = Math.min(word.length, start + longest);
      let found: number | undefined;
      while (start < end) {
        const piece = start > 0 ? prefix + word.slice(start, end) : word.slice(start, end);
        found = matchId.get(piece);
        if (found !== undefined) break;
        end--;
      }
      if (found === undefined) {
        out.length = mark; // the whole word is unknown
        out.push(unkId);
        return;
      }
      out.push(found);
      start = end;
    }
  };

  return {
    encode(text) {
      if (!isPlainAscii(text)) return undefined;
      const norm = normalizeAscii(text, lowercase);
      for (const a of addedContents) if (text.includes(a) || norm.includes(a)) return undefined;
      const pieces: number[] = [];
      let wordStart = -1;
      for (let i = 0; i <= norm.length; i++) {
        const c = i < norm.length ? norm.charCodeAt(i) : 32;
        if (c === 32 || isAsciiPunct(c)) {
          if (wordStart >= 0) wordPiece(norm.slice(wordStart, i), pieces);
          wordStart = -1;
          if (c !== 32) wordPiece(norm[i] ?? '', pieces);
        } else if (wordStart < 0) {
          wordStart = i;
        }
      }
      if (template === undefined) return { ids: pieces };
      const ids: number[] = [];
      const typeIds: number[] = [];
      for (const item of template) {
        if (item.id >= 0) {
          ids.push(item.id);
          typeIds.push(item.typeId);
        } else {
          for (const p of pieces) {
            ids.push(p);
            typeIds.push(item.typeId);
          }
        }
      }
      return { ids, typeIds };
    },
  };
}
