/**
 * Builds the int64 [batch, sequence] model inputs from per-text token ids, padded only to
 * the longest text in the batch (the tokenizer's `padding: true` rule) with a zero attention
 * mask over the padding, so the model's masking keeps each text's result independent of its
 * batch. Written straight into one BigInt64Array per input: the library's
 * `BigInt64Array.from(flatMap(...).map(BigInt))` allocated a BigInt per token and was the
 * largest single cost in the batching profile.
 */

export type PaddingSide = 'left' | 'right';

interface BatchInputs {
  readonly rows: number;
  /** Padded sequence length (longest text in the batch). */
  readonly seq: number;
  /** Where each text's tokens start inside its padded row. */
  readonly starts: Int32Array;
  readonly inputIds: BigInt64Array;
  readonly attentionMask: BigInt64Array;
  /** Present when the tokenizer returned token type ids or `withTokenTypes` asked for zeros. */
  readonly tokenTypeIds?: BigInt64Array;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Writes non-negative 31-bit integers as int64 without a BigInt per element. */
class Int64Writer {
  readonly out: BigInt64Array;
  readonly #words: Int32Array;
  readonly #lo: number;
  constructor(length: number) {
    this.out = new BigInt64Array(length);
    this.#words = new Int32Array(this.out.buffer);
    this.#lo = LITTLE_ENDIAN ? 0 : 1;
  }
  set(index: number, value: number): void {
    // The high word stays 0 (the array starts zeroed and values are checked non-negative).
    this.#words[index * 2 + this.#lo] = value;
  }
}

function checkId(v: number | undefined): number {
  if (v === undefined || !Number.isInteger(v) || v < 0 || v > 0x7fff_ffff) throw new TypeError('token id out of range');
  return v;
}

export function buildBatchInputs(
  ids: readonly ArrayLike<number>[],
  typeIds: readonly ArrayLike<number>[] | undefined,
  options: { readonly padId: number; readonly side: PaddingSide; readonly withTokenTypes: boolean },
): BatchInputs {
  const rows = ids.length;
  let seq = 0;
  for (const r of ids) if (r.length > seq) seq = r.length;
  const padId = checkId(options.padId);
  const inputIds = new Int64Writer(rows * seq);
  const mask = new Int64Writer(rows * seq);
  const types = typeIds !== undefined || options.withTokenTypes ? new Int64Writer(rows * seq) : undefined;
  const starts = new Int32Array(rows);
  for (let i = 0; i < rows; i++) {
    const row = ids[i] ?? [];
    const typeRow = typeIds?.[i];
    const start = options.side === 'left' ? seq - row.length : 0;
    starts[i] = start;
    const base = i * seq;
    for (let j = 0; j < seq; j++) {
      const t = j - start;
      if (t >= 0 && t < row.length) {
        inputIds.set(base + j, checkId(row[t]));
        mask.set(base + j, 1);
        if (types !== undefined && typeRow !== undefined) types.set(base + j, checkId(typeRow[t]));
      } else if (padId !== 0) {
        inputIds.set(base + j, padId);
      }
    }
  }
  const result = { rows, seq, starts, inputIds: inputIds.out, attentionMask: mask.out };
  return types === undefined ? result : { ...result, tokenTypeIds: types.out };
}
