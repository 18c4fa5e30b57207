/**
 * Transport framing (PROTOCOL.md section 5): the messages that travel between client and
 * server *outside* the sealed channel. One CBOR map per WebSocket binary frame, and the same
 * encoding for the bodies of the HTTP evidence and error responses.
 *
 * Everything decoded here comes from the untrusted host, so the decoder is deliberately
 * narrow: a small CBOR subset (RFC 8949 major types 0, 2, 3, 5 and the simple values
 * true/false), definite lengths only, shortest-form heads only, no duplicate map keys, no
 * trailing bytes, an exact schema per message type (unknown fields and types rejected).
 * Nothing here is secret: the sealed request and response bytes are opaque `body` fields.
 */
import { CloisterError, isErrorCode } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { PLATFORMS } from '../attestation/types.js';
import type { EvidenceBundle, Platform } from '../attestation/types.js';

/** Largest stream id: stream ids are uint32 chosen by the client. */
export const MAX_STREAM_ID = 0xffff_ffff;
/** Longest client nonce an evidence request may carry (AttestationRequest.nonce). */
export const MAX_NONCE_BYTES = 64;

export type WireMessage =
  | { readonly t: 'evidence-req'; readonly nonce?: Uint8Array }
  | { readonly t: 'evidence'; readonly bundle: EvidenceBundle }
  | { readonly t: 'req'; readonly sid: number; readonly body: Uint8Array }
  /**
   * `body`: the next bytes of the sealed response stream (any split; PROTOCOL.md section 5).
   * `fin`: this frame ends the stream (the final chunk runs to the end of this body).
   */
  | { readonly t: 'res'; readonly sid: number; readonly body: Uint8Array; readonly fin?: true }
  | { readonly t: 'end'; readonly sid: number }
  | { readonly t: 'cancel'; readonly sid: number }
  | { readonly t: 'err'; readonly sid?: number; readonly code: ErrorCode };

export type WireType = WireMessage['t'];

// ---------------------------------------------------------------------------------------
// Minimal deterministic CBOR subset (RFC 8949 section 4.2.1 for the encoder).

type Value = number | boolean | string | Uint8Array | ValueMap;
interface ValueMap {
  readonly entries: ReadonlyMap<string, Value>;
}

const MAX_DEPTH = 2;
const MAX_MAP_ENTRIES = 16;

function head(major: number, n: number): Uint8Array {
  const m = major << 5;
  if (n < 24) return Uint8Array.of(m | n);
  if (n <= 0xff) return Uint8Array.of(m | 24, n);
  if (n <= 0xffff) return Uint8Array.of(m | 25, n >>> 8, n & 0xff);
  if (n <= 0xffff_ffff) {
    const out = new Uint8Array(5);
    out[0] = m | 26;
    new DataView(out.buffer, out.byteOffset, out.byteLength).setUint32(1, n);
    return out;
  }
  throw new CloisterError('INVALID_ARGUMENT', 'wire integer out of range');
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.byteLength;
  const out = new Uint8Array(len);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

function encodeValue(v: Value, out: Uint8Array[]): void {
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v) || v < 0) throw new CloisterError('INVALID_ARGUMENT', 'wire integers are unsigned');
    out.push(head(0, v));
  } else if (typeof v === 'boolean') {
    out.push(Uint8Array.of(v ? 0xf5 : 0xf4));
  } else if (typeof v === 'string') {
    const b = utf8.encode(v);
    out.push(head(3, b.byteLength), b);
  } else if (v instanceof Uint8Array) {
    out.push(head(2, v.byteLength), Uint8Array.from(v));
  } else {
    // Deterministic order: keys sorted bytewise by their encodings (RFC 8949 4.2.1).
    const keyed = [...v.entries].map(([k, val]) => {
      const kb = utf8.encode(k);
      return { enc: concat([head(3, kb.byteLength), kb]), val };
    });
    keyed.sort((a, b) => compareBytes(a.enc, b.enc));
    out.push(head(5, keyed.length));
    for (const { enc, val } of keyed) {
      out.push(enc);
      encodeValue(val, out);
    }
  }
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.byteLength, b.byteLength);
  for (let i = 0; i < n; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return a.byteLength - b.byteLength;
}

function malformed(why: string): CloisterError {
  return new CloisterError('MALFORMED', `wire message: ${why}`);
}

