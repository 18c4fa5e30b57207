/**
 * A small, strict CBOR (RFC 8949) reader and writer for COSE_Sign1 attestation documents.
 *
 * Written here rather than borrowed so that every acceptance rule is visible and fails
 * closed: no floats, no undefined or other simple values, no indefinite-length strings,
 * no duplicate or non-(uint|tstr) map keys, integers limited to the safe range, a depth and
 * an item-count bound, and trailing bytes rejected. Indefinite-length arrays and maps ARE
 * accepted, because newer NSM documents encode their payload map that way (RFC 8949
 * section 3.2.2). Byte strings are returned as private copies, never views of the input.
 */
import { CloisterError } from '../../errors.js';

export type CborKey = number | string;
export interface CborTagged {
  readonly tag: number;
  readonly value: CborValue;
}
export type CborValue =
  | number
  | string
  | boolean
  | null
  | Uint8Array
  | readonly CborValue[]
  | ReadonlyMap<CborKey, CborValue>
  | CborTagged;

export interface CborDecodeOptions {
  /** Deepest nesting of arrays, maps and tags. Default 8. */
  readonly maxDepth?: number;
  /** Most data items in one input, counted as they are read. Default 4096. */
  readonly maxItems?: number;
}

export const DEFAULT_CBOR_MAX_DEPTH = 8;
export const DEFAULT_CBOR_MAX_ITEMS = 4096;

const BREAK = Symbol('break');
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function malformed(message: string, offset: number): CloisterError {
  return new CloisterError('EVIDENCE_MALFORMED', `CBOR: ${message}`, { detail: { offset } });
}

class Reader {
  private pos = 0;
  private items = 0;
  private readonly view: DataView;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly maxDepth: number,
    private readonly maxItems: number,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get offset(): number {
    return this.pos;
  }

  private need(n: number): void {
    if (n > this.bytes.byteLength - this.pos) throw malformed('truncated input', this.pos);
  }

  /** The argument of a head (RFC 8949 section 3). Returns -1 for indefinite length (ai 31). */
  private argument(ai: number): number {
    if (ai < 24) return ai;
    if (ai === 24) {
      this.need(1);
      return this.view.getUint8(this.pos++);
    }
    if (ai === 25) {
      this.need(2);
      const v = this.view.getUint16(this.pos);
      this.pos += 2;
      return v;
    }
    if (ai === 26) {
      this.need(4);
      const v = this.view.getUint32(this.pos);
      this.pos += 4;
      return v;
    }
    if (ai === 27) {
      this.need(8);
      const v = this.view.getBigUint64(this.pos);
      this.pos += 8;
      if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw malformed('integer beyond 2^53-1', this.pos - 8);
      return Number(v);
    }
    if (ai === 31) return -1;
    throw malformed(`reserved additional information ${ai}`, this.pos - 1);
  }

  read(depth: number): CborValue | typeof BREAK {
    if (depth > this.maxDepth) throw malformed('nesting too deep', this.pos);
    if (++this.items > this.maxItems) {
      throw new CloisterError('LIMIT_EXCEEDED', `CBOR: more than ${this.maxItems} items`, { detail: { maxItems: this.maxItems } });
    }
    this.need(1);
    const start = this.pos;
    const initial = this.view.getUint8(this.pos++);
    const major = initial >> 5;
    const ai = initial & 0x1f;
    if (initial === 0xff) return BREAK;
    const arg = this.argument(ai);
    if (arg === -1 && (major === 0 || major === 1 || major === 6 || major === 7)) {
      throw malformed('indefinite length not allowed here', start);
    }
    switch (major) {
      case 0:
        return arg;
      case 1:
        return -1 - arg;
      case 2:
      case 3: {
        // Indefinite-length strings are legal CBOR but never produced by the NSM: reject.
        if (arg === -1) throw malformed('indefinite-length string', start);
        this.need(arg);
        const slice = this.bytes.slice(this.pos, this.pos + arg);
        this.pos += arg;
        if (major === 2) return slice;
        try {
          return utf8.decode(slice);
        } catch {
          throw malformed('text string is not valid UTF-8', start);
        }
      }
      case 4: {
        const out: CborValue[] = [];
        for (let i = 0; arg === -1 || i < arg; i++) {
          const v = this.read(depth + 1);
          if (v === BREAK) {
            if (arg === -1) break;
            throw malformed('unexpected break', this.pos - 1);
          }
          out.push(v);
        }
        return out;
      }
      case 5: {
        const out = new Map<CborKey, CborValue>();
        for (let i = 0; arg === -1 || i < arg; i++) {
          const keyAt = this.pos;
          const k = this.read(depth + 1);
          if (k === BREAK) {
            if (arg === -1) break;
            throw malformed('unexpected break', keyAt);
          }
          if (typeof k !== 'number' && typeof k !== 'string') throw malformed('map key is not an integer or text', keyAt);
          if (out.has(k)) throw malformed('duplicate map key', keyAt);
          const v = this.read(depth + 1);
          if (v === BREAK) throw malformed('map key without value', this.pos - 1);
          out.set(k, v);
        }
        return out;
      }
      case 6: {
        const v = this.read(depth + 1);
        if (v === BREAK) throw malformed('tag without content', this.pos - 1);
        return { tag: arg, value: v };
      }
      default: {
        // Major 7: only false, true, null. Floats, undefined and other simple values are rejected.
        if (ai === 20) return false;
        if (ai === 21) return true;
        if (ai === 22) return null;
        throw malformed(`unsupported simple or float value 0x${initial.toString(16)}`, start);
      }
    }
  }
}

