/**
 * Binary HTTP messages (RFC 9292), the content type `message/bhttp` that standard Oblivious
 * HTTP (RFC 9458) clients and relays carry.
 *
 * Encoding: known-length form (framing indicator 0 for requests, 1 for responses), without
 * padding or truncation. Decoding: known-length (0, 1) and indeterminate-length (2, 3) forms,
 * truncated messages (section 3.8: a message may end after any complete section; missing
 * sections are empty) and zero padding. Every length is checked against what is left before
 * it is read; field lines, field bytes and content are bounded by named limits; a non-zero
 * byte after the message, a non-minimal varint, an informational status outside 100..199 or a
 * final status outside 200..599 is MALFORMED. Field names must be lowercase tokens
 * (section 3.6: "field names MUST be lowercase"), values free of NUL, CR and LF.
 */
import { CloisterError } from '../errors.js';
import { concatBytes, utf8 } from '../core/bytes.js';
import { readVarint, encodeVarint } from '../core/varint.js';

export interface BhttpLimits {
  /** Most field lines in one field section. Default 128. */
  readonly maxFieldLines: number;
  /** Most bytes of names and values in one field section. Default 64 KiB. */
  readonly maxFieldBytes: number;
  /** Largest content. Default 8 MiB. */
  readonly maxContentBytes: number;
  /** Most informational (1xx) responses before the final one. Default 8. */
  readonly maxInformational: number;
}

export const DEFAULT_BHTTP_LIMITS: BhttpLimits = Object.freeze({
  maxFieldLines: 128,
  maxFieldBytes: 64 * 1024,
  maxContentBytes: 8 * 1024 * 1024,
  maxInformational: 8,
});

export type BhttpField = readonly [name: string, value: string];

export interface BhttpRequest {
  readonly method: string;
  readonly scheme: string;
  readonly authority: string;
  readonly path: string;
  readonly headers: readonly BhttpField[];
  readonly content: Uint8Array;
  readonly trailers: readonly BhttpField[];
}

export interface BhttpInformational {
  readonly status: number;
  readonly headers: readonly BhttpField[];
}

