/**
 * Inner messages (docs/PROTOCOL.md section 4): the CBOR plaintext inside a sealed request
 * and inside each response chunk, and the Ed25519 receipt over an exchange.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, KeyObject, sign, verify } from 'node:crypto';
import { CloisterError, isErrorCode } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { concatBytes, copyBytes, utf8 } from '../core/bytes.js';
import { decodeCbor, encodeCbor, toPlain } from '../core/cbor.js';
import type { CborDecodeOptions, CborInput, CborKey, CborValue } from '../core/cbor.js';
import { MAX_KNOWN_REPLICAS, MAX_REPLICA_STATEMENT_BYTES, REPLICA_CAPABILITY, REPLICA_DIGEST_LENGTH } from './replica.js';
import type { ReplicaRef } from './replica.js';

export const MESSAGE_VERSION = 1;

/**
 * Capabilities (PROTOCOL.md section 4, "Versions and capabilities"): optional features of
 * inner-message version 1 that a client declares in its sealed request (`caps`), so that a
 * server sends them only to clients that understand them. `json`: the client decodes `json`
 * response chunks. `pad`: the client accepts a `pad` field in response chunks and wants them
 * padded to size buckets (`padChunkPlaintext`). `report`: the client decodes a `report` chunk
 * (the output guard's verdict and the retrieval facts, before `end`, covered by the receipt).
 * A server ignores capabilities it does not know.
 */
export const CAPABILITIES = ['json', 'pad', 'report'] as const;
/**
 * Receipts v2 (PROTOCOL.md section 12), opt-in: `receipt2` - the request carries a 32-byte
 * `salt` and the final chunk is `end2` with a Merkle-log receipt; `receipt-proof` - and with
 * the inclusion proof to a signed tree head. Declared only by clients that ask for them (a
 * server from before them refuses the `salt` field: MALFORMED).
 */
export const RECEIPT_V2_CAPABILITY = 'receipt2';
export const RECEIPT_PROOF_CAPABILITY = 'receipt-proof';
/** Length of the request's receipt salt (`salt`). */
export const REQUEST_SALT_LENGTH = 32;
export type Capability = (typeof CAPABILITIES)[number];
/** One label of a text-classification result, as the engine returns it and the client reads it. */
export interface LabelScore {
  readonly label: string;
  readonly score: number;
}

/** One entity of a token-classification result. */
export interface TokenEntity {
  readonly entity: string;
  readonly score: number;
  readonly index: number;
  readonly word: string;
}

/** Bounds on the `caps` field: entries, and the length of each (ASCII a-z, 0-9, '-'). */
export const MAX_CAPS = 16;
export const MAX_CAP_BYTES = 32;
const CAP_RE = /^[a-z0-9-]{1,32}$/;
export const OPERATIONS = ['classify', 'embed', 'token-classify', 'generate', 'chat', 'completion', 'embeddings', 'models', 'collection', 'rag'] as const;
export type Operation = (typeof OPERATIONS)[number];

export interface SealedRequest {
  readonly v: 1;
  readonly op: Operation;
  readonly model: string;
  /** Op-specific input: a string, an array of strings, or an OpenAI-shaped body. */
  readonly input: CborInput;
  readonly params?: { readonly [k: string]: CborInput };
  readonly stream: boolean;
  /** Client timestamp, Unix milliseconds (replay window). */
  readonly ts: number;
  /** Random 16-byte request id (replay window). */
  readonly id: Uint8Array;
  /**
   * Capabilities the client declares (CAPABILITIES). Encoding: absent means this
   * implementation's CAPABILITIES; an empty list omits the field (a client from before
   * capabilities). Decoding: always present, empty when the field was absent.
   */
  readonly caps?: readonly string[];
  /**
   * The client's API key (optional; PROTOCOL.md section 4 "Client API keys"): 1 to
   * MAX_CLIENT_KEY_BYTES printable ASCII characters. Sent only when the caller configured one.
   */
  readonly key?: string;
  /**
   * The receipt salt (receipts v2): exactly REQUEST_SALT_LENGTH random bytes, sent together
   * with the `receipt2` capability; the server's receipt leaf holds only salted hashes.
   */
  readonly salt?: Uint8Array;
  /**
   * Per-replica receipts (src/protocol/replica.ts): SHA-256 digests of replica statements the
   * client verified before, at most MAX_KNOWN_REPLICAS, sent only with the `replica`
   * capability; a replica whose statement is listed names it by digest instead of sending it.
   */
  readonly replicas?: readonly Uint8Array[];
}

