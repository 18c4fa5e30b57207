/**
 * The parts of a loaded transformers.js pipeline the engine drives itself: its tokenizer and
 * its model. The pipeline object is still what loads them (same files, same session options,
 * same local-only environment); the engine only skips the pipeline's `_call`, whose
 * per-request overhead capped batching (see postprocess.ts and batch-inputs.ts).
 */
import type { TransformersModule } from './transformers-env.js';
import type { PaddingSide } from './batch-inputs.js';
import { type FastWordPiece, fastWordPiece, PROBE_TEXTS } from './wordpiece.js';
import { isRecord } from '../../core/validate.js';

/** Per-text token ids before padding; `typeIds` only when the tokenizer returns them. */
interface Encoded {
  readonly ids: readonly (readonly number[])[];
  readonly typeIds?: readonly (readonly number[])[];
}

export interface ModelRunner {
  /** Tokenizes each text on its own (special tokens added, truncated to the model maximum). */
  encode(texts: string[]): Encoded;
  /** One token id as the pipeline words it (special tokens decode to ''). */
  decodeToken(id: number): string;
  /** Runs the model on int64 [rows, seq] inputs; returns the named output's data and dims. */
  run(feeds: Readonly<Record<string, BigInt64Array>>, rows: number, seq: number): Promise<Record<string, unknown>>;
  readonly padId: number;
  readonly paddingSide: PaddingSide;
  /** The session's input names (only these are fed). */
  readonly inputNames: ReadonlySet<string>;
  /** Whether the fast WordPiece path (wordpiece.ts) is in use for plain ASCII texts. */
  readonly fastTokenizer: boolean;
  dispose(): Promise<void>;
}

/** The tokenizer files as loaded (read inside the engine's digest window). */
interface TokenizerFiles {
  readonly tokenizerJson: unknown;
  readonly tokenizerConfig: unknown;
}

type Callable = (...args: unknown[]) => unknown;

function callable(v: unknown): v is Callable & Record<string, unknown> {
  return typeof v === 'function';
}

function numberRows(v: unknown, what: string): number[][] {
  if (!Array.isArray(v)) throw new TypeError(`tokenizer ${what} is not a list`);
  for (const r of v) if (!Array.isArray(r)) throw new TypeError(`tokenizer ${what} is malformed`);
  return v as number[][];
}

