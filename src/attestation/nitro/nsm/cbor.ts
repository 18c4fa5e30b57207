/**
 * A small, strict CBOR (RFC 8949) codec for the NSM driver messages and the EIF signature
 * section: exactly the subset serde_cbor / ciborium produce for those Rust types.
 *
 * Decoding is bounded (depth, item count, byte lengths checked against the remaining input
 * before any read), rejects trailing bytes, duplicate map keys, tags, floats, undefined and
 * non-shortest integer heads, and by default indefinite lengths (RFC 8949 section 3.2).
 */
import { CloisterError } from '../../../errors.js';

export type CborValue = number | bigint | string | boolean | null | Uint8Array | CborValue[] | CborMap;
/** Map keys are text or unsigned integers; insertion order is the encoded order. */
export type CborMap = Map<string | number, CborValue>;

export interface CborDecodeOptions {
  /** Maximum nesting depth; default 16. */
  readonly maxDepth?: number;
  /** Maximum total number of data items; default 65536. */
  readonly maxItems?: number;
  /** Accept indefinite-length arrays and maps (RFC 8949 section 3.2.2); default false. */
  readonly allowIndefinite?: boolean;
}

const textDecoder = new TextDecoder('utf-8', { fatal: true });
const textEncoder = new TextEncoder();

function malformed(message: string, offset: number): CloisterError {
  return new CloisterError('MALFORMED', `CBOR: ${message}`, { detail: { offset } });
}

class Reader {
  private pos = 0;
  private items = 0;
  private readonly view: DataView;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly maxDepth: number,
    private readonly maxItems: number,
    private readonly allowIndefinite: boolean,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get offset(): number {
    return this.pos;
  }

  private need(n: number): void {
    if (n > this.bytes.byteLength - this.pos) throw malformed('truncated input', this.pos);
  }

  private u8(): number {
    this.need(1);
    const b = this.view.getUint8(this.pos);
    this.pos += 1;
    return b;
  }

  /** Reads the argument of a head; returns undefined for an indefinite length (ai = 31). */
  private argument(ai: number): number | bigint | undefined {
    if (ai < 24) return ai;
    const start = this.pos;
    switch (ai) {
      case 24: {
        const v = this.u8();
        if (v < 24) throw malformed('non-shortest integer encoding', start);
        return v;
      }
      case 25: {
        this.need(2);
        const v = this.view.getUint16(this.pos);
        this.pos += 2;
        if (v <= 0xff) throw malformed('non-shortest integer encoding', start);
        return v;
      }
      case 26: {
        this.need(4);
        const v = this.view.getUint32(this.pos);
        this.pos += 4;
        if (v <= 0xffff) throw malformed('non-shortest integer encoding', start);
        return v;
      }
      case 27: {
        this.need(8);
        const v = this.view.getBigUint64(this.pos);
        this.pos += 8;
        if (v <= 0xffffffffn) throw malformed('non-shortest integer encoding', start);
        return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
      }
      case 31:
        return undefined;
      default:
        throw malformed(`reserved additional information ${ai}`, start);
    }
  }

  private length(ai: number): number | undefined {
    const at = this.pos;
    const v = this.argument(ai);
    if (v === undefined) {
      if (!this.allowIndefinite) throw malformed('indefinite length not allowed', at);
      return undefined;
    }
    if (typeof v === 'bigint') throw malformed('length too large', at);
    return v;
  }

  private isBreak(): boolean {
    this.need(1);
    if (this.view.getUint8(this.pos) === 0xff) {
      this.pos += 1;
      return true;
    }
    return false;
  }

