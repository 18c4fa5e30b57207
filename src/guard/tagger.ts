/**
 * The guard's tagger model (docs/GUARD.md, "Tagger model"): a token-classification model
 * served by this server's ONNX engine (`serve --model phi-tagger=DIR --guard-tagger
 * phi-tagger`) whose labels NAME and ID become findings next to the rules' (names and
 * unlabelled identifiers have no pattern a rule could match).
 *
 * The text is cut into words (runs of letters and digits; each CJK ideograph is a word, as
 * BERT's normalizer splits them) and sent as those words joined by single spaces, so with a
 * whole-word tokenizer (the demo tagger's) token i is word i and a finding maps back to its
 * exact character span. Every reported token is checked against its word (the word itself,
 * or [UNK]): a model whose tokens do not line up with the words fails the answer
 * (ENGINE_FAILED) rather than redact the wrong span. Texts longer than one window are cut
 * into windows of TAGGER_WINDOW_WORDS words overlapping by two, and each word's label is taken
 * from the window where it has both neighbours. Adjacent words with the same label (a first
 * and a last name) become one finding.
 */
import { CloisterError } from '../errors.js';
import { isRecord } from '../core/validate.js';
import type { Engine } from '../inference/types.js';
import type { Finding, IdentifierType } from './rules.js';

/** Finds identifiers in a text; offsets into it. */
export type Tagger = (text: string, signal: AbortSignal) => Promise<Finding[]>;

/** Words per model input: the demo tagger takes 128 tokens, [CLS] and [SEP] included. */
export const TAGGER_WINDOW_WORDS = 120;
/** Model inputs per engine call (the ONNX engine's maxInputsPerRequest default). */
const TAGGER_INPUTS_PER_CALL = 64;

/** The tagger labels the guard acts on, and the finding type each becomes. */
export const TAGGER_LABELS: Readonly<Record<string, IdentifierType>> = { NAME: 'NAME', ID: 'ID' };

const CJK = '\\u3400-\\u4DBF\\u4E00-\\u9FFF\\uF900-\\uFAFF';
const WORD = new RegExp(`[${CJK}]|(?:(?![${CJK}])[\\p{L}\\p{N}])(?:(?![${CJK}])[\\p{L}\\p{N}\\p{M}])*`, 'gu');

interface Word {
  readonly start: number;
  readonly end: number;
  /** As BERT's normalizer makes it: lower case, accents stripped. */
  readonly norm: string;
}

export function taggerWords(text: string): Word[] {
  const out: Word[] = [];
  for (const m of text.matchAll(WORD)) {
    out.push({ start: m.index, end: m.index + m[0].length, norm: m[0].toLowerCase().normalize('NFD').replace(/\p{Mn}/gu, '') });
  }
  return out;
}

function misaligned(model: string): CloisterError {
  return new CloisterError('ENGINE_FAILED', `the guard's tagger model ${model} reported a token that is not the word at its position (a whole-word tokenizer is required)`);
}

/** The tagger that runs `model` (a token-classification model) on `engine`. */
export function engineTagger(engine: Engine, model: string): Tagger {
  return async (text, signal) => {
    const words = taggerWords(text);
    if (words.length === 0) return [];
    const step = TAGGER_WINDOW_WORDS - 2;
    const starts = [0];
    for (let last = 0; last + TAGGER_WINDOW_WORDS < words.length; ) starts.push((last += step));
    const labels: (IdentifierType | undefined)[] = new Array<IdentifierType | undefined>(words.length);
    for (let c = 0; c < starts.length; c += TAGGER_INPUTS_PER_CALL) {
      const batch = starts.slice(c, c + TAGGER_INPUTS_PER_CALL);
      const inputs = batch.map((s) => words.slice(s, s + TAGGER_WINDOW_WORDS).map((w) => w.norm).join(' '));
      let answer: unknown;
      for await (const out of engine.run({ op: 'token-classify', model, input: inputs, params: {}, stream: false }, { signal })) answer = out;
      if (!Array.isArray(answer) || answer.length !== inputs.length) throw new CloisterError('ENGINE_FAILED', `the guard's tagger model ${model} gave no answer per input`);
      batch.forEach((s, k) => {
        const n = Math.min(TAGGER_WINDOW_WORDS, words.length - s);
        const entities: unknown = answer[k];
        if (!Array.isArray(entities)) throw new CloisterError('ENGINE_FAILED', `the guard's tagger model ${model} gave no entities`);
        for (const e of entities) {
          if (!isRecord(e) || typeof e['entity'] !== 'string' || typeof e['index'] !== 'number' || typeof e['word'] !== 'string') throw misaligned(model);
          // index 0 is [CLS]: token i + 1 is word i of the window.
          const j = e['index'] - 1;
          const word = words[s + j];
          if (!Number.isInteger(j) || j < 0 || j >= n || word === undefined || (e['word'] !== word.norm && e['word'] !== '[UNK]')) throw misaligned(model);
          const type = TAGGER_LABELS[e['entity'].replace(/^[BI]-/, '')];
          if (type === undefined) continue;
          // The window where this word has both neighbours decides (the text's ends excepted).
          if ((j === 0 && s > 0) || (j === n - 1 && s + n < words.length)) continue;
          labels[s + j] = type;
        }
      });
    }
    const findings: Finding[] = [];
    let open: { type: IdentifierType; start: number; end: number } | undefined;
    words.forEach((w, i) => {
      const type = labels[i];
      if (open !== undefined && (type !== open.type || !/^\s*$/.test(text.slice(open.end, w.start)))) {
        findings.push(open);
        open = undefined;
      }
      if (type === undefined) return;
      if (open === undefined) open = { type, start: w.start, end: w.end };
      else open.end = w.end;
    });
    if (open !== undefined) findings.push(open);
    return findings;
  };
}