/** Longest client API key in a sealed request, in bytes; printable ASCII (0x21..0x7e) only. */
export const MAX_CLIENT_KEY_BYTES = 256;
const CLIENT_KEY_RE = /^[\x21-\x7e]{1,256}$/;

/** Whether `key` is a client API key the sealed request can carry. */
export function isClientKey(key: unknown): key is string {
  return typeof key === 'string' && CLIENT_KEY_RE.test(key);
}

export interface MessageLimits {
  /** Largest request plaintext accepted by `decodeSealedRequest`. */
  readonly maxRequestBytes: number;
  /** Most elements when `input` is an array. */
  readonly maxInputItems: number;
  /** CBOR nesting depth. */
  readonly maxDepth: number;
  /** Total CBOR items in one message. */
  readonly maxItems: number;
  /** Longest model name, in UTF-8 bytes. */
  readonly maxModelNameBytes: number;
  /** Largest response chunk plaintext accepted by `decodeResponseChunk`. */
  readonly maxChunkBytes: number;
}

export const DEFAULT_MESSAGE_LIMITS: MessageLimits = Object.freeze({
  maxRequestBytes: 4 << 20,
  maxInputItems: 1024,
  maxDepth: 16,
  maxItems: 200_000,
  maxModelNameBytes: 256,
  maxChunkBytes: 4 << 20,
});

export const REQUEST_ID_LENGTH = 16;
export const RECEIPT_SIGNATURE_LENGTH = 64;

// --- Padding to size buckets (PROTOCOL.md section 4, "Padding") -----------------------------

/** The smallest bucket, and the bucket step up to 16 times it. */
export const PAD_MIN_BUCKET = 256;
/** Encoded length of the text key "pad" (0x63 'p' 'a' 'd'). */
const PAD_KEY_LENGTH = 4;
/** Zero bytes reused as pad source (copied, never handed out). */
const ZEROS = new Uint8Array(4096);

/**
 * The bucket step at length `n`: 256 B up to 4 KiB, then 1/16 of the power of two at or
 * below `n` (16 buckets per doubling, so padding costs at most 255 B or 6.25 %).
 */
export function padStep(n: number): number {
  if (n <= 16 * PAD_MIN_BUCKET) return PAD_MIN_BUCKET;
  const log2 = n < 2 ** 31 ? 31 - Math.clz32(n) : Math.floor(Math.log2(n));
  return 2 ** (log2 - 4);
}

/** The smallest bucket boundary at or above `n` (PAD_MIN_BUCKET for n <= 256). */
export function padBucket(n: number): number {
  const s = padStep(n);
  return Math.max(PAD_MIN_BUCKET, Math.ceil(n / s) * s);
}

/** Length of the shortest CBOR head of a byte string of `p` bytes. */
function bstrHeadLength(p: number): number {
  return p < 24 ? 1 : p < 256 ? 2 : p < 65_536 ? 3 : p < 2 ** 32 ? 5 : 9;
}

/**
 * The length of the zero `pad` byte string that makes a CBOR map of `length` bytes (without
 * `pad`, fewer than 23 entries) exactly `padBucket` long, the next bucket when no shortest
 * head fits; at most `limit` bytes in all. Undefined when not even an empty pad fits.
 */
export function padLengthFor(length: number, limit = Number.MAX_SAFE_INTEGER): number | undefined {
  const min = length + PAD_KEY_LENGTH + 1;
  if (min > limit) return undefined;
  let target = Math.min(padBucket(min), limit);
  for (let tries = 0; tries < 8; tries++) {
    const room = target - length - PAD_KEY_LENGTH;
    for (const h of [1, 2, 3, 5]) {
      const p = room - h;
      if (p >= 0 && bstrHeadLength(p) === h) return p;
    }
    // No shortest head fits (e.g. 24 bytes of room: 23 + head 1 is short, 22 + head 2 not shortest).
    target = target >= limit ? target - 1 : Math.min(padBucket(target + 1), limit);
  }
  return undefined;
}

/** The most pad a chunk or request of `total` bytes (pad included) may carry (strict decoders). */
export function maxPadFor(total: number): number {
  return 2 * padStep(total) - 1;
}

function padBytes(p: number): Uint8Array {
  return p <= ZEROS.byteLength ? ZEROS.subarray(0, p) : new Uint8Array(p);
}