/** Reads the tokenizer and model out of a pipeline; throws TypeError if they are not there. */
export function modelRunner(pipe: unknown, mod: TransformersModule, files: TokenizerFiles): ModelRunner {
  if (!callable(pipe) && !isRecord(pipe)) throw new TypeError('pipeline is not an object');
  const p = pipe as Record<string, unknown>;
  const tokenizer = p['tokenizer'];
  const model = p['model'];
  if (!callable(tokenizer) || !callable(model)) throw new TypeError('pipeline has no tokenizer or model');
  const decode = tokenizer['decode'];
  if (typeof decode !== 'function') throw new TypeError('tokenizer has no decode');
  const sessions = model['sessions'];
  const session = isRecord(sessions) ? sessions['model'] : undefined;
  const names = isRecord(session) ? session['inputNames'] : undefined;
  if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) throw new TypeError('model session has no input names');
  const inputNames = new Set<string>(names as string[]);
  const padToken = tokenizer['pad_token_id'];
  // Without a pad token the padding is masked anyway; 0 is as good as any id then.
  const padId = typeof padToken === 'number' ? padToken : 0;
  const paddingSide: PaddingSide = tokenizer['padding_side'] === 'left' ? 'left' : 'right';
  const dispose = p['dispose'];
  const maxLength = tokenizer['model_max_length'];
  const truncateTo = typeof maxLength === 'number' && maxLength >= 0 ? maxLength : Infinity;

  /** The library path: one call for the texts, no padding, the pipeline's truncation. */
  const library = (texts: string[]): Encoded => {
    const out = tokenizer(texts, { truncation: true, padding: false, return_tensor: false });
    if (!isRecord(out)) throw new TypeError('tokenizer output is malformed');
    const ids = numberRows(out['input_ids'], 'input_ids');
    if (ids.length !== texts.length) throw new TypeError('tokenizer output has the wrong length');
    const types = out['token_type_ids'];
    return types === undefined ? { ids } : { ids, typeIds: numberRows(types, 'token_type_ids') };
  };
  const fast = checkedFastPath(files, library, truncateTo);

  return {
    padId,
    paddingSide,
    inputNames,
    fastTokenizer: fast !== undefined,
    encode(texts) {
      if (fast === undefined) return library(texts);
      const ids: number[][] = [];
      const typeIds: number[][] = [];
      const slow: number[] = [];
      texts.forEach((text, i) => {
        const e = fastEncode(fast, text, truncateTo);
        if (e === undefined) slow.push(i);
        ids.push(e?.ids ?? []);
        typeIds.push(e?.typeIds ?? []);
      });
      let withTypes = fast.withTypeIds;
      if (slow.length > 0) {
        const lib = library(slow.map((i) => texts[i] ?? ''));
        withTypes = lib.typeIds !== undefined;
        slow.forEach((i, k) => {
          ids[i] = [...(lib.ids[k] ?? [])];
          typeIds[i] = [...(lib.typeIds?.[k] ?? [])];
        });
      }
      return withTypes ? { ids, typeIds } : { ids };
    },
    decodeToken(id) {
      const word: unknown = decode.call(tokenizer, [id], { skip_special_tokens: true });
      if (typeof word !== 'string') throw new TypeError('tokenizer decode is malformed');
      return word;
    },
    async run(feeds, rows, seq) {
      const tensors: Record<string, unknown> = {};
      for (const [name, data] of Object.entries(feeds)) tensors[name] = new mod.Tensor('int64', data, [rows, seq]);
      const out = await model(tensors);
      if (!isRecord(out)) throw new TypeError('model output is malformed');
      return out;
    },
    async dispose() {
      if (typeof dispose === 'function') await (dispose as () => Promise<void>).call(pipe);
    },
  };
}

interface CheckedFast {
  readonly tokenizer: FastWordPiece;
  /** Whether the library returns token type ids for this tokenizer (the fast path does alike). */
  readonly withTypeIds: boolean;
}

function fastEncode(fast: CheckedFast, text: string, truncateTo: number): { ids: number[]; typeIds: number[] } | undefined {
  const e = fast.tokenizer.encode(text);
  if (e === undefined) return undefined;
  const ids = e.ids;
  const typeIds = e.typeIds ?? [];
  // The pipeline's truncation (truncateHelper): cut every list to the model's maximum length.
  if (ids.length > truncateTo) ids.length = truncateTo;
  if (typeIds.length > truncateTo) typeIds.length = truncateTo;
  return { ids, typeIds };
}

function sameList(a: readonly number[], b: readonly number[] | undefined): boolean {
  return b !== undefined && a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * The fast tokenizer if the files have its shape AND it gives the library's ids (and type
 * ids) on every probe text; otherwise undefined, and the library tokenizes everything.
 */
function checkedFastPath(files: TokenizerFiles, library: (texts: string[]) => Encoded, truncateTo: number): CheckedFast | undefined {
  const tokenizer = fastWordPiece(files.tokenizerJson, files.tokenizerConfig);
  if (tokenizer === undefined) return undefined;
  const expected = library([...PROBE_TEXTS]);
  const withTypeIds = expected.typeIds !== undefined;
  const fast: CheckedFast = { tokenizer, withTypeIds };
  for (const [i, text] of PROBE_TEXTS.entries()) {
    const got = fastEncode(fast, text, truncateTo);
    if (got === undefined) continue;
    if (!sameList(got.ids, expected.ids[i])) return undefined;
    if (withTypeIds && !sameList(got.typeIds, expected.typeIds?.[i])) return undefined;
  }
  return fast;
}
