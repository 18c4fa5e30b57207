/**
 * The one CBOR (RFC 8949) codec in Cloister: the protocol's key config, inner messages and
 * transport frames (wire.ts), the Nitro COSE_Sign1 attestation document, the NSM driver messages and the EIF signature
 * section all go through it. Written here rather than borrowed so that every acceptance
 * rule is visible, is a named option, and fails closed.
 *
 * Encoding is deterministic by default (section 4.2.1): definite lengths, shortest integer
 * and length heads, map keys sorted bytewise by their encodings. `sortKeys: false` keeps
 * Map insertion order instead, for peers that expect serde_cbor struct field order (NSM
 * requests, simulated NSM documents). Non-integer numbers are always float64 (no float is
 * part of any deterministic structure we hash; messages may carry e.g. a temperature); with
 * `allowFloats`, the strict decoder accepts only that form: float64 with a non-integral
 * value (one encoding per value; float32 and integral floats only when `requireCanonical`
 * is false).
 *
 * Decoding is strict by default: exactly one item and no trailing bytes, the section 4.2.1
 * deterministic form (shortest heads, definite lengths, sorted keys), no tags, no floats, no
 * undefined or other simple values, valid UTF-8, map keys only text or unsigned integers and
 * never duplicated, integers within +-(2^53 - 1), bounded depth, item count and input size.
 * Each relaxation is an explicit option (indefinite-length arrays and maps for Nitro
 * documents, tags for COSE tag 18, floats for messages, bigint for u64 fields).
 *
 * Maps decode to `Map` so integer keys stay integers and a "__proto__" key is plain data;
 * byte strings decode to private copies, never views of the input.
 */
import { CloisterError } from '../errors.js';

/** A map key: text or an unsigned integer (negative keys are rejected both ways). */
export type CborKey = number | string;

/** A tagged data item (RFC 8949 section 3.4), e.g. COSE_Sign1 is tag 18. */
export class CborTagged {
  readonly tag: number;
  readonly value: CborValue;
  constructor(tag: number, value: CborValue) {
    if (!Number.isSafeInteger(tag) || tag < 0) throw new CloisterError('INVALID_ARGUMENT', 'CBOR tag must be an unsigned safe integer');
    this.tag = tag;
    this.value = value;
    Object.freeze(this);
  }
}

/** What `decodeCbor` returns. `bigint` only with `allowBigInt`, `CborTagged` only with `allowTags`. */
export type CborValue = number | bigint | string | boolean | null | Uint8Array | CborValue[] | CborMap | CborTagged;
export type CborMap = Map<CborKey, CborValue>;

/** What `encodeCbor` accepts. `undefined` map and object values are omitted. */
export type CborInput =
  | number
  | bigint
  | string
  | Uint8Array
  | boolean
  | null
  | CborTagged
  | readonly CborInput[]
  | ReadonlyMap<CborKey, CborInput | undefined>
  | { readonly [k: string]: CborInput | undefined };

export interface CborDecodeOptions {
  /** Deepest nesting of arrays, maps and tags (the top item is depth 0). Default 16. */
  readonly maxDepth?: number;
  /** Most data items (map keys count) in one input. Default 65 536. */
  readonly maxItems?: number;
  /** Largest input in bytes. Default 16 MiB. */
  readonly maxBytes?: number;
  /**
   * Require the core deterministic encoding (section 4.2.1): shortest heads, definite
   * lengths, map keys in bytewise order of their encodings. Default true. Cannot be combined
   * with `allowIndefinite`.
   */
  readonly requireCanonical?: boolean;
  /**
   * With `requireCanonical: false`: still require shortest integer, length and tag heads
   * (section 4.2.1, first rule; what serde_cbor and ciborium write). Default true.
   */
  readonly requireShortestHeads?: boolean;
  /** Accept indefinite-length arrays and maps (section 3.2.2); strings never. Default false. */
  readonly allowIndefinite?: boolean;
  /** Accept tags, decoded as `CborTagged`. Default false. */
  readonly allowTags?: boolean;
  /** Accept finite float32 and float64 values. Default false. */
  readonly allowFloats?: boolean;
  /** Decode integers beyond +-(2^53 - 1) (up to 64 bits) as bigint instead of rejecting them. Default false. */
  readonly allowBigInt?: boolean;
}

interface CborEncodeOptions {
  /** Sort map keys as section 4.2.1 requires; false keeps insertion order. Default true. */
  readonly sortKeys?: boolean;
  /** Deepest nesting accepted (a guard against cyclic input). Default 32. */
  readonly maxDepth?: number;
}

