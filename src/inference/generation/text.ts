/**
 * Token ids to text, one token at a time, and stop sequences.
 *
 * IncrementalText decodes the way streaming servers do (prefix/read offsets): a token's
 * text is the difference between decoding the recent window with and without it, so
 * tokenizers whose decoders merge pieces (WordPiece `##`, byte-level BPE, SentencePiece
 * leading spaces) stream exactly the text a whole decode gives. A token that ends inside a
 * multi-byte character (U+FFFD at the end) waits for the next one.
 *
 * StopText holds back text that could still become a stop sequence, and cuts the output
 * before the first stop sequence found (the stop sequence itself is not returned, as OpenAI).
 */

export type DecodeIds = (ids: readonly number[]) => string;

/** How many prompt tokens seed the window (context for the first generated token's text). */
const SEED_TOKENS = 4;

export class IncrementalText {
  readonly #decode: DecodeIds;
  readonly #ids: number[];
  #prefix = 0;
  #read: number;

  constructor(decode: DecodeIds, promptIds: readonly number[]) {
    this.#decode = decode;
    this.#ids = promptIds.slice(Math.max(0, promptIds.length - SEED_TOKENS));
    this.#read = this.#ids.length;
  }

  /** The new text this token completes ('' when it waits for more). */
  push(id: number): string {
    this.#ids.push(id);
    return this.#take(false);
  }

  /** Whatever text is still held (an incomplete character at the very end included). */
  flush(): string {
    return this.#take(true);
  }

  #take(final: boolean): string {
    if (this.#read >= this.#ids.length) return '';
    const before = this.#decode(this.#ids.slice(this.#prefix, this.#read));
    const after = this.#decode(this.#ids.slice(this.#prefix));
    if (after.length <= before.length || !after.startsWith(before) || (!final && after.endsWith('\uFFFD'))) {
      if (!final) return '';
      // Final: hand over what differs, even if the decoder rewrote earlier text.
      return after.startsWith(before) ? after.slice(before.length) : '';
    }
    const delta = after.slice(before.length);
    // Drop the consumed window: the next decode starts at the last token already read.
    this.#ids.splice(0, this.#read);
    this.#prefix = 0;
    this.#read = this.#ids.length;
    return delta;
  }
}

export interface StopResult {
  /** Text that may be sent now. */
  readonly text: string;
  /** True once a stop sequence was found: `text` ends just before it; generation ends. */
  readonly stopped: boolean;
}

export class StopText {
  readonly #stops: readonly string[];
  readonly #longest: number;
  #text = '';
  #sent = 0;

  constructor(stops: readonly string[]) {
    this.#stops = stops;
    this.#longest = stops.reduce((m, s) => Math.max(m, s.length), 0);
  }

  push(delta: string): StopResult {
    if (delta === '') return { text: '', stopped: false };
    const from = Math.max(0, this.#text.length - this.#longest + 1);
    this.#text += delta;
    if (this.#stops.length === 0) return this.#send(this.#text.length, false);
    let cut = -1;
    for (const s of this.#stops) {
      const i = this.#text.indexOf(s, from);
      if (i !== -1 && (cut === -1 || i < cut)) cut = i;
    }
    if (cut !== -1) return this.#send(cut, true);
    return this.#send(this.#text.length - this.#heldBack(), false);
  }

  /** The held-back text at the end of generation (no stop sequence completed). */
  flush(): string {
    return this.#send(this.#text.length, false).text;
  }

  /** Longest suffix of the text that is a proper prefix of some stop sequence. */
  #heldBack(): number {
    const t = this.#text;
    for (let n = Math.min(this.#longest - 1, t.length - this.#sent); n > 0; n--) {
      const tail = t.slice(t.length - n);
      if (this.#stops.some((s) => s.startsWith(tail))) return n;
    }
    return 0;
  }

  #send(upTo: number, stopped: boolean): StopResult {
    const end = Math.max(upTo, this.#sent);
    const text = this.#text.slice(this.#sent, end);
    this.#sent = end;
    return { text, stopped };
  }
}