/** Strict decoders: `pad`, when present, is a byte string of zeros within maxPadFor(total). */
function checkPad(m: Map<CborKey, CborValue>, total: number): void {
  const pad = m.get('pad');
  if (pad === undefined) return;
  if (!(pad instanceof Uint8Array)) throw bad('pad', 'must be a byte string');
  if (pad.byteLength > maxPadFor(total)) throw bad('pad', `${pad.byteLength} bytes exceed the bound of ${maxPadFor(total)} for a message of ${total} bytes`);
  let or = 0;
  for (let i = 0; i < pad.byteLength; i++) or |= pad[i] as number;
  if (or !== 0) throw bad('pad', 'must be all zeros');
}

/**
 * Pads an encoded response chunk plaintext (`encodeResponseChunk`) to its size bucket with a
 * zero `pad` field, without encoding it again: in the deterministic key order `pad` comes
 * right after `t` (the only shorter key). At most `limit` bytes in all; a chunk that cannot
 * be padded within `limit` is returned as it is.
 */
export function padChunkPlaintext(chunk: Uint8Array, limit = Number.MAX_SAFE_INTEGER): Uint8Array {
  const head = chunk[0];
  // A map of 1..22 entries (one-byte head), first key "t" with a short text value.
  if (head === undefined || head < 0xa1 || head > 0xb6 || chunk[1] !== 0x61 || chunk[2] !== 0x74) {
    throw new CloisterError('INTERNAL', 'not an encoded response chunk');
  }
  const tHead = chunk[3] as number;
  if (tHead < 0x60 || tHead > 0x77) throw new CloisterError('INTERNAL', 'not an encoded response chunk');
  const at = 4 + (tHead - 0x60);
  const p = padLengthFor(chunk.byteLength, limit);
  if (p === undefined) return chunk;
  const h = bstrHeadLength(p);
  const out = new Uint8Array(chunk.byteLength + PAD_KEY_LENGTH + h + p);
  out.set(chunk.subarray(0, at), 0);
  out[0] = head + 1;
  let o = at;
  out.set([0x63, 0x70, 0x61, 0x64], o);
  o += PAD_KEY_LENGTH;
  if (h === 1) out[o] = 0x40 + p;
  else if (h === 2) out.set([0x58, p], o);
  else if (h === 3) out.set([0x59, p >> 8, p & 0xff], o);
  else {
    out[o] = 0x5a;
    new DataView(out.buffer, out.byteOffset).setUint32(o + 1, p);
  }
  o += h + p; // the pad bytes are already zero
  out.set(chunk.subarray(at), o);
  return out;
}

function bad(field: string, why: string): CloisterError {
  return new CloisterError('MALFORMED', `${field}: ${why}`, { detail: { field } });
}

function resolve(l: Partial<MessageLimits> | undefined): MessageLimits {
  return { ...DEFAULT_MESSAGE_LIMITS, ...l };
}

/** Strict deterministic decoding (RFC 8949 section 4.2.1); floats allowed for JSON-like content. */
function cborOptions(l: MessageLimits, maxBytes: number): CborDecodeOptions {
  return { maxDepth: l.maxDepth, maxItems: l.maxItems, maxBytes, allowFloats: true };
}

function strictMap(v: CborValue, field: string, required: readonly string[], optional: readonly string[]): Map<CborKey, CborValue> {
  if (!(v instanceof Map)) throw bad(field, 'must be a map');
  for (const k of v.keys()) {
    if (typeof k !== 'string' || (!required.includes(k) && !optional.includes(k))) throw bad(field, `unknown key ${String(k)}`);
  }
  for (const k of required) if (!v.has(k)) throw bad(field, `missing key ${k}`);
  return v;
}

/**
 * `pad`: add a zero `pad` field so that the plaintext is exactly `padBucket` long (PROTOCOL.md
 * section 4, "Padding"); only for a server that knows the field (servers from before it
 * refuse the request, MALFORMED). Default false.
 */