/** Decode exactly one CBOR data item occupying all of `bytes`. */
export function decodeCbor(bytes: Uint8Array, options: CborDecodeOptions = {}): CborValue {
  const reader = new Reader(bytes, options.maxDepth ?? DEFAULT_CBOR_MAX_DEPTH, options.maxItems ?? DEFAULT_CBOR_MAX_ITEMS);
  const v = reader.read(0);
  if (v === BREAK) throw malformed('unexpected break', 0);
  if (reader.offset !== bytes.byteLength) throw malformed('trailing bytes after the data item', reader.offset);
  return v;
}

export function isCborMap(v: CborValue): v is ReadonlyMap<CborKey, CborValue> {
  return v instanceof Map;
}

export function isCborTagged(v: CborValue): v is CborTagged {
  return typeof v === 'object' && v !== null && !(v instanceof Uint8Array) && !(v instanceof Map) && !Array.isArray(v);
}

// ---------------------------------------------------------------------------------------
// Writer: definite lengths and shortest argument forms (RFC 8949 section 4.2.1), map
// entries in insertion order. Used to build Sig_structure and simulated documents.

function head(major: number, arg: number): Uint8Array {
  if (!Number.isSafeInteger(arg) || arg < 0) throw new CloisterError('INVALID_ARGUMENT', 'CBOR argument out of range');
  const m = major << 5;
  if (arg < 24) return Uint8Array.of(m | arg);
  if (arg < 0x100) return Uint8Array.of(m | 24, arg);
  if (arg < 0x10000) return Uint8Array.of(m | 25, arg >> 8, arg & 0xff);
  if (arg < 0x100000000) {
    const b = new Uint8Array(5);
    b[0] = m | 26;
    new DataView(b.buffer).setUint32(1, arg);
    return b;
  }
  const b = new Uint8Array(9);
  b[0] = m | 27;
  new DataView(b.buffer).setBigUint64(1, BigInt(arg));
  return b;
}

function encodeInto(v: CborValue, out: Uint8Array[]): void {
  if (v === null) out.push(Uint8Array.of(0xf6));
  else if (v === false) out.push(Uint8Array.of(0xf4));
  else if (v === true) out.push(Uint8Array.of(0xf5));
  else if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new CloisterError('INVALID_ARGUMENT', 'only safe integers are encodable');
    out.push(v >= 0 ? head(0, v) : head(1, -1 - v));
  } else if (typeof v === 'string') {
    const b = new TextEncoder().encode(v);
    out.push(head(3, b.byteLength), b);
  } else if (v instanceof Uint8Array) {
    out.push(head(2, v.byteLength), Uint8Array.from(v));
  } else if (Array.isArray(v)) {
    out.push(head(4, v.length));
    for (const item of v as readonly CborValue[]) encodeInto(item, out);
  } else if (v instanceof Map) {
    out.push(head(5, v.size));
    for (const [k, item] of v as ReadonlyMap<CborKey, CborValue>) {
      encodeInto(k, out);
      encodeInto(item, out);
    }
  } else {
    const t = v as CborTagged;
    out.push(head(6, t.tag));
    encodeInto(t.value, out);
  }
}

export function encodeCbor(v: CborValue): Uint8Array {
  const parts: Uint8Array[] = [];
  encodeInto(v, parts);
  return new Uint8Array(Buffer.concat(parts));
}