export interface BhttpResponse {
  readonly informational: readonly BhttpInformational[];
  readonly status: number;
  readonly headers: readonly BhttpField[];
  readonly content: Uint8Array;
  readonly trailers: readonly BhttpField[];
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const METHOD = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function bad(why: string, detail: Record<string, string | number> = {}): CloisterError {
  return new CloisterError('MALFORMED', `binary HTTP: ${why}`, { detail });
}

function limitHit(limit: keyof BhttpLimits, value: number): CloisterError {
  return new CloisterError('LIMIT_EXCEEDED', `binary HTTP: over ${limit} = ${value}`, { detail: { limit, value } });
}

function resolve(l: Partial<BhttpLimits> | undefined): BhttpLimits {
  const out = { ...DEFAULT_BHTTP_LIMITS, ...l };
  for (const [k, v] of Object.entries(out)) if (!Number.isSafeInteger(v) || v < 0) throw new CloisterError('CONFIG_INVALID', `${k} must be a non-negative integer`);
  return out;
}

// --- Encoding (known-length) -----------------------------------------------------------------

function lengthPrefixed(b: Uint8Array): Uint8Array[] {
  return [encodeVarint(b.byteLength), b];
}

function checkFields(fields: readonly BhttpField[], where: string): void {
  for (const [name, value] of fields) {
    if (!TOKEN.test(name)) throw new CloisterError('INVALID_ARGUMENT', `${where}: field name ${JSON.stringify(name)} is not a lowercase token`);
    if (/[\0\r\n]/.test(value)) throw new CloisterError('INVALID_ARGUMENT', `${where}: field ${name} has NUL, CR or LF in its value`);
  }
}

function fieldSection(fields: readonly BhttpField[]): Uint8Array[] {
  const lines = fields.flatMap(([n, v]) => [...lengthPrefixed(utf8(n)), ...lengthPrefixed(utf8(v))]);
  const body = concatBytes(...lines);
  return lengthPrefixed(body);
}

/** Known-length request (RFC 9292 section 3.1, framing indicator 0). */
export function encodeBhttpRequest(r: BhttpRequest): Uint8Array {
  if (!METHOD.test(r.method)) throw new CloisterError('INVALID_ARGUMENT', 'binary HTTP: method must be a token');
  checkFields(r.headers, 'headers');
  checkFields(r.trailers, 'trailers');
  return concatBytes(
    encodeVarint(0),
    ...lengthPrefixed(utf8(r.method)),
    ...lengthPrefixed(utf8(r.scheme)),
    ...lengthPrefixed(utf8(r.authority)),
    ...lengthPrefixed(utf8(r.path)),
    ...fieldSection(r.headers),
    ...lengthPrefixed(r.content),
    ...fieldSection(r.trailers),
  );
}

/** Known-length response (RFC 9292 section 3.1, framing indicator 1). */
export function encodeBhttpResponse(r: BhttpResponse): Uint8Array {
  const parts: Uint8Array[] = [encodeVarint(1)];
  for (const i of r.informational) {
    if (!Number.isInteger(i.status) || i.status < 100 || i.status > 199) throw new CloisterError('INVALID_ARGUMENT', 'informational status must be 100..199');
    checkFields(i.headers, 'informational headers');
    parts.push(encodeVarint(i.status), ...fieldSection(i.headers));
  }
  if (!Number.isInteger(r.status) || r.status < 200 || r.status > 599) throw new CloisterError('INVALID_ARGUMENT', 'final status must be 200..599');
  checkFields(r.headers, 'headers');
  checkFields(r.trailers, 'trailers');
  parts.push(encodeVarint(r.status), ...fieldSection(r.headers), ...lengthPrefixed(r.content), ...fieldSection(r.trailers));
  return concatBytes(...parts);
}

// --- Decoding ---------------------------------------------------------------------------------

class Reader {
  at = 0;
  constructor(readonly b: Uint8Array) {}
  get done(): boolean {
    return this.at >= this.b.byteLength;
  }
  /** True when only zero padding is left (or nothing): the message was truncated here. */
  get atPadding(): boolean {
    for (let i = this.at; i < this.b.byteLength; i++) if (this.b[i] !== 0) return false;
    return true;
  }
  varint(what: string): number {
    const v = readVarint(this.b, this.at);
    if (v === undefined) throw bad(`truncated inside ${what}`, { offset: this.at });
    this.at += v.size;
    return v.value;
  }
  bytes(n: number, what: string): Uint8Array {
    if (n > this.b.byteLength - this.at) throw bad(`${what} runs past the end (${n} bytes, ${this.b.byteLength - this.at} left)`, { offset: this.at });
    const out = this.b.slice(this.at, this.at + n);
    this.at += n;
    return out;
  }
}

const decoder = new TextDecoder('utf-8', { fatal: true });
function text(b: Uint8Array, what: string): string {
  try {
    return decoder.decode(b);
  } catch {
    throw bad(`${what} is not UTF-8`);
  }
}

function fieldLine(r: Reader, nameLength: number, l: BhttpLimits, budget: { lines: number; bytes: number }): BhttpField {
  const name = text(r.bytes(nameLength, 'field name'), 'field name');
  const valueLength = r.varint('field value length');
  budget.lines += 1;
  budget.bytes += nameLength + valueLength;
  if (budget.lines > l.maxFieldLines) throw limitHit('maxFieldLines', l.maxFieldLines);
  if (budget.bytes > l.maxFieldBytes) throw limitHit('maxFieldBytes', l.maxFieldBytes);
  const value = text(r.bytes(valueLength, 'field value'), 'field value');
  if (!TOKEN.test(name)) throw bad('a field name is not a lowercase token');
  if (/[\0\r\n]/.test(value)) throw bad('a field value holds NUL, CR or LF');
  return [name, value];
}

function knownFieldSection(r: Reader, l: BhttpLimits): BhttpField[] {
  const length = r.varint('field section length');
  if (length > l.maxFieldBytes + 2 * 8 * l.maxFieldLines) throw limitHit('maxFieldBytes', l.maxFieldBytes);
  const section = new Reader(r.bytes(length, 'field section'));
  const out: BhttpField[] = [];
  const budget = { lines: 0, bytes: 0 };
  while (!section.done) {
    const nameLength = section.varint('field name length');
    if (nameLength === 0) throw bad('an empty field name');
    out.push(fieldLine(section, nameLength, l, budget));
  }
  return out;
}

function indeterminateFieldSection(r: Reader, l: BhttpLimits): BhttpField[] {
  const out: BhttpField[] = [];
  const budget = { lines: 0, bytes: 0 };
  for (;;) {
    const nameLength = r.varint('field name length');
    if (nameLength === 0) return out;
    out.push(fieldLine(r, nameLength, l, budget));
  }
}

function content(r: Reader, l: BhttpLimits, known: boolean): Uint8Array {
  if (known) {
    const n = r.varint('content length');
    if (n > l.maxContentBytes) throw limitHit('maxContentBytes', l.maxContentBytes);
    return r.bytes(n, 'content');
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const n = r.varint('content chunk length');
    if (n === 0) return concatBytes(...chunks);
    total += n;
    if (total > l.maxContentBytes) throw limitHit('maxContentBytes', l.maxContentBytes);
    chunks.push(r.bytes(n, 'content chunk'));
  }
}

/** Content and trailers, either of which may be truncated away (section 3.8). */
function tail(r: Reader, l: BhttpLimits, known: boolean): { content: Uint8Array; trailers: BhttpField[] } {
  if (r.atPadding) return { content: new Uint8Array(0), trailers: [] };
  const c = content(r, l, known);
  if (r.atPadding) return { content: c, trailers: [] };
  const trailers = known ? knownFieldSection(r, l) : indeterminateFieldSection(r, l);
  if (!r.atPadding) throw bad('non-zero bytes after the message (padding must be zeros)', { offset: r.at });
  return { content: c, trailers };
}

function fields(r: Reader, l: BhttpLimits, known: boolean): BhttpField[] {
  if (r.atPadding) return [];
  return known ? knownFieldSection(r, l) : indeterminateFieldSection(r, l);
}

export function decodeBhttpRequest(bytes: Uint8Array, limits?: Partial<BhttpLimits>): BhttpRequest {
  const l = resolve(limits);
  const r = new Reader(bytes);
  const framing = r.varint('framing indicator');
  if (framing !== 0 && framing !== 2) throw bad(`framing indicator ${framing} is not a request (0 or 2)`);
  const known = framing === 0;
  const control = (what: string): string => text(r.bytes(r.varint(`${what} length`), what), what);
  const method = control('method');
  if (!METHOD.test(method)) throw bad('the method is not a token');
  const scheme = control('scheme');
  const authority = control('authority');
  const path = control('path');
  const headers = fields(r, l, known);
  const { content: c, trailers } = tail(r, l, known);
  return { method, scheme, authority, path, headers, content: c, trailers };
}

export function decodeBhttpResponse(bytes: Uint8Array, limits?: Partial<BhttpLimits>): BhttpResponse {
  const l = resolve(limits);
  const r = new Reader(bytes);
  const framing = r.varint('framing indicator');
  if (framing !== 1 && framing !== 3) throw bad(`framing indicator ${framing} is not a response (1 or 3)`);
  const known = framing === 1;
  const informational: BhttpInformational[] = [];
  for (;;) {
    const status = r.varint('status code');
    if (status >= 100 && status <= 199) {
      if (informational.length >= l.maxInformational) throw limitHit('maxInformational', l.maxInformational);
      informational.push({ status, headers: known ? knownFieldSection(r, l) : indeterminateFieldSection(r, l) });
      continue;
    }
    if (status < 200 || status > 599) throw bad(`status ${status} is not 100..599`);
    const headers = fields(r, l, known);
    const { content: c, trailers } = tail(r, l, known);
    return { informational, status, headers, content: c, trailers };
  }
}
