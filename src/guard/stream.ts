/**
 * Incremental guarding of streamed text (docs/GUARD.md, "Streaming"). Text is held back until
 * no identifier can still be growing across the release point:
 * - the release point is the last whitespace at least `lookaheadChars` (default
 *   MAX_SPACED_IDENTIFIER_CHARS) before the end of what arrived, so an identifier that may
 *   contain spaces (an address, "Jan 5, 2020") is fully in view before any of it is released,
 *   and a space-free one (an email, an SSN) is never cut: it is released only once whitespace
 *   follows it;
 * - an identifier that starts before the release point and ends after it moves the point
 *   back to its start;
 * - at most `maxHoldChars` (default 4096) are held: beyond, the text is released at the
 *   lookahead point even without whitespace (a stream with no spaces at all), so memory stays
 *   bounded.
 * - text is released in steps of at least `releaseStepChars` (default 32): the rules run once
 *   per step, not once per token.
 * Latency cost: a token reaches the client once `lookaheadChars` to `lookaheadChars +
 * releaseStepChars` more characters (about 16 to 24 tokens) arrived, or at the end of the answer.
 */
import { CloisterError } from '../errors.js';
import type { GuardTally } from './policy.js';
import { MAX_SPACED_IDENTIFIER_CHARS, detectIdentifiers, mergeFindings } from './rules.js';
import type { Tagger } from './tagger.js';
import type { Finding } from './rules.js';

export const DEFAULT_LOOKAHEAD_CHARS = MAX_SPACED_IDENTIFIER_CHARS;
export const DEFAULT_MAX_HOLD_CHARS = 4096;
/**
 * Released text kept as left context for the rules (labelled identifiers such as
 * "SSN: 123456789" look behind the number): a label released before its number still counts.
 */
const CONTEXT_CHARS = 48;

export const DEFAULT_RELEASE_STEP_CHARS = 32;

export interface StreamGuardOptions {
  readonly lookaheadChars?: number;
  readonly maxHoldChars?: number;
  readonly releaseStepChars?: number;
}

export class StreamGuard {
  readonly #tally: GuardTally;
  readonly #lookahead: number;
  readonly #maxHold: number;
  readonly #step: number;
  #pending = '';
  #context = '';

  constructor(tally: GuardTally, options: StreamGuardOptions = {}) {
    this.#tally = tally;
    this.#lookahead = options.lookaheadChars ?? DEFAULT_LOOKAHEAD_CHARS;
    this.#maxHold = options.maxHoldChars ?? DEFAULT_MAX_HOLD_CHARS;
    this.#step = options.releaseStepChars ?? DEFAULT_RELEASE_STEP_CHARS;
    if (!Number.isSafeInteger(this.#step) || this.#step < 1) throw new CloisterError('CONFIG_INVALID', `guard releaseStepChars must be a positive integer (got ${this.#step})`);
    if (!Number.isSafeInteger(this.#lookahead) || this.#lookahead < 1 || !Number.isSafeInteger(this.#maxHold) || this.#maxHold <= this.#lookahead) {
      throw new CloisterError('CONFIG_INVALID', `guard lookaheadChars must be >= 1 and maxHoldChars greater than it (got ${this.#lookahead}, ${this.#maxHold})`);
    }
  }

  /** Characters held back, not yet released. */
  get held(): number {
    return this.#pending.length;
  }

  /** Adds streamed text; returns what can be released now (possibly ''), guarded by the rules. */
  push(text: string): string {
    this.#pending += text;
    const cut = this.#cutPoint();
    return cut === undefined ? '' : this.#release(cut, this.#detect(this.#pending));
  }

  /** `push` with a tagger model's findings next to the rules' (./tagger.ts). */
  async pushTagged(text: string, tagger: Tagger, signal: AbortSignal): Promise<string> {
    this.#pending += text;
    const cut = this.#cutPoint();
    return cut === undefined ? '' : this.#release(cut, await this.#detectTagged(this.#pending, tagger, signal));
  }

  /** `finish` with a tagger model's findings next to the rules'. */
  async finishTagged(tagger: Tagger, signal: AbortSignal): Promise<string> {
    const rest = this.#pending;
    this.#pending = '';
    if (rest.length === 0) return '';
    const findings = await this.#detectTagged(rest, tagger, signal);
    return this.#tally.apply(rest, findings);
  }

  /** Where the held text may be cut before the findings are known; undefined: release nothing. */
  #cutPoint(): number | undefined {
    const text2 = this.#pending;
    const limit = text2.length - this.#lookahead;
    if (limit < this.#step) return undefined;
    let cut = -1;
    for (let i = limit; i > 0; i--) {
      const c = text2.charCodeAt(i - 1);
      if (c === 0x20 || c === 0x0a || c === 0x09 || c === 0x0d) {
        cut = i;
        break;
      }
    }
    if (cut <= 0) {
      if (text2.length <= this.#maxHold) return undefined;
      cut = limit;
    }
    return cut;
  }

  /** Releases the held text up to `cut`, moved back to the start of any finding across it. */
  #release(cutPoint: number, findings: readonly Finding[]): string {
    const text2 = this.#pending;
    let cut = cutPoint;
    for (const f of findings) {
      if (f.start < cut && f.end > cut) cut = f.start;
    }
    if (cut <= 0) return '';
    const released = text2.slice(0, cut);
    this.#pending = text2.slice(cut);
    this.#context = (this.#context + released).slice(-CONTEXT_CHARS);
    return this.#tally.apply(released, findings.filter((f) => f.end <= cut));
  }

  /** The end of the text: releases everything held, guarded. */
  finish(): string {
    const rest = this.#pending;
    this.#pending = '';
    return rest.length === 0 ? '' : this.#tally.apply(rest, this.#detect(rest));
  }

  /** Findings in `text` (offsets into it), with the released context in view of the rules. */
  #detect(text: string): Finding[] {
    return this.#inText(detectIdentifiers(this.#context + text));
  }

  async #detectTagged(text: string, tagger: Tagger, signal: AbortSignal): Promise<Finding[]> {
    const whole = this.#context + text;
    return this.#inText(mergeFindings([...detectIdentifiers(whole), ...(await tagger(whole, signal))]));
  }

  /** Findings of context + text as offsets into text; those that start in the context are dropped. */
  #inText(findings: readonly Finding[]): Finding[] {
    const ctx = this.#context.length;
    if (ctx === 0) return [...findings];
    const out: Finding[] = [];
    for (const f of findings) {
      // A span that starts in released text was complete when that text was released.
      if (f.start >= ctx) out.push({ type: f.type, start: f.start - ctx, end: f.end - ctx });
    }
    return out;
  }
}