export function encodeSealedRequest(r: SealedRequest, options: { readonly pad?: boolean } = {}): Uint8Array {
  if (r.id.byteLength !== REQUEST_ID_LENGTH) throw new CloisterError('INVALID_ARGUMENT', 'id must be 16 bytes');
  if (!(OPERATIONS as readonly string[]).includes(r.op)) throw new CloisterError('UNKNOWN_OPERATION');
  const caps = [...new Set(r.caps ?? CAPABILITIES)].sort();
  if (caps.length > MAX_CAPS || !caps.every((c) => CAP_RE.test(c))) throw new CloisterError('INVALID_ARGUMENT', 'caps: at most 16 names of a-z, 0-9 and -');
  if (r.key !== undefined && !isClientKey(r.key)) throw new CloisterError('INVALID_ARGUMENT', `key: 1 to ${MAX_CLIENT_KEY_BYTES} printable ASCII characters`);
  if ((r.salt !== undefined) !== caps.includes(RECEIPT_V2_CAPABILITY) || (r.salt !== undefined && r.salt.byteLength !== REQUEST_SALT_LENGTH)) {
    throw new CloisterError('INVALID_ARGUMENT', `salt: ${REQUEST_SALT_LENGTH} bytes, sent exactly when the ${RECEIPT_V2_CAPABILITY} capability is declared`);
  }
  if (r.replicas !== undefined) {
    if (!caps.includes(REPLICA_CAPABILITY) || r.replicas.length === 0 || r.replicas.length > MAX_KNOWN_REPLICAS || !r.replicas.every((d) => d.byteLength === REPLICA_DIGEST_LENGTH)) {
      throw new CloisterError('INVALID_ARGUMENT', `replicas: 1 to ${MAX_KNOWN_REPLICAS} digests of ${REPLICA_DIGEST_LENGTH} bytes, sent only with the ${REPLICA_CAPABILITY} capability`);
    }
  }
  const fields = {
    v: MESSAGE_VERSION, op: r.op, model: r.model, input: r.input, params: r.params, stream: r.stream, ts: r.ts, id: r.id,
    caps: caps.length === 0 ? undefined : caps,
    key: r.key,
    salt: r.salt,
    replicas: r.replicas === undefined ? undefined : [...r.replicas],
  };
  const plain = encodeCbor(fields);
  if (options.pad !== true) return plain;
  const p = padLengthFor(plain.byteLength);
  if (p === undefined) return plain;
  const padded = encodeCbor({ ...fields, pad: padBytes(p) });
  plain.fill(0);
  if (padded.byteLength !== padBucket(padded.byteLength)) throw new CloisterError('INTERNAL', 'padded request off its bucket');
  return padded;
}