export const DEFAULT_CBOR_DECODE_OPTIONS = Object.freeze({
  maxDepth: 16,
  maxItems: 65_536,
  maxBytes: 16 * 1024 * 1024,
  requireCanonical: true,
  requireShortestHeads: true,
  allowIndefinite: false,
  allowTags: false,
  allowFloats: false,
  allowBigInt: false,
} as const satisfies Required<CborDecodeOptions>);

const DEFAULT_CBOR_ENCODE_OPTIONS = Object.freeze({
  sortKeys: true,
  maxDepth: 32,
} as const satisfies Required<CborEncodeOptions>);

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const U64_LIMIT = 1n << 64n;
const te = new TextEncoder();
const td = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function limit(value: number | undefined, fallback: number, name: string): number {
  const v = value ?? fallback;
  if (!(Number.isSafeInteger(v) && v >= 0)) throw new CloisterError('INVALID_ARGUMENT', `CBOR option ${name} must be a non-negative integer`);
  return v;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.byteLength, b.byteLength);
  for (let i = 0; i < n; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return a.byteLength - b.byteLength;
}

// ---------------------------------------------------------------------------------------
// Encoder

/** Bytes of a head whose argument is `n` (shortest form, section 4.2.1). */
function headSize(n: number): number {
  return n < 24 ? 1 : n < 0x100 ? 2 : n < 0x1_0000 ? 3 : n < 0x1_0000_0000 ? 5 : 9;
}

/** Strings up to this many UTF-16 units are written by a plain loop when they are ASCII. */
const SHORT_TEXT = 64;

class Writer {
  #buf: Uint8Array;
  #len = 0;

  constructor(capacity = 256) {
    this.#buf = new Uint8Array(capacity);
  }

  get capacity(): number {
    return this.#buf.byteLength;
  }

