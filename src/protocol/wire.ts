/**
 * Transport framing (PROTOCOL.md section 5): the messages that travel between client and
 * server *outside* the sealed channel. One CBOR map per WebSocket binary frame, and the same
 * encoding for the bodies of the HTTP evidence and error responses.
 *
 * Everything decoded here comes from the untrusted host, so the decoding is deliberately
 * narrow: the one CBOR codec (./cbor.ts) with tight limits (WIRE_DECODE_OPTIONS: definite
 * lengths, shortest-form heads, no tags or floats, no duplicate map keys, no trailing bytes,
 * depth 2, 48 items), then an exact schema per message type: text keys only, unsigned
 * integers, byte and text strings and the one nested bundle map; unknown fields, negative
 * integers, arrays, booleans and null rejected.
 * Nothing here is secret: the sealed request and response bytes are opaque `body` fields.
 */
import { CloisterError, isErrorCode } from '../errors.js';
import { decodeCbor, encodeCbor } from '../core/cbor.js';
import type { CborDecodeOptions, CborMap, CborValue } from '../core/cbor.js';
import type { ErrorCode } from '../errors.js';
import { PLATFORMS } from '../core/types.js';
import type { EvidenceBundle, Platform } from '../core/types.js';

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
  | { readonly t: 'cancel'; readonly sid: number }
  | { readonly t: 'err'; readonly sid?: number; readonly code: ErrorCode };

type WireType = WireMessage['t'];

// ---------------------------------------------------------------------------------------
// Codec: the one CBOR codec (./cbor.ts) with tight limits; the schema checks below do the rest.

/**
 * Decode limits for one frame. Definite lengths and shortest heads only (RFC 8949 section
 * 4.2.1, first rule); map keys in any order (the encoder sorts them, but peers need not).
 * No tags, no floats, integers within 2^53 - 1 (the cbor.ts defaults). A top map and one
 * nested map (the evidence bundle) with a few fields each: depth 2 (the bundle's values),
 * 48 items in all. maxBytes bounds nothing the transport has not already bounded (the
 * WebSocket maxPayload); it is there so the codec's own default never cuts a legal frame.
 */
export const WIRE_DECODE_OPTIONS = Object.freeze({
  maxDepth: 2,
  maxItems: 48,
  maxBytes: 2 ** 31 - 1,
  requireCanonical: false,
  requireShortestHeads: true,
  allowIndefinite: false,
  allowTags: false,
  allowFloats: false,
  allowBigInt: false,
} as const satisfies CborDecodeOptions);

type Value = string | number | Uint8Array | CborMap;

