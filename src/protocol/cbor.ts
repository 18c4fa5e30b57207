/**
 * A small, strict CBOR (RFC 8949) codec for the subset Cloister uses: unsigned and
 * negative integers (|n| <= 2^53 - 1), byte and text strings, arrays, maps, false, true,
 * null and float64. Internal to src/protocol.
 *
 * Encoding is deterministic (section 4.2.1): definite lengths, shortest integer and length
 * forms, map keys sorted bytewise by their encoding. Non-integer numbers are encoded as
 * float64 (our key config has none; messages may carry e.g. a temperature).
 *
 * Decoding is strict: definite lengths only, shortest forms only, no tags, no undefined or
 * simple values, valid UTF-8, no duplicate map keys, bounded depth and item count, and no
 * trailing bytes. Maps decode to `Map` so integer keys stay integers.
 */
import { CloisterError } from '../errors.js';

export type CborKey = number | string;
export type CborValue = number | string | Uint8Array | boolean | null | CborValue[] | Map<CborKey, CborValue>;
export type CborInput =
  | number
  | string
  | Uint8Array
  | boolean
  | null
  | readonly CborInput[]
  | ReadonlyMap<CborKey, CborInput | undefined>
  | { readonly [k: string]: CborInput | undefined };

export interface CborDecodeLimits {
  readonly maxDepth: number;
  readonly maxItems: number;
}

export const DEFAULT_CBOR_LIMITS: CborDecodeLimits = Object.freeze({ maxDepth: 32, maxItems: 100_000 });

const te = new TextEncoder();
const td = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