/** Strict: unknown/missing keys, wrong types, over-limit sizes and trailing bytes fail. */
export function decodeSealedRequest(bytes: Uint8Array, limits?: Partial<MessageLimits>): SealedRequest {
  const l = resolve(limits);
  if (bytes.byteLength > l.maxRequestBytes) {
    throw new CloisterError('LIMIT_EXCEEDED', 'request too large', { detail: { limit: 'maxRequestBytes', value: l.maxRequestBytes } });
  }
  const root = decodeCbor(bytes, cborOptions(l, l.maxRequestBytes));
  // The version first: a later version may have other fields (a clear VERSION_UNSUPPORTED, not MALFORMED).
  const v = root instanceof Map ? root.get('v') : undefined;
  if (typeof v === 'number' && v !== MESSAGE_VERSION) {
    throw new CloisterError('VERSION_UNSUPPORTED', `inner message version ${v} is not supported (this server speaks ${MESSAGE_VERSION})`, {
      detail: { field: 'v', supported: MESSAGE_VERSION },
    });
  }
  const m = strictMap(root, 'request', ['v', 'op', 'model', 'input', 'stream', 'ts', 'id'], ['params', 'caps', 'key', 'pad', 'salt', 'replicas']);
  checkPad(m, bytes.byteLength);
  if (m.get('v') !== MESSAGE_VERSION) throw bad('v', 'unsupported version');
  const op = m.get('op');
  if (typeof op !== 'string') throw bad('op', 'must be text');
  if (!(OPERATIONS as readonly string[]).includes(op)) throw new CloisterError('UNKNOWN_OPERATION', undefined, { detail: { field: 'op' } });
  const model = m.get('model');
  if (typeof model !== 'string' || Buffer.byteLength(model) > l.maxModelNameBytes) throw bad('model', 'must be text within maxModelNameBytes');
  const stream = m.get('stream');
  if (typeof stream !== 'boolean') throw bad('stream', 'must be a bool');
  const ts = m.get('ts');
  if (typeof ts !== 'number' || !Number.isSafeInteger(ts) || ts < 0) throw bad('ts', 'must be an unsigned integer');
  const id = m.get('id');
  if (!(id instanceof Uint8Array) || id.byteLength !== REQUEST_ID_LENGTH) throw bad('id', 'must be 16 bytes');
  const inputRaw = m.get('input');
  if (inputRaw === undefined) throw bad('input', 'missing');
  if (Array.isArray(inputRaw) && inputRaw.length > l.maxInputItems) {
    throw new CloisterError('LIMIT_EXCEEDED', 'too many input items', { detail: { limit: 'maxInputItems', value: l.maxInputItems } });
  }
  const input = toPlain(inputRaw);
  const paramsRaw = m.get('params');
  let params: { readonly [k: string]: CborInput } | undefined;
  if (paramsRaw !== undefined) {
    if (!(paramsRaw instanceof Map)) throw bad('params', 'must be a map');
    params = toPlain(paramsRaw) as { readonly [k: string]: CborInput };
  }
  const capsRaw = m.get('caps');
  const caps: string[] = [];
  if (capsRaw !== undefined) {
    if (!Array.isArray(capsRaw) || capsRaw.length === 0 || capsRaw.length > MAX_CAPS) throw bad('caps', `must be an array of 1 to ${MAX_CAPS} names`);
    for (const c of capsRaw) {
      if (typeof c !== 'string' || !CAP_RE.test(c)) throw bad('caps', `each must be 1 to ${MAX_CAP_BYTES} of a-z, 0-9, -`);
      if (caps.includes(c)) throw bad('caps', 'duplicate name');
      // One encoding per value: names in ascending order, as encodeSealedRequest writes them.
      const last = caps[caps.length - 1];
      if (last !== undefined && c < last) throw bad('caps', 'names must be in ascending order');
      caps.push(c);
    }
  }
  const key = m.get('key');
  if (key !== undefined && !isClientKey(key)) throw bad('key', `must be 1 to ${MAX_CLIENT_KEY_BYTES} printable ASCII characters`);
  const salt = m.get('salt');
  if (salt !== undefined && (!(salt instanceof Uint8Array) || salt.byteLength !== REQUEST_SALT_LENGTH)) throw bad('salt', `must be ${REQUEST_SALT_LENGTH} bytes`);
  if ((salt !== undefined) !== caps.includes(RECEIPT_V2_CAPABILITY)) throw bad('salt', `goes exactly with the ${RECEIPT_V2_CAPABILITY} capability`);
  const replicasRaw = m.get('replicas');
  let replicas: Uint8Array[] | undefined;
  if (replicasRaw !== undefined) {
    if (!caps.includes(REPLICA_CAPABILITY)) throw bad('replicas', `goes only with the ${REPLICA_CAPABILITY} capability`);
    if (!Array.isArray(replicasRaw) || replicasRaw.length === 0 || replicasRaw.length > MAX_KNOWN_REPLICAS) throw bad('replicas', `must be an array of 1 to ${MAX_KNOWN_REPLICAS} digests`);
    replicas = replicasRaw.map((d) => {
      if (!(d instanceof Uint8Array) || d.byteLength !== REPLICA_DIGEST_LENGTH) throw bad('replicas', `each must be ${REPLICA_DIGEST_LENGTH} bytes`);
      return d;
    });
  }
  return {
    v: MESSAGE_VERSION, op: op as Operation, model, input, ...(params === undefined ? {} : { params }), stream, ts, id, caps,
    ...(key === undefined ? {} : { key }),
    ...(salt === undefined ? {} : { salt }),
    ...(replicas === undefined ? {} : { replicas }),
  };
}

export type ResponseChunk =
  | { readonly t: 'data'; readonly data: CborInput }
  /**
   * Several engine results that were available at the same moment (e.g. the tokens of one
   * upstream read), in order, in one sealed chunk: the client hands them out one by one,
   * exactly as if each had come in its own `data` chunk.
   */
  | { readonly t: 'items'; readonly items: readonly CborInput[] }
  /**
   * Several engine results, each the JSON text of one value (PROTOCOL.md section 4, `json`
   * chunks): an engine that receives JSON (the upstream engine's SSE events) relays that
   * text instead of a CBOR re-encoding; the client parses each text (MALFORMED if it is not JSON).
   */
  | { readonly t: 'json'; readonly items: readonly string[] }
  | { readonly t: 'error'; readonly code: ErrorCode; readonly message: string }
  /**
   * What the server checked about this answer (PROTOCOL.md section 4, `report` chunks): the
   * output guard's policy, action and the identifier types it found with their counts (never
   * the text), and for retrieval the collection version and the digests of the chunks used.
   * Sent only to clients that declared `report`, right before `end`: the receipt covers it.
   */
  | { readonly t: 'report'; readonly report: CborInput }
  /** `replica`: the replica statement, or its digest, for a client that declared `replica` (src/protocol/replica.ts). */
  | { readonly t: 'end'; readonly data?: CborInput; readonly receipt: Uint8Array; readonly replica?: ReplicaRef }
  /** The final chunk with a receipts-v2 receipt (receipt-v2.ts `encodeEndReceipt`): leaf, index, optional proof. */
  | { readonly t: 'end2'; readonly receipt: Uint8Array };