  #ensure(n: number): void {
    if (this.#len + n <= this.#buf.byteLength) return;
    let cap = this.#buf.byteLength * 2;
    while (cap < this.#len + n) cap *= 2;
    const nb = new Uint8Array(cap);
    nb.set(this.#buf.subarray(0, this.#len));
    this.#buf = nb;
  }

  #view(): DataView {
    return new DataView(this.#buf.buffer, this.#buf.byteOffset, this.#buf.byteLength);
  }

  /** A head with the shortest argument form (section 4.2.1); `n` is a u64. */
  head(major: number, n: number | bigint): void {
    this.#ensure(9);
    const b = this.#buf;
    const m = major << 5;
    if (typeof n === 'bigint' && n <= MAX_SAFE) n = Number(n);
    if (typeof n === 'bigint') {
      b[this.#len++] = m | 27;
      this.#view().setBigUint64(this.#len, n);
      this.#len += 8;
    } else if (n < 24) {
      b[this.#len++] = m | n;
    } else if (n < 0x100) {
      b[this.#len++] = m | 24;
      b[this.#len++] = n;
    } else if (n < 0x1_0000) {
      b[this.#len++] = m | 25;
      b[this.#len++] = n >> 8;
      b[this.#len++] = n & 0xff;
    } else if (n < 0x1_0000_0000) {
      b[this.#len++] = m | 26;
      this.#view().setUint32(this.#len, n);
      this.#len += 4;
    } else {
      b[this.#len++] = m | 27;
      const v = this.#view();
      v.setUint32(this.#len, Math.floor(n / 0x1_0000_0000));
      v.setUint32(this.#len + 4, n >>> 0);
      this.#len += 8;
    }
  }

  bytes(x: Uint8Array): void {
    this.#ensure(x.byteLength);
    this.#buf.set(x, this.#len);
    this.#len += x.byteLength;
  }

  byte(x: number): void {
    this.#ensure(1);
    this.#buf[this.#len++] = x;
  }

  f64(x: number): void {
    this.#ensure(9);
    this.#buf[this.#len++] = 0xfb;
    this.#view().setFloat64(this.#len, x);
    this.#len += 8;
  }

  /** A text string (major type 3) encoded straight into the buffer, no intermediate copy. */
  text(s: string): void {
    const n = s.length;
    if (n <= SHORT_TEXT) {
      // Room for the widest head too: head() must not grow (and so move) the buffer after
      // the string bytes were written past #len.
      this.#ensure(n + 9);
      const start = this.#len;
      const b = this.#buf;
      const at = start + (n < 24 ? 1 : 2);
      let ascii = true;
      for (let i = 0; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) {
          ascii = false;
          break;
        }
        b[at + i] = c;
      }
      if (ascii) {
        this.head(3, n);
        this.#len = start + headSize(n) + n;
        return;
      }
    }
    // UTF-8 takes at most 3 bytes per UTF-16 unit: reserve the head for that bound, encode,
    // then move the bytes left if the actual length has a shorter head.
    const max = n * 3;
    const reserved = headSize(max);
    this.#ensure(max + 9);
    const start = this.#len;
    const { written } = te.encodeInto(s, this.#buf.subarray(start + reserved, start + reserved + max));
    const size = headSize(written);
    if (size !== reserved) this.#buf.copyWithin(start + size, start + reserved, start + reserved + written);
    this.head(3, written);
    this.#len = start + size + written;
  }

  result(): Uint8Array {
    return this.#buf.slice(0, this.#len);
  }

  /** Forget the content; the bytes written are zeroed (encoded messages may be plaintext). */
  reset(): void {
    this.#buf.fill(0, 0, this.#len);
    this.#len = 0;
  }
}

// Map keys repeat across messages ("t", "data", "choices", ...): the encodings of short text
// keys are kept, bounded (cleared when full, so hostile key churn costs only the cache).
const KEY_CACHE_MAX = 512;
const KEY_CACHE_MAX_LENGTH = 32;
const keyCache = new Map<string, Uint8Array>();

// One scratch writer for the outermost encodeCbor call; a nested call (a getter that encodes)
// gets its own. Grown as needed, dropped back when it grew past SCRATCH_KEEP_BYTES.
const SCRATCH_KEEP_BYTES = 64 * 1024;
let scratch: Writer | undefined = new Writer(4096);

function encodeKey(k: unknown): Uint8Array {
  if (typeof k === 'string') {
    const cached = keyCache.get(k);
    if (cached !== undefined) return cached;
    const w = new Writer(k.length + 9);
    w.text(k);
    const out = w.result();
    if (k.length <= KEY_CACHE_MAX_LENGTH) {
      if (keyCache.size >= KEY_CACHE_MAX) keyCache.clear();
      keyCache.set(k, out);
    }
    return out;
  }
  if (typeof k === 'number' && Number.isSafeInteger(k) && k >= 0) {
    const w = new Writer(9);
    w.head(0, k);
    return w.result();
  }
  throw new CloisterError('INVALID_ARGUMENT', 'CBOR map keys must be text or unsigned integers');
}

function isPlainObject(v: object): v is { readonly [k: string]: CborInput | undefined } {
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function encodeInto(w: Writer, v: CborInput, depth: number, o: Required<CborEncodeOptions>): void {
  if (depth > o.maxDepth) throw new CloisterError('INVALID_ARGUMENT', 'CBOR value nested too deeply', { detail: { limit: 'maxDepth' } });
  if (v === null) return w.byte(0xf6);
  if (v === false) return w.byte(0xf4);
  if (v === true) return w.byte(0xf5);
  if (typeof v === 'number') {
    if (Number.isSafeInteger(v)) return v >= 0 ? w.head(0, v) : w.head(1, -1 - v);
    if (Number.isInteger(v) || !Number.isFinite(v)) throw new CloisterError('INVALID_ARGUMENT', 'CBOR number out of range (use bigint beyond 2^53 - 1)');
    return w.f64(v);
  }
  if (typeof v === 'bigint') {
    if (v >= U64_LIMIT || v < -U64_LIMIT) throw new CloisterError('INVALID_ARGUMENT', 'CBOR integer beyond 64 bits');
    return v >= 0n ? w.head(0, v) : w.head(1, -1n - v);
  }
  if (typeof v === 'string') return w.text(v);
  if (v instanceof Uint8Array) {
    w.head(2, v.byteLength);
    return w.bytes(v);
  }
  if (v instanceof CborTagged) {
    w.head(6, v.tag);
    return encodeInto(w, v.value, depth + 1, o);
  }
  if (Array.isArray(v)) {
    const arr = v as readonly CborInput[];
    w.head(4, arr.length);
    for (const x of arr) encodeInto(w, x, depth + 1, o);
    return;
  }
  const entries: [unknown, CborInput][] = [];
  if (v instanceof Map) {
    for (const [k, x] of v as ReadonlyMap<unknown, CborInput | undefined>) if (x !== undefined) entries.push([k, x]);
  } else if (typeof v === 'object' && isPlainObject(v)) {
    // Own enumerable keys only: a "__proto__" own property is encoded as ordinary text.
    for (const [k, x] of Object.entries(v)) if (x !== undefined) entries.push([k, x]);
  } else {
    throw new CloisterError('INVALID_ARGUMENT', 'value not encodable as CBOR');
  }
  const keyed = entries.map(([k, x]) => ({ k: encodeKey(k), x }));
  if (o.sortKeys) keyed.sort((a, b) => compareBytes(a.k, b.k));
  w.head(5, keyed.length);
  let prev: Uint8Array | undefined;
  for (const e of keyed) {
    if (o.sortKeys && prev !== undefined && compareBytes(prev, e.k) === 0) throw new CloisterError('INVALID_ARGUMENT', 'duplicate CBOR map key');
    prev = e.k;
    w.bytes(e.k);
    encodeInto(w, e.x, depth + 1, o);
  }
}

/**
 * Encode one value. By default the output is the section 4.2.1 deterministic encoding.
 * Throws CloisterError(INVALID_ARGUMENT) for values CBOR here cannot carry: `undefined`
 * outside a map, non-finite numbers, integers beyond 2^53 - 1 as `number`, class instances,
 * negative or non-integer map keys, nesting beyond `maxDepth`.
 */
export function encodeCbor(v: CborInput, options: CborEncodeOptions = {}): Uint8Array {
  const o: Required<CborEncodeOptions> = {
    sortKeys: options.sortKeys ?? DEFAULT_CBOR_ENCODE_OPTIONS.sortKeys,
    maxDepth: limit(options.maxDepth, DEFAULT_CBOR_ENCODE_OPTIONS.maxDepth, 'maxDepth'),
  };
  const w = scratch ?? new Writer();
  scratch = undefined;
  try {
    encodeInto(w, v, 0, o);
    return w.result();
  } finally {
    if (w.capacity <= SCRATCH_KEEP_BYTES) {
      w.reset();
      scratch = w;
    } else {
      scratch = new Writer(4096);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Decoder

const BREAK = Symbol('break');

function malformed(msg: string, offset: number): CloisterError {
  return new CloisterError('MALFORMED', `CBOR: ${msg}`, { detail: { offset } });
}

function exceeded(name: 'maxDepth' | 'maxItems' | 'maxBytes', value: number): CloisterError {
  return new CloisterError('LIMIT_EXCEEDED', `CBOR: ${name} (${value}) exceeded`, { detail: { limit: name, value } });
}

function resolveDecodeOptions(options: CborDecodeOptions): Required<CborDecodeOptions> {
  const d = DEFAULT_CBOR_DECODE_OPTIONS;
  const o: Required<CborDecodeOptions> = {
    maxDepth: limit(options.maxDepth, d.maxDepth, 'maxDepth'),
    maxItems: limit(options.maxItems, d.maxItems, 'maxItems'),
    maxBytes: limit(options.maxBytes, d.maxBytes, 'maxBytes'),
    requireCanonical: options.requireCanonical ?? d.requireCanonical,
    requireShortestHeads: options.requireShortestHeads ?? d.requireShortestHeads,
    allowIndefinite: options.allowIndefinite ?? d.allowIndefinite,
    allowTags: options.allowTags ?? d.allowTags,
    allowFloats: options.allowFloats ?? d.allowFloats,
    allowBigInt: options.allowBigInt ?? d.allowBigInt,
  };
  // Contradictory requests fail loudly rather than silently weakening a check.
  if (o.requireCanonical && (o.allowIndefinite || !o.requireShortestHeads)) {
    throw new CloisterError('INVALID_ARGUMENT', 'CBOR: requireCanonical excludes allowIndefinite and requireShortestHeads: false');
  }
  return o;
}

class Reader {
  readonly #b: Uint8Array;
  readonly #v: DataView;
  readonly #o: Required<CborDecodeOptions>;
  readonly #shortest: boolean;
  #pos = 0;
  #items = 0;

  constructor(b: Uint8Array, o: Required<CborDecodeOptions>) {
    this.#b = b;
    this.#v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    this.#o = o;
    this.#shortest = o.requireCanonical || o.requireShortestHeads;
  }

  get offset(): number {
    return this.#pos;
  }

  #need(n: number): void {
    if (n > this.#b.byteLength - this.#pos) throw malformed('truncated input', this.#pos);
  }

  /**
   * The argument of a head (section 3): a number, a bigint beyond 2^53 - 1, or undefined
   * for an indefinite length (additional information 31). Shortest form enforced on request.
   */
  #arg(info: number): number | bigint | undefined {
    if (info < 24) return info;
    const at = this.#pos;
    let n: number | bigint;
    let min: number | bigint;
    if (info === 24) {
      this.#need(1);
      n = this.#v.getUint8(this.#pos);
      this.#pos += 1;
      min = 24;
    } else if (info === 25) {
      this.#need(2);
      n = this.#v.getUint16(this.#pos);
      this.#pos += 2;
      min = 0x100;
    } else if (info === 26) {
      this.#need(4);
      n = this.#v.getUint32(this.#pos);
      this.#pos += 4;
      min = 0x1_0000;
    } else if (info === 27) {
      this.#need(8);
      const big = this.#v.getBigUint64(this.#pos);
      this.#pos += 8;
      n = big <= MAX_SAFE ? Number(big) : big;
      min = 0x1_0000_0000;
    } else if (info === 31) {
      return undefined;
    } else {
      throw malformed(`reserved additional information ${info}`, at - 1);
    }
    if (this.#shortest && n < min) throw malformed('non-shortest head', at - 1);
    return n;
  }

  /** A definite length, or undefined for an indefinite one (only if the caller allows it). */
  #length(info: number, start: number, indefiniteOk: boolean): number | undefined {
    const n = this.#arg(info);
    if (n === undefined) {
      if (!indefiniteOk) throw malformed('indefinite length not allowed', start);
      return undefined;
    }
    if (typeof n === 'bigint') throw malformed('length too large', start);
    return n;
  }

  #int(n: number | bigint, negative: boolean, start: number): number | bigint {
    if (typeof n === 'number' && (!negative || n < Number.MAX_SAFE_INTEGER)) return negative ? -1 - n : n;
    if (!this.#o.allowBigInt) throw malformed('integer beyond 2^53 - 1', start);
    return negative ? -1n - BigInt(n) : BigInt(n);
  }

  value(depth: number): CborValue | typeof BREAK {
    this.#need(1);
    const start = this.#pos;
    const ib = this.#v.getUint8(this.#pos++);
    // The break stop code (section 3.2.1) is not a data item: it ends an indefinite container.
    if (ib === 0xff) {
      if (this.#o.allowIndefinite) return BREAK;
      throw malformed('unexpected break', start);
    }
    if (depth > this.#o.maxDepth) throw exceeded('maxDepth', this.#o.maxDepth);
    if (++this.#items > this.#o.maxItems) throw exceeded('maxItems', this.#o.maxItems);
    const major = ib >> 5;
    const info = ib & 0x1f;
    switch (major) {
      case 0:
      case 1: {
        const n = this.#arg(info);
        if (n === undefined) throw malformed('indefinite integer', start);
        return this.#int(n, major === 1, start);
      }
      case 2:
      case 3: {
        // Indefinite-length (chunked) strings are never needed: rejected in every mode.
        const n = this.#length(info, start, false);
        if (n === undefined) throw malformed('indefinite-length string', start);
        this.#need(n);
        const raw = this.#b.subarray(this.#pos, this.#pos + n);
        this.#pos += n;
        // new Uint8Array(view) copies; Buffer#slice would return a view into the input.
        if (major === 2) return new Uint8Array(raw);
        if (n <= SHORT_TEXT) {
          // Short ASCII (every byte below 0x80 is valid UTF-8 on its own) without TextDecoder.
          let ascii = '';
          let i = 0;
          for (; i < n; i++) {
            const c = raw[i] ?? 0x80;
            if (c >= 0x80) break;
            ascii += String.fromCharCode(c);
          }
          if (i === n) return ascii;
        }
        try {
          return td.decode(raw);
        } catch {
          throw malformed('invalid UTF-8', start);
        }
      }
      case 4: {
        const n = this.#length(info, start, this.#o.allowIndefinite);
        const out: CborValue[] = [];
        if (n === undefined) {
          for (;;) {
            const x = this.value(depth + 1);
            if (x === BREAK) return out;
            out.push(x);
          }
        }
        // Every item takes at least one byte: a length beyond the input fails up front.
        this.#need(n);
        for (let i = 0; i < n; i++) out.push(this.#item(depth + 1));
        return out;
      }
      case 5: {
        const n = this.#length(info, start, this.#o.allowIndefinite);
        if (n !== undefined) this.#need(2 * n);
        const out: CborMap = new Map();
        let prevKey: Uint8Array | undefined;
        for (let i = 0; n === undefined || i < n; i++) {
          const keyAt = this.#pos;
          const k = this.value(depth + 1);
          if (k === BREAK) {
            if (n === undefined) return out;
            throw malformed('unexpected break', keyAt);
          }
          if (typeof k !== 'string' && !(typeof k === 'number' && k >= 0)) throw malformed('map key must be text or an unsigned integer', keyAt);
          if (this.#o.requireCanonical) {
            // Section 4.2.1: keys in strictly increasing bytewise order of their encodings.
            const keyBytes = this.#b.subarray(keyAt, this.#pos);
            if (prevKey !== undefined && compareBytes(prevKey, keyBytes) >= 0) {
              throw malformed(compareBytes(prevKey, keyBytes) === 0 ? 'duplicate map key' : 'map keys not in deterministic order', keyAt);
            }
            prevKey = keyBytes;
          }
          if (out.has(k)) throw malformed('duplicate map key', keyAt);
          out.set(k, this.#item(depth + 1));
        }
        return out;
      }
      case 6: {
        const tag = this.#arg(info);
        if (tag === undefined) throw malformed('indefinite tag', start);
        if (!this.#o.allowTags) throw malformed('tags are not accepted', start);
        if (typeof tag === 'bigint') throw malformed('tag number too large', start);
        return new CborTagged(tag, this.#item(depth + 1));
      }
      default: {
        if (info === 20) return false;
        if (info === 21) return true;
        if (info === 22) return null;
        if ((info === 26 || info === 27) && this.#o.allowFloats) {
          const size = info === 26 ? 4 : 8;
          this.#need(size);
          const f = size === 4 ? this.#v.getFloat32(this.#pos) : this.#v.getFloat64(this.#pos);
          this.#pos += size;
          if (!Number.isFinite(f)) throw malformed('non-finite float', start);
          // One encoding per value (the deterministic profile of this codec, what encodeCbor
          // writes): integers are integer items, never floats, and every other number is
          // float64. Without this, `ts: 1.0e12` as a float would pass as the integer 10^12
          // and one message would have two encodings.
          if (this.#o.requireCanonical) {
            if (size !== 8) throw malformed('float32 is not the deterministic form (float64 only)', start);
            if (Number.isInteger(f)) throw malformed('integral float is not the deterministic form (an integer item, or bigint beyond 2^53 - 1)', start);
          }
          return f;
        }
        throw malformed(`unsupported simple or float value 0x${ib.toString(16)}`, start);
      }
    }
  }

  /** An item where a break is not allowed (definite containers, map values, tag content). */
  #item(depth: number): CborValue {
    const at = this.#pos;
    const v = this.value(depth);
    if (v === BREAK) throw malformed('unexpected break', at);
    return v;
  }

  top(): CborValue {
    return this.#item(0);
  }
}

function reader(bytes: Uint8Array, options: CborDecodeOptions): Reader {
  if (!(bytes instanceof Uint8Array)) throw new CloisterError('INVALID_ARGUMENT', 'CBOR input must be a Uint8Array');
  const o = resolveDecodeOptions(options);
  if (bytes.byteLength > o.maxBytes) throw exceeded('maxBytes', o.maxBytes);
  return new Reader(bytes, o);
}

/** Decode exactly one data item occupying all of `bytes`; trailing bytes are rejected. */
export function decodeCbor(bytes: Uint8Array, options: CborDecodeOptions = {}): CborValue {
  const r = reader(bytes, options);
  const v = r.top();
  if (r.offset !== bytes.byteLength) throw malformed('trailing bytes after the data item', r.offset);
  return v;
}

export function isCborMap(v: CborValue | undefined): v is CborMap {
  return v instanceof Map;
}

export function isCborTagged(v: CborValue | undefined): v is CborTagged {
  return v instanceof CborTagged;
}

/** Map -> plain object for JSON-shaped content (text keys only), without prototype hazards. */
export function toPlain(v: CborValue): CborInput {
  if (Array.isArray(v)) return v.map(toPlain);
  if (v instanceof Map) {
    const o: Record<string, CborInput> = {};
    for (const [k, x] of v) {
      if (typeof k !== 'string') throw new CloisterError('MALFORMED', 'expected text map keys');
      // A name the prototype has ("__proto__", "toString", ...) is defined, not assigned: it
      // becomes an own data property. Other names take the (much faster) assignment.
      if (k in o) Object.defineProperty(o, k, { value: toPlain(x), enumerable: true, writable: true, configurable: true });
      else o[k] = toPlain(x);
    }
    return o;
  }
  return v;
}