class Reader {
  private pos = 0;
  private readonly view: DataView;
  constructor(private readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  get done(): boolean {
    return this.pos === this.bytes.byteLength;
  }
  private need(n: number): void {
    if (n > this.bytes.byteLength - this.pos) throw malformed('truncated');
  }
  /** Reads a head; returns the major type and argument, rejecting non-shortest forms. */
  head(): { major: number; arg: number; info: number } {
    this.need(1);
    const ib = this.view.getUint8(this.pos++);
    const major = ib >> 5;
    const info = ib & 0x1f;
    if (info < 24) return { major, arg: info, info };
    let arg: number;
    if (info === 24) {
      this.need(1);
      arg = this.view.getUint8(this.pos);
      this.pos += 1;
      if (arg < 24) throw malformed('non-shortest integer');
    } else if (info === 25) {
      this.need(2);
      arg = this.view.getUint16(this.pos);
      this.pos += 2;
      if (arg <= 0xff) throw malformed('non-shortest integer');
    } else if (info === 26) {
      this.need(4);
      arg = this.view.getUint32(this.pos);
      this.pos += 4;
      if (arg <= 0xffff) throw malformed('non-shortest integer');
    } else {
      // 27 (uint64) is never needed on the wire; 28..31 are reserved or indefinite.
      throw malformed('unsupported length encoding');
    }
    return { major, arg, info };
  }
  take(n: number): Uint8Array {
    this.need(n);
    const out = this.bytes.slice(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  value(depth: number): Value {
    const { major, arg, info } = this.head();
    switch (major) {
      case 0:
        return arg;
      case 2:
        return this.take(arg);
      case 3: {
        try {
          return utf8Strict.decode(this.take(arg));
        } catch (err) {
          if (err instanceof CloisterError) throw err;
          throw malformed('invalid UTF-8');
        }
      }
      case 5: {
        if (depth >= MAX_DEPTH) throw malformed('nesting too deep');
        if (arg > MAX_MAP_ENTRIES) throw malformed('too many map entries');
        const entries = new Map<string, Value>();
        for (let i = 0; i < arg; i++) {
          const k = this.value(MAX_DEPTH);
          if (typeof k !== 'string') throw malformed('map keys must be text');
          if (entries.has(k)) throw malformed('duplicate map key');
          entries.set(k, this.value(depth + 1));
        }
        return { entries };
      }
      case 7:
        if (info === 20) return false;
        if (info === 21) return true;
        throw malformed('unsupported simple value');
      default:
        throw malformed(`unsupported major type ${major}`);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Schemas.

type FieldKind = 'uint' | 'bytes' | 'text' | 'map';
interface Field {
  readonly kind: FieldKind;
  readonly optional?: boolean;
}

const SCHEMAS: Readonly<Record<WireType, Readonly<Record<string, Field>>>> = {
  'evidence-req': { nonce: { kind: 'bytes', optional: true } },
  evidence: { bundle: { kind: 'map' } },
  req: { sid: { kind: 'uint' }, body: { kind: 'bytes' } },
  res: { sid: { kind: 'uint' }, body: { kind: 'bytes' }, fin: { kind: 'uint', optional: true } },
  end: { sid: { kind: 'uint' } },
  cancel: { sid: { kind: 'uint' } },
  err: { sid: { kind: 'uint', optional: true }, code: { kind: 'text' } },
};

const BUNDLE_SCHEMA: Readonly<Record<string, Field>> = {
  platform: { kind: 'text' },
  evidence: { kind: 'bytes' },
  keyConfig: { kind: 'bytes' },
  certificates: { kind: 'bytes', optional: true },
  collateral: { kind: 'bytes', optional: true },
};

function isWireType(t: string): t is WireType {
  return Object.prototype.hasOwnProperty.call(SCHEMAS, t);
}

function kindOf(v: Value): FieldKind {
  if (typeof v === 'number') return 'uint';
  if (typeof v === 'string') return 'text';
  if (v instanceof Uint8Array) return 'bytes';
  if (typeof v === 'boolean') throw malformed('unexpected boolean');
  return 'map';
}

/** Checks a decoded map against a schema: every key known, every required key present, right kinds. */
function checkFields(map: ValueMap, schema: Readonly<Record<string, Field>>, skip?: string): void {
  for (const [k, v] of map.entries) {
    if (k === skip) continue;
    const f = Object.prototype.hasOwnProperty.call(schema, k) ? schema[k] : undefined;
    if (f === undefined) throw malformed(`unknown field '${k.length <= 16 ? k : k.slice(0, 16)}'`);
    if (kindOf(v) !== f.kind) throw malformed(`field '${k}' has the wrong type`);
  }
  for (const [k, f] of Object.entries(schema)) {
    if (f.optional !== true && !map.entries.has(k)) throw malformed(`missing field '${k}'`);
  }
}

function getUint(map: ValueMap, k: string): number | undefined {
  const v = map.entries.get(k);
  return typeof v === 'number' ? v : undefined;
}
function getBytes(map: ValueMap, k: string): Uint8Array | undefined {
  const v = map.entries.get(k);
  return v instanceof Uint8Array ? v : undefined;
}
function getText(map: ValueMap, k: string): string | undefined {
  const v = map.entries.get(k);
  return typeof v === 'string' ? v : undefined;
}

function sidOf(map: ValueMap): number {
  const sid = getUint(map, 'sid');
  if (sid === undefined || sid > MAX_STREAM_ID) throw malformed('stream id out of range');
  return sid;
}

function bundleOf(map: ValueMap): EvidenceBundle {
  checkFields(map, BUNDLE_SCHEMA);
  const platform = getText(map, 'platform');
  if (platform === undefined || !(PLATFORMS as readonly string[]).includes(platform)) throw malformed('unknown platform');
  const evidence = getBytes(map, 'evidence');
  const keyConfig = getBytes(map, 'keyConfig');
  if (evidence === undefined || keyConfig === undefined) throw malformed('missing evidence');
  const certificates = getBytes(map, 'certificates');
  const collateral = getBytes(map, 'collateral');
  return {
    platform: platform as Platform,
    evidence,
    keyConfig,
    ...(certificates === undefined ? {} : { certificates }),
    ...(collateral === undefined ? {} : { collateral }),
  };
}

/**
 * Decodes one wire message. Throws `CloisterError('MALFORMED')` for anything that is not
 * exactly one valid message. Returned byte fields are fresh copies (never views into `frame`).
 */
export function decodeWireMessage(frame: Uint8Array): WireMessage {
  if (!(frame instanceof Uint8Array)) throw malformed('not bytes');
  const r = new Reader(frame);
  const top = r.value(0);
  if (!r.done) throw malformed('trailing bytes');
  if (typeof top !== 'object' || top instanceof Uint8Array) throw malformed('not a map');
  const t = getText(top, 't');
  if (t === undefined || !isWireType(t)) throw malformed('unknown message type');
  checkFields(top, SCHEMAS[t], 't');
  switch (t) {
    case 'evidence-req': {
      const nonce = getBytes(top, 'nonce');
      if (nonce !== undefined && nonce.byteLength > MAX_NONCE_BYTES) throw malformed('nonce too long');
      return nonce === undefined ? { t } : { t, nonce };
    }
    case 'evidence': {
      const b = top.entries.get('bundle');
      if (b === undefined || typeof b !== 'object' || b instanceof Uint8Array) throw malformed('bad bundle');
      return { t, bundle: bundleOf(b) };
    }
    case 'req': {
      const body = getBytes(top, 'body');
      if (body === undefined) throw malformed('missing body');
      return { t, sid: sidOf(top), body };
    }
    case 'res': {
      const body = getBytes(top, 'body');
      if (body === undefined) throw malformed('missing body');
      if (!top.entries.has('fin')) return { t, sid: sidOf(top), body };
      // Strict: the only encoding of the flag is fin = 1 (absent means "not the end").
      if (getUint(top, 'fin') !== 1) throw malformed('fin must be 1');
      return { t, sid: sidOf(top), body, fin: true };
    }
    case 'end':
    case 'cancel':
      return { t, sid: sidOf(top) };
    case 'err': {
      const code = getText(top, 'code');
      if (!isErrorCode(code)) throw malformed('unknown error code');
      return top.entries.has('sid') ? { t, sid: sidOf(top), code } : { t, code };
    }
  }
}

/** Encodes one wire message deterministically. Validates like the decoder (no invalid frames leave). */
export function encodeWireMessage(msg: WireMessage): Uint8Array {
  const entries = new Map<string, Value>([['t', msg.t]]);
  const checkSid = (sid: number): number => {
    if (!Number.isSafeInteger(sid) || sid < 0 || sid > MAX_STREAM_ID) throw new CloisterError('INVALID_ARGUMENT', 'stream id out of range');
    return sid;
  };
  switch (msg.t) {
    case 'evidence-req':
      if (msg.nonce !== undefined) {
        if (msg.nonce.byteLength > MAX_NONCE_BYTES) throw new CloisterError('INVALID_ARGUMENT', 'nonce too long');
        entries.set('nonce', msg.nonce);
      }
      break;
    case 'evidence': {
      const b = msg.bundle;
      const be = new Map<string, Value>([
        ['platform', b.platform],
        ['evidence', b.evidence],
        ['keyConfig', b.keyConfig],
      ]);
      if (b.certificates !== undefined) be.set('certificates', b.certificates);
      if (b.collateral !== undefined) be.set('collateral', b.collateral);
      entries.set('bundle', { entries: be });
      break;
    }
    case 'req':
      entries.set('sid', checkSid(msg.sid));
      entries.set('body', msg.body);
      break;
    case 'res':
      entries.set('sid', checkSid(msg.sid));
      entries.set('body', msg.body);
      if (msg.fin === true) entries.set('fin', 1);
      break;
    case 'end':
    case 'cancel':
      entries.set('sid', checkSid(msg.sid));
      break;
    case 'err':
      if (msg.sid !== undefined) entries.set('sid', checkSid(msg.sid));
      if (!isErrorCode(msg.code)) throw new CloisterError('INVALID_ARGUMENT', 'unknown error code');
      entries.set('code', msg.code);
      break;
  }
  const out: Uint8Array[] = [];
  encodeValue({ entries }, out);
  return concat(out);
}