export function encodeResponseChunk(c: ResponseChunk): Uint8Array {
  switch (c.t) {
    case 'data':
      return encodeCbor({ t: 'data', data: c.data });
    case 'items':
      if (!Array.isArray(c.items) || c.items.length === 0) throw new CloisterError('INVALID_ARGUMENT', 'items must be a non-empty array');
      return encodeCbor({ t: 'items', items: c.items });
    case 'json':
      if (!Array.isArray(c.items) || c.items.length === 0 || !c.items.every((x) => typeof x === 'string')) {
        throw new CloisterError('INVALID_ARGUMENT', 'json items must be a non-empty array of text');
      }
      return encodeCbor({ t: 'json', items: c.items });
    case 'error':
      if (!isErrorCode(c.code)) throw new CloisterError('INVALID_ARGUMENT', 'unknown error code');
      return encodeCbor({ t: 'error', code: c.code, message: c.message });
    case 'report':
      return encodeCbor({ t: 'report', report: c.report });
    case 'end':
      if (c.receipt.byteLength !== RECEIPT_SIGNATURE_LENGTH) throw new CloisterError('INVALID_ARGUMENT', 'receipt must be 64 bytes');
      return encodeCbor({ t: 'end', data: c.data, receipt: c.receipt, replica: c.replica === undefined ? undefined : encodeReplicaRef(c.replica) });
    case 'end2':
      if (!(c.receipt instanceof Uint8Array) || c.receipt.byteLength === 0) throw new CloisterError('INVALID_ARGUMENT', 'an end2 receipt is a non-empty byte string');
      return encodeCbor({ t: 'end2', receipt: c.receipt });
  }
}

export function decodeResponseChunk(bytes: Uint8Array, limits?: Partial<MessageLimits>): ResponseChunk {
  const l = resolve(limits);
  if (bytes.byteLength > l.maxChunkBytes) throw new CloisterError('LIMIT_EXCEEDED', 'response chunk too large', { detail: { limit: 'maxChunkBytes' } });
  const root = decodeCbor(bytes, cborOptions(l, l.maxChunkBytes));
  if (!(root instanceof Map)) throw bad('chunk', 'must be a map');
  const t = root.get('t');
  if (t === 'data') {
    const m = strictMap(root, 'chunk', ['t', 'data'], ['pad']);
    checkPad(m, bytes.byteLength);
    return { t: 'data', data: toPlain(m.get('data') ?? null) };
  }
  if (t === 'items') {
    const m = strictMap(root, 'chunk', ['t', 'items'], ['pad']);
    checkPad(m, bytes.byteLength);
    const items = toPlain(m.get('items') ?? null);
    if (!Array.isArray(items) || items.length === 0) throw bad('items', 'must be a non-empty array');
    return { t: 'items', items: items as CborInput[] };
  }
  if (t === 'json') {
    const m = strictMap(root, 'chunk', ['t', 'items'], ['pad']);
    checkPad(m, bytes.byteLength);
    const items = m.get('items');
    if (!Array.isArray(items) || items.length === 0) throw bad('items', 'must be a non-empty array');
    for (const x of items) if (typeof x !== 'string') throw bad('items', 'must be text (JSON)');
    return { t: 'json', items: items as string[] };
  }
  if (t === 'error') {
    const m = strictMap(root, 'chunk', ['t', 'code', 'message'], ['pad']);
    checkPad(m, bytes.byteLength);
    const code = m.get('code');
    const message = m.get('message');
    if (!isErrorCode(code)) throw bad('code', 'unknown error code');
    if (typeof message !== 'string') throw bad('message', 'must be text');
    return { t: 'error', code, message };
  }
  if (t === 'report') {
    const m = strictMap(root, 'chunk', ['t', 'report'], ['pad']);
    checkPad(m, bytes.byteLength);
    const report = toPlain(m.get('report') ?? null);
    if (typeof report !== 'object' || report === null || Array.isArray(report) || report instanceof Uint8Array) throw bad('report', 'must be a map');
    return { t: 'report', report };
  }
  if (t === 'end') {
    const m = strictMap(root, 'chunk', ['t', 'receipt'], ['data', 'pad', 'replica']);
    checkPad(m, bytes.byteLength);
    const receipt = m.get('receipt');
    if (!(receipt instanceof Uint8Array) || receipt.byteLength !== RECEIPT_SIGNATURE_LENGTH) throw bad('receipt', 'must be 64 bytes');
    const data = m.get('data');
    const replica = m.get('replica');
    return { t: 'end', ...(data === undefined ? {} : { data: toPlain(data) }), receipt, ...(replica === undefined ? {} : { replica: decodeReplicaRef(replica) }) };
  }
  if (t === 'end2') {
    const m = strictMap(root, 'chunk', ['t', 'receipt'], []);
    const receipt = m.get('receipt');
    if (!(receipt instanceof Uint8Array) || receipt.byteLength === 0) throw bad('receipt', 'must be a non-empty byte string');
    return { t: 'end2', receipt };
  }
  throw bad('t', 'unknown chunk type');
}