  value(depth: number): CborValue {
    if (depth > this.maxDepth) throw malformed('nesting too deep', this.pos);
    if (++this.items > this.maxItems) throw malformed('too many data items', this.pos);
    const start = this.pos;
    const ib = this.u8();
    const major = ib >> 5;
    const ai = ib & 0x1f;
    switch (major) {
      case 0: {
        const v = this.argument(ai);
        if (v === undefined) throw malformed('indefinite integer', start);
        return v;
      }
      case 1: {
        const v = this.argument(ai);
        if (v === undefined) throw malformed('indefinite integer', start);
        return typeof v === 'bigint' || v >= Number.MAX_SAFE_INTEGER ? -1n - BigInt(v) : -1 - v;
      }
      case 2:
      case 3: {
        const len = this.argument(ai);
        // Indefinite-length strings are never produced by the encoders we read.
        if (len === undefined || typeof len === 'bigint') throw malformed('unsupported string length', start);
        this.need(len);
        const slice = this.bytes.subarray(this.pos, this.pos + len);
        this.pos += len;
        if (major === 2) return slice.slice();
        try {
          return textDecoder.decode(slice);
        } catch (cause) {
          throw new CloisterError('MALFORMED', 'CBOR: invalid UTF-8 in text string', { cause, detail: { offset: start } });
        }
      }
      case 4: {
        const len = this.length(ai);
        const out: CborValue[] = [];
        if (len === undefined) {
          while (!this.isBreak()) out.push(this.value(depth + 1));
          return out;
        }
        // Every item takes at least one byte: a cheap bound before allocating anything.
        this.need(len);
        for (let i = 0; i < len; i++) out.push(this.value(depth + 1));
        return out;
      }
      case 5: {
        const len = this.length(ai);
        const out: CborMap = new Map();
        const entry = (): void => {
          const keyAt = this.pos;
          const key = this.value(depth + 1);
          if (typeof key !== 'string' && typeof key !== 'number') throw malformed('map key must be text or uint', keyAt);
          if (typeof key === 'number' && key < 0) throw malformed('negative map key', keyAt);
          if (out.has(key)) throw malformed('duplicate map key', keyAt);
          out.set(key, this.value(depth + 1));
        };
        if (len === undefined) {
          while (!this.isBreak()) entry();
          return out;
        }
        this.need(len * 2);
        for (let i = 0; i < len; i++) entry();
        return out;
      }
      case 6:
        throw malformed('tags are not allowed here', start);
      default: {
        if (ai === 20) return false;
        if (ai === 21) return true;
        if (ai === 22) return null;
        throw malformed('unsupported simple value or float', start);
      }
    }
  }
}

/** Decodes exactly one CBOR data item occupying all of `bytes`. */
export function decodeCbor(bytes: Uint8Array, options: CborDecodeOptions = {}): CborValue {
  const reader = new Reader(bytes, options.maxDepth ?? 16, options.maxItems ?? 65_536, options.allowIndefinite ?? false);
  const value = reader.value(0);
  if (reader.offset !== bytes.byteLength) throw malformed('trailing bytes after the data item', reader.offset);
  return value;
}

/** Decodes one data item at the start of `bytes`, returning it and the bytes it used. */
export function decodeCborPrefix(bytes: Uint8Array, options: CborDecodeOptions = {}): { value: CborValue; length: number } {
  const reader = new Reader(bytes, options.maxDepth ?? 16, options.maxItems ?? 65_536, options.allowIndefinite ?? false);
  const value = reader.value(0);
  return { value, length: reader.offset };
}

// --- encoding (definite lengths, shortest heads: what serde_cbor writes) ----------------------

function head(major: number, n: number): number[] {
  if (!Number.isSafeInteger(n) || n < 0) throw new CloisterError('INVALID_ARGUMENT', 'CBOR: length or integer out of range');
  const m = major << 5;
  if (n < 24) return [m | n];
  if (n <= 0xff) return [m | 24, n];
  if (n <= 0xffff) return [m | 25, n >> 8, n & 0xff];
  if (n <= 0xffffffff) return [m | 26, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
  const hi = Math.floor(n / 2 ** 32);
  const lo = n >>> 0;
  return [m | 27, (hi >>> 24) & 0xff, (hi >>> 16) & 0xff, (hi >>> 8) & 0xff, hi & 0xff, (lo >>> 24) & 0xff, (lo >>> 16) & 0xff, (lo >>> 8) & 0xff, lo & 0xff];
}

function encodeInto(value: CborValue, out: number[]): void {
  if (value === null) out.push(0xf6);
  else if (value === true) out.push(0xf5);
  else if (value === false) out.push(0xf4);
  else if (typeof value === 'number') out.push(...head(0, value));
  else if (typeof value === 'bigint') throw new CloisterError('INVALID_ARGUMENT', 'CBOR: bigint encoding not supported');
  else if (typeof value === 'string') {
    const b = textEncoder.encode(value);
    out.push(...head(3, b.byteLength));
    for (const x of b) out.push(x);
  } else if (value instanceof Uint8Array) {
    out.push(...head(2, value.byteLength));
    for (const x of value) out.push(x);
  } else if (Array.isArray(value)) {
    out.push(...head(4, value.length));
    for (const v of value) encodeInto(v, out);
  } else {
    out.push(...head(5, value.size));
    for (const [k, v] of value) {
      encodeInto(k, out);
      encodeInto(v, out);
    }
  }
}

/** Encodes a value with definite lengths and shortest heads; maps keep insertion order. */
export function encodeCbor(value: CborValue): Uint8Array {
  const out: number[] = [];
  encodeInto(value, out);
  return Uint8Array.from(out);
}