class Writer {
  #buf = new Uint8Array(256);
  #len = 0;
  #ensure(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    let cap = this.#buf.length * 2;
    while (cap < this.#len + n) cap *= 2;
    const nb = new Uint8Array(cap);
    nb.set(this.#buf.subarray(0, this.#len));
    this.#buf = nb;
  }
  head(major: number, n: number): void {
    this.#ensure(9);
    const b = this.#buf;
    const m = major << 5;
    if (n < 24) b[this.#len++] = m | n;
    else if (n < 0x100) {
      b[this.#len++] = m | 24;
      b[this.#len++] = n;
    } else if (n < 0x10000) {
      b[this.#len++] = m | 25;
      b[this.#len++] = n >> 8;
      b[this.#len++] = n & 0xff;
    } else if (n < 0x1_0000_0000) {
      b[this.#len++] = m | 26;
      new DataView(b.buffer).setUint32(this.#len, n);
      this.#len += 4;
    } else {
      b[this.#len++] = m | 27;
      const v = new DataView(b.buffer);
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
    new DataView(this.#buf.buffer).setFloat64(this.#len, x);
    this.#len += 8;
  }
  result(): Uint8Array {
    return this.#buf.slice(0, this.#len);
  }
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

function encodeInto(w: Writer, v: CborInput, depth: number): void {
  if (depth > DEFAULT_CBOR_LIMITS.maxDepth) throw new CloisterError('INVALID_ARGUMENT', 'value nested too deeply');
  if (v === null) return w.byte(0xf6);
  if (v === false) return w.byte(0xf4);
  if (v === true) return w.byte(0xf5);
  if (typeof v === 'number') {
    if (Number.isSafeInteger(v)) return v >= 0 ? w.head(0, v) : w.head(1, -1 - v);
    if (Number.isInteger(v) || !Number.isFinite(v)) throw new CloisterError('INVALID_ARGUMENT', 'number out of range');
    return w.f64(v);
  }
  if (typeof v === 'string') {
    const b = te.encode(v);
    w.head(3, b.byteLength);
    return w.bytes(b);
  }
  if (v instanceof Uint8Array) {
    w.head(2, v.byteLength);
    return w.bytes(v);
  }
  if (Array.isArray(v)) {
    const arr = v as readonly CborInput[];
    w.head(4, arr.length);
    for (const x of arr) encodeInto(w, x, depth + 1);
    return;
  }
  const entries: [CborKey, CborInput][] = [];
  if (v instanceof Map) {
    for (const [k, x] of v as ReadonlyMap<CborKey, CborInput | undefined>) if (x !== undefined) entries.push([k, x]);
  } else if (typeof v === 'object') {
    for (const [k, x] of Object.entries(v as { readonly [k: string]: CborInput | undefined })) if (x !== undefined) entries.push([k, x]);
  } else {
    throw new CloisterError('INVALID_ARGUMENT', 'value not encodable as CBOR');
  }
  const keyed = entries.map(([k, x]) => {
    if (typeof k !== 'string' && !Number.isSafeInteger(k)) throw new CloisterError('INVALID_ARGUMENT', 'map keys must be strings or integers');
    const kw = new Writer();
    encodeInto(kw, k, depth + 1);
    return { k: kw.result(), x };
  });
  keyed.sort((a, b) => compareBytes(a.k, b.k));
  w.head(5, keyed.length);
  for (let i = 0; i < keyed.length; i++) {
    const e = keyed[i];
    if (e === undefined) continue;
    if (i > 0 && compareBytes(keyed[i - 1]?.k ?? new Uint8Array(0), e.k) === 0) throw new CloisterError('INVALID_ARGUMENT', 'duplicate map key');
    w.bytes(e.k);
    encodeInto(w, e.x, depth + 1);
  }
}

/** Deterministic encoding (RFC 8949 section 4.2.1). `undefined` map values are omitted. */
export function encodeCbor(v: CborInput): Uint8Array {
  const w = new Writer();
  encodeInto(w, v, 0);
  return w.result();
}

function malformed(msg: string, offset: number): CloisterError {
  return new CloisterError('MALFORMED', `CBOR: ${msg}`, { detail: { offset } });
}

class Reader {
  readonly #b: Uint8Array;
  readonly #v: DataView;
  readonly #limits: CborDecodeLimits;
  pos = 0;
  #items = 0;
  constructor(b: Uint8Array, limits: CborDecodeLimits) {
    this.#b = b;
    this.#v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    this.#limits = limits;
  }
  #need(n: number): void {
    if (this.pos + n > this.#b.byteLength) throw malformed('truncated', this.pos);
  }
  /** Argument of the head, shortest form enforced. */
  #arg(info: number): number {
    if (info < 24) return info;
    const at = this.pos;
    let n: number;
    if (info === 24) {
      this.#need(1);
      n = this.#v.getUint8(this.pos);
      this.pos += 1;
      if (n < 24) throw malformed('non-shortest integer', at);
    } else if (info === 25) {
      this.#need(2);
      n = this.#v.getUint16(this.pos);
      this.pos += 2;
      if (n < 0x100) throw malformed('non-shortest integer', at);
    } else if (info === 26) {
      this.#need(4);
      n = this.#v.getUint32(this.pos);
      this.pos += 4;
      if (n < 0x10000) throw malformed('non-shortest integer', at);
    } else if (info === 27) {
      this.#need(8);
      const hi = this.#v.getUint32(this.pos);
      const lo = this.#v.getUint32(this.pos + 4);
      this.pos += 8;
      if (hi >= 0x20_0000) throw malformed('integer above 2^53 - 1', at);
      n = hi * 0x1_0000_0000 + lo;
      if (n < 0x1_0000_0000) throw malformed('non-shortest integer', at);
    } else {
      throw malformed('indefinite length or reserved additional info', at);
    }
    return n;
  }
  value(depth: number): CborValue {
    if (depth > this.#limits.maxDepth) throw new CloisterError('LIMIT_EXCEEDED', 'CBOR nested too deeply', { detail: { limit: 'maxDepth' } });
    if (++this.#items > this.#limits.maxItems) throw new CloisterError('LIMIT_EXCEEDED', 'too many CBOR items', { detail: { limit: 'maxItems' } });
    this.#need(1);
    const start = this.pos;
    const ib = this.#v.getUint8(this.pos++);
    const major = ib >> 5;
    const info = ib & 0x1f;
    switch (major) {
      case 0:
        return this.#arg(info);
      case 1:
        return -1 - this.#arg(info);
      case 2:
      case 3: {
        const n = this.#arg(info);
        this.#need(n);
        const raw = this.#b.subarray(this.pos, this.pos + n);
        this.pos += n;
        if (major === 2) return Uint8Array.from(raw);
        try {
          return td.decode(raw);
        } catch {
          throw malformed('invalid UTF-8', start);
        }
      }
      case 4: {
        const n = this.#arg(info);
        // Every item is at least one byte: a length beyond the input is malformed up front.
        this.#need(n);
        const out: CborValue[] = [];
        for (let i = 0; i < n; i++) out.push(this.value(depth + 1));
        return out;
      }
      case 5: {
        const n = this.#arg(info);
        this.#need(2 * n);
        const out = new Map<CborKey, CborValue>();
        for (let i = 0; i < n; i++) {
          const k = this.value(depth + 1);
          if (typeof k !== 'string' && typeof k !== 'number') throw malformed('map key must be an integer or text', this.pos);
          if (out.has(k)) throw malformed('duplicate map key', this.pos);
          out.set(k, this.value(depth + 1));
        }
        return out;
      }
      case 6:
        throw malformed('tags are not accepted', start);
      default: {
        if (info === 20) return false;
        if (info === 21) return true;
        if (info === 22) return null;
        if (info === 27) {
          this.#need(8);
          const f = this.#v.getFloat64(this.pos);
          this.pos += 8;
          return f;
        }
        if (info === 26) {
          this.#need(4);
          const f = this.#v.getFloat32(this.pos);
          this.pos += 4;
          return f;
        }
        throw malformed('unsupported simple value', start);
      }
    }
  }
  get atEnd(): boolean {
    return this.pos === this.#b.byteLength;
  }
}

/** Strict decode of exactly one item; trailing bytes are rejected. */
export function decodeCbor(b: Uint8Array, limits: CborDecodeLimits = DEFAULT_CBOR_LIMITS): CborValue {
  const r = new Reader(b, limits);
  const v = r.value(0);
  if (!r.atEnd) throw malformed('trailing bytes', r.pos);
  return v;
}

/** Map -> plain object for JSON-shaped content (text keys only), without prototype hazards. */
export function toPlain(v: CborValue): CborInput {
  if (Array.isArray(v)) return v.map(toPlain);
  if (v instanceof Map) {
    const o: Record<string, CborInput> = {};
    for (const [k, x] of v) {
      if (typeof k !== 'string') throw new CloisterError('MALFORMED', 'expected text map keys');
      Object.defineProperty(o, k, { value: toPlain(x), enumerable: true, writable: true, configurable: true });
    }
    return o;
  }
  return v;
}