function encodeReplicaRef(r: ReplicaRef): Map<CborKey, CborInput> {
  if (r.evidence !== undefined) {
    if (r.evidence.byteLength === 0 || r.evidence.byteLength > MAX_REPLICA_STATEMENT_BYTES) throw new CloisterError('INVALID_ARGUMENT', `a replica statement is 1 to ${MAX_REPLICA_STATEMENT_BYTES} bytes`);
    return new Map<CborKey, CborInput>([['evidence', r.evidence]]);
  }
  if (r.digest.byteLength !== REPLICA_DIGEST_LENGTH) throw new CloisterError('INVALID_ARGUMENT', `a replica statement digest is ${REPLICA_DIGEST_LENGTH} bytes`);
  return new Map<CborKey, CborInput>([['digest', r.digest]]);
}

/** `replica` in an `end` chunk: exactly one of `evidence` (the statement) or `digest` (one the client listed). */
function decodeReplicaRef(v: CborValue): ReplicaRef {
  const m = strictMap(v, 'replica', [], ['evidence', 'digest']);
  const evidence = m.get('evidence');
  const digest = m.get('digest');
  if ((evidence === undefined) === (digest === undefined)) throw bad('replica', 'must hold exactly one of evidence and digest');
  if (evidence !== undefined) {
    if (!(evidence instanceof Uint8Array) || evidence.byteLength === 0 || evidence.byteLength > MAX_REPLICA_STATEMENT_BYTES) throw bad('replica.evidence', `must be 1 to ${MAX_REPLICA_STATEMENT_BYTES} bytes`);
    return { evidence };
  }
  if (!(digest instanceof Uint8Array) || digest.byteLength !== REPLICA_DIGEST_LENGTH) throw bad('replica.digest', `must be ${REPLICA_DIGEST_LENGTH} bytes`);
  return { digest };
}

/**
 * Results an engine already holds as JSON text (each text meant to be one JSON value), e.g.
 * the SSE events of one read from an OpenAI-compatible engine. The server relays them as a
 * `json` chunk (`encodeResultsChunk`) rather than parsing and re-encoding them as CBOR; the
 * client parses every text and fails the stream (MALFORMED) on one that is not JSON.
 */
export class JsonResults {
  readonly texts: readonly string[];
  /** Total length of the texts (UTF-16 code units); the handler bounds a chunk by it. */
  readonly chars: number;
  constructor(texts: readonly string[]) {
    if (texts.length === 0) throw new CloisterError('INVALID_ARGUMENT', 'JsonResults needs at least one text');
    this.texts = texts;
    let chars = 0;
    for (const t of texts) chars += t.length;
    this.chars = chars;
  }
}

/**
 * The chunk plaintext for results an engine produced together (handler.ts): one `json` chunk
 * when every result is JsonResults, else a `data` chunk (one result) or an `items` chunk.
 */
/** One relayed text as a value; never carries the text (content) in the error. */
function parseRelayedJson(text: string): CborInput {
  try {
    return JSON.parse(text) as CborInput;
  } catch {
    throw new CloisterError('ENGINE_FAILED', 'relayed engine output is not valid JSON');
  }
}

export function encodeResultsChunk(results: readonly unknown[], options: { readonly json?: boolean } = {}): Uint8Array {
  // `json` chunks only for a client that declared the capability (default: yes, for callers that checked).
  if (options.json !== false && results.length > 0 && results.every((r) => r instanceof JsonResults)) {
    const texts = results.length === 1 ? (results[0] as JsonResults).texts : (results as JsonResults[]).flatMap((r) => r.texts);
    return encodeResponseChunk({ t: 'json', items: texts });
  }
  // A JsonResults among plain results (an engine that mixes both), or for a client without
  // the `json` capability, goes as its parsed values.
  const items = results.flatMap((r) => (r instanceof JsonResults ? r.texts.map(parseRelayedJson) : [r as CborInput]));
  return encodeResponseChunk(items.length === 1 ? { t: 'data', data: items[0] as CborInput } : { t: 'items', items });
}

// --- Receipts ------------------------------------------------------------------------------