function malformed(why: string, cause?: unknown): CloisterError {
  return new CloisterError('MALFORMED', `wire message: ${why}`, cause === undefined ? {} : { cause });
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

/**
 * The wire kind of a decoded value; anything the wire never carries (negative integers,
 * arrays, booleans, null) is rejected here, whatever field it sits in.
 */
function kindOf(v: CborValue): FieldKind {
  if (typeof v === 'number') {
    if (v < 0) throw malformed('negative integer');
    return 'uint';
  }
  if (typeof v === 'string') return 'text';
  if (v instanceof Uint8Array) return 'bytes';
  if (v instanceof Map) return 'map';
  throw malformed('unsupported value type');
}

/**
 * Checks a decoded map against a schema: keys are text, every key known, every required key
 * present, right kinds. Duplicate keys were already rejected by the decoder.
 */
function checkFields(map: CborMap, schema: Readonly<Record<string, Field>>, skip?: string): void {
  for (const [k, v] of map) {
    if (typeof k !== 'string') throw malformed('map keys must be text');
    const kind = kindOf(v);
    if (k === skip) continue;
    const f = Object.prototype.hasOwnProperty.call(schema, k) ? schema[k] : undefined;
    if (f === undefined) throw malformed(`unknown field '${k.length <= 16 ? k : k.slice(0, 16)}'`);
    if (kind !== f.kind) throw malformed(`field '${k}' has the wrong type`);
  }
  for (const [k, f] of Object.entries(schema)) {
    if (f.optional !== true && !map.has(k)) throw malformed(`missing field '${k}'`);
  }
}

function getUint(map: CborMap, k: string): number | undefined {
  const v = map.get(k);
  return typeof v === 'number' ? v : undefined;
}
function getBytes(map: CborMap, k: string): Uint8Array | undefined {
  const v = map.get(k);
  return v instanceof Uint8Array ? v : undefined;
}
function getText(map: CborMap, k: string): string | undefined {
  const v = map.get(k);
  return typeof v === 'string' ? v : undefined;
}

function sidOf(map: CborMap): number {
  const sid = getUint(map, 'sid');
  if (sid === undefined || sid > MAX_STREAM_ID) throw malformed('stream id out of range');
  return sid;
}

function bundleOf(map: CborMap): EvidenceBundle {
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
  let top: CborValue;
  try {
    // Byte strings come back as fresh copies; trailing bytes are rejected.
    top = decodeCbor(frame, WIRE_DECODE_OPTIONS);
  } catch (err) {
    // Every decode failure (a limit included) is MALFORMED on the wire: one outcome per frame.
    throw malformed(err instanceof CloisterError ? err.message : 'not CBOR', err);
  }
  if (!(top instanceof Map)) throw malformed('not a map');
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
      const b = top.get('bundle');
      if (!(b instanceof Map)) throw malformed('bad bundle');
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
      if (!top.has('fin')) return { t, sid: sidOf(top), body };
      // Strict: the only encoding of the flag is fin = 1 (absent means "not the end").
      if (getUint(top, 'fin') !== 1) throw malformed('fin must be 1');
      return { t, sid: sidOf(top), body, fin: true };
    }
    case 'cancel':
      return { t, sid: sidOf(top) };
    case 'err': {
      const code = getText(top, 'code');
      if (!isErrorCode(code)) throw malformed('unknown error code');
      return top.has('sid') ? { t, sid: sidOf(top), code } : { t, code };
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
      const be: CborMap = new Map<string, Value>([
        ['platform', b.platform],
        ['evidence', b.evidence],
        ['keyConfig', b.keyConfig],
      ]);
      if (b.certificates !== undefined) be.set('certificates', b.certificates);
      if (b.collateral !== undefined) be.set('collateral', b.collateral);
      entries.set('bundle', be);
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
    case 'cancel':
      entries.set('sid', checkSid(msg.sid));
      break;
    case 'err':
      if (msg.sid !== undefined) entries.set('sid', checkSid(msg.sid));
      if (!isErrorCode(msg.code)) throw new CloisterError('INVALID_ARGUMENT', 'unknown error code');
      entries.set('code', msg.code);
      break;
  }
  // Deterministic (RFC 8949 section 4.2.1): keys sorted bytewise by their encodings.
  return encodeCbor(entries);
}

/**
 * Header of the server's WebSocket upgrade answer naming its largest accepted message
 * (ServerLimits.maxFrameBytes): the client refuses a bigger request with LIMIT_EXCEEDED before
 * sending it, instead of having the server close the whole connection (1009). Advisory: an
 * answer without it (an older server) leaves the client to map a 1009 close to LIMIT_EXCEEDED.
 */
export const MAX_FRAME_BYTES_HEADER = 'x-cloister-max-frame-bytes';

/**
 * Header of the server's plaintext LIMIT_EXCEEDED answer over HTTP, `name=value` (e.g.
 * `maxRequestBytes=1048576`): the error message carries only a code, the header names the limit.
 */
export const LIMIT_HEADER = 'x-cloister-limit';

/** Header of the WebSocket upgrade answer naming the server's maxInFlightPerConnection (advisory, for error messages). */
export const MAX_IN_FLIGHT_HEADER = 'x-cloister-max-in-flight';

/**
 * Reason of the WebSocket close (code 1000) a server sends when it closes an idle connection.
 * After deciding it the server reads no more frames, so a request the client sent meanwhile
 * was never run: the client may send it again over a new connection.
 */
export const IDLE_CLOSE_REASON = 'idle';
