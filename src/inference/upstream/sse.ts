/**
 * Incremental Server-Sent Events parser (WHATWG HTML, section 9.2.6 "Interpreting an event
 * stream"), for the `stream: true` responses of OpenAI-compatible engines.
 *
 * Works on bytes, not strings: line terminators (CR, LF, CRLF) never occur inside a UTF-8
 * multi-byte sequence, so lines are cut on bytes and each complete line is decoded with a
 * fatal UTF-8 decoder. A chunk boundary may fall anywhere, including between the CR and LF
 * of a CRLF pair. Buffering is bounded: the bytes of one event (its lines, comments
 * included, plus a pending partial line) may not exceed `maxEventBytes`.
 */
import { concatBytes } from '../../core/bytes.js';
import { CloisterError } from '../../errors.js';

export interface SseEvent {
  /** The `event:` field, or "message" when absent (section 9.2.6, dispatch step 4). */
  readonly event: string;
  /** The `data:` lines joined with LF, without the trailing LF. */
  readonly data: string;
  /** The last `id:` field seen in the stream, if any. */
  readonly id?: string;
}

interface SseParserOptions {
  /** Largest event (all of its raw lines, terminators included). Default 1 MiB. */
  readonly maxEventBytes?: number;
}

export const DEFAULT_MAX_EVENT_BYTES = 1024 * 1024;

/** Compact the pending partial line once it is made of this many pieces (many tiny writes). */
const MAX_PENDING_PARTS = 64;

const LF = 0x0a;
const CR = 0x0d;

export class SseParser {
  readonly #maxEventBytes: number;
  readonly #decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  /** The previous chunk ended in CR: a LF at the start of the next one belongs to it. */
  #skipLeadingLf = false;
  #atStreamStart = true;
  #eventBytes = 0;
  #eventType = '';
  /** The first `data:` line; further lines go to #moreData (most events have one). */
  #data = '';
  #moreData: string[] | undefined;
  #hasData = false;
  #lastId: string | undefined;

  constructor(options: SseParserOptions = {}) {
    const max = options.maxEventBytes ?? DEFAULT_MAX_EVENT_BYTES;
    if (!Number.isSafeInteger(max) || max < 1) {
      throw new CloisterError('INVALID_ARGUMENT', 'maxEventBytes must be a positive integer');
    }
    this.#maxEventBytes = max;
  }

  /** Feed bytes; returns the events completed by them, in order. Never keeps `chunk`. */
  push(chunk: Uint8Array): SseEvent[] {
    const events: SseEvent[] = [];
    let start = 0;
    if (this.#skipLeadingLf && chunk.length > 0) {
      this.#skipLeadingLf = false;
      if (chunk[0] === LF) start = 1;
    }
    // Line ends are found with indexOf (a native scan) rather than a byte loop in JavaScript;
    // the next CR is remembered so each byte is scanned at most once per terminator kind.
    let nextLf = -2;
    let nextCr = -2;
    let i = start;
    while (i < chunk.length) {
      if (nextLf !== -1 && nextLf < i) nextLf = chunk.indexOf(LF, i);
      if (nextCr !== -1 && nextCr < i) nextCr = chunk.indexOf(CR, i);
      if (nextLf === -1 && nextCr === -1) break;
      i = nextLf === -1 ? nextCr : nextCr === -1 ? nextLf : Math.min(nextLf, nextCr);
      const b = chunk[i];
      this.#count(i - start + 1);
      const line = this.#takeLine(chunk.subarray(start, i));
      if (b === CR) {
        if (i + 1 < chunk.length) {
          if (chunk[i + 1] === LF) i++;
        } else {
          this.#skipLeadingLf = true;
        }
      }
      i++;
      start = i;
      const event = this.#processLine(line);
      if (event !== undefined) events.push(event);
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.#count(rest.length);
      // Copy: the caller may reuse its buffer (public API never aliases caller bytes).
      this.#pending.push(rest.slice());
      this.#pendingBytes += rest.length;
      if (this.#pending.length > MAX_PENDING_PARTS) this.#pending = [concatBytes(...this.#pending)];
    }
    return events;
  }

  /**
   * True when bytes of an unfinished event are buffered. At end of stream such an event is
   * discarded (section 9.2.6: "incomplete event ... is discarded"); callers use this to tell
   * a cleanly ended stream from a cut one.
   */
  get hasPartialEvent(): boolean {
    return this.#pendingBytes > 0 || this.#hasData;
  }

  #count(n: number): void {
    this.#eventBytes += n;
    if (this.#eventBytes > this.#maxEventBytes) {
      throw new CloisterError('LIMIT_EXCEEDED', 'server-sent event exceeds maxEventBytes', {
        detail: { limit: 'maxEventBytes', max: this.#maxEventBytes },
      });
    }
  }

  #takeLine(tail: Uint8Array): string {
    // An empty line (the end of every event) needs no decoding.
    if (tail.length === 0 && this.#pending.length === 0) {
      this.#atStreamStart = false;
      return '';
    }
    let bytes = tail;
    if (this.#pending.length > 0) {
      this.#pending.push(tail);
      bytes = concatBytes(...this.#pending);
      this.#pending = [];
      this.#pendingBytes = 0;
    }
    if (this.#atStreamStart) {
      this.#atStreamStart = false;
      // A single leading U+FEFF BOM is skipped (section 9.2.6).
      if (bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) bytes = bytes.subarray(3);
    }
    try {
      return this.#decoder.decode(bytes);
    } catch (cause) {
      throw new CloisterError('MALFORMED', 'server-sent event stream is not valid UTF-8', { cause });
    }
  }

  #processLine(line: string): SseEvent | undefined {
    if (line === '') return this.#dispatch();
    if (line.startsWith(':')) return undefined; // comment
    const colon = line.indexOf(':');
    let field: string;
    let value: string;
    if (colon === -1) {
      field = line;
      value = '';
    } else {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
    }
    switch (field) {
      case 'data':
        if (!this.#hasData) this.#data = value;
        else (this.#moreData ??= []).push(value);
        this.#hasData = true;
        break;
      case 'event':
        this.#eventType = value;
        break;
      case 'id':
        if (!value.includes('\0')) this.#lastId = value;
        break;
      default:
        // "retry" and unknown fields are ignored (section 9.2.6).
        break;
    }
    return undefined;
  }

  #dispatch(): SseEvent | undefined {
    const hadData = this.#hasData;
    const data = this.#moreData === undefined ? this.#data : [this.#data, ...this.#moreData].join('\n');
    const type = this.#eventType === '' ? 'message' : this.#eventType;
    this.#eventBytes = 0;
    this.#eventType = '';
    this.#data = '';
    this.#moreData = undefined;
    this.#hasData = false;
    // An event without data lines is not dispatched (dispatch step 2).
    if (!hadData) return undefined;
    return this.#lastId === undefined ? { event: type, data } : { event: type, data, id: this.#lastId };
  }
}