/**
 * Receipt message = "cloister/receipt/v1" || 0x00 || SHA-256(request plaintext) ||
 * SHA-256(concatenation of every response chunk plaintext before the final one). Each
 * chunk plaintext is one self-delimiting CBOR item, so the concatenation is unambiguous.
 */
export const RECEIPT_LABEL = concatBytes(utf8('cloister/receipt/v1'), Uint8Array.of(0));

export class ReceiptHasher {
  readonly #requestHash: Uint8Array;
  readonly #chunks = createHash('sha256');
  #done = false;

  constructor(requestPlaintext: Uint8Array) {
    this.#requestHash = new Uint8Array(createHash('sha256').update(requestPlaintext).digest());
  }

  /** Add one non-final response chunk plaintext, in order. */
  update(chunkPlaintext: Uint8Array): void {
    if (this.#done) throw new CloisterError('PROTOCOL_VIOLATION', 'receipt already computed');
    this.#chunks.update(chunkPlaintext);
  }

  /** The message the receipt signs; the hasher is finished afterwards. */
  message(): Uint8Array {
    if (this.#done) throw new CloisterError('PROTOCOL_VIOLATION', 'receipt already computed');
    this.#done = true;
    return concatBytes(RECEIPT_LABEL, this.#requestHash, new Uint8Array(this.#chunks.digest()));
  }
}

const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export interface ReceiptKeyPair {
  /** Keep inside the TEE. */
  readonly privateKey: KeyObject;
  /** Raw 32-byte Ed25519 key, published in the key config. */
  readonly publicKey: Uint8Array;
}

export function generateReceiptKeyPair(): ReceiptKeyPair {
  // The public half is encoded inside the key generation job, never exported from the fresh
  // KeyObject afterwards: in Node 20 that export can deadlock against the job's destructor
  // when a GC lands in it (see generateX25519Encoded in src/crypto/hpke/kem.ts).
  const { privateKey, publicKey } = generateEd25519Encoded('ed25519', { publicKeyEncoding: { type: 'spki', format: 'der' } });
  if (!(privateKey instanceof KeyObject)) throw new CloisterError('INTERNAL', 'Ed25519 private key is not a KeyObject');
  if (!(publicKey instanceof Uint8Array) || publicKey.byteLength !== ED25519_SPKI_PREFIX.byteLength + 32
    || !ED25519_SPKI_PREFIX.equals(publicKey.subarray(0, ED25519_SPKI_PREFIX.byteLength))) {
    throw new CloisterError('INTERNAL', 'Ed25519 public key of an unexpected form');
  }
  return { privateKey, publicKey: copyBytes(publicKey.subarray(ED25519_SPKI_PREFIX.byteLength)) };
}

/** generateKeyPairSync with only the public half encoded, which @types/node does not declare. */
const generateEd25519Encoded = generateKeyPairSync as unknown as (
  type: 'ed25519',
  options: { readonly publicKeyEncoding: { readonly type: 'spki'; readonly format: 'der' } },
) => { readonly privateKey: unknown; readonly publicKey: unknown };

/** Ed25519 private key from its raw 32-byte seed. */
export function receiptPrivateKeyFromSeed(seed: Uint8Array): KeyObject {
  if (seed.byteLength !== 32) throw new CloisterError('INVALID_ARGUMENT', 'Ed25519 seed must be 32 bytes');
  return createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
}

export function signReceipt(privateKey: KeyObject, message: Uint8Array): Uint8Array {
  return new Uint8Array(sign(null, message, privateKey));
}

// A client verifies every receipt against the same few server keys, and the DER import
// costs more than the verification: KeyObjects are cached by value (public keys, bounded).
const RECEIPT_KEY_CACHE_MAX = 16;
const receiptKeyCache = new Map<string, KeyObject>();

function receiptPublicKeyObject(publicKey: Uint8Array): KeyObject {
  const k = Buffer.from(publicKey.buffer, publicKey.byteOffset, publicKey.byteLength).toString('base64');
  let key = receiptKeyCache.get(k);
  if (key === undefined) {
    key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' });
    if (receiptKeyCache.size >= RECEIPT_KEY_CACHE_MAX) receiptKeyCache.clear();
    receiptKeyCache.set(k, key);
  }
  return key;
}

/** False on any mismatch or malformed input; never throws on attacker data. */
export function verifyReceipt(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.byteLength !== 32 || signature.byteLength !== RECEIPT_SIGNATURE_LENGTH) return false;
  try {
    return verify(null, message, receiptPublicKeyObject(publicKey), signature);
  } catch {
    return false;
  }
}
