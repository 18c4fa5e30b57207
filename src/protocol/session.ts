/**
 * Protocol v2 sessions (docs/PROTOCOL.md section 11): one HPKE exchange to the attested key
 * opens a session, then every request costs only symmetric work.
 *
 * Open: the client seals `{v: 2, share}` (a fresh X25519 public key of its own) as a one-shot
 * chunked OHTTP request (section 3) to the attested key; the server answers, inside the sealed
 * response (so only the holder of the attested key can answer), `{v: 2, id, share, maxAgeS,
 * maxBytes, idleS}` with a fresh X25519 share of its own. Both sides compute
 *   dh  = X25519(own ephemeral private, peer share)       (all-zero output refused)
 *   prk = HKDF-Extract(salt = "cloister/session/v2" || 0x00 || id || clientShare || serverShare, dh)
 * and forget the ephemeral private keys: a later leak of the server's long-term HPKE key
 * opens the open exchange (the shares are public anyway), not the session (forward secrecy).
 *
 * Request n (a uint64 sequence number, 1, 2, ...): keys = HKDF-Expand(prk,
 * "cloister/session/v2 keys" || id || I2OSP(n, 8), 2 * (Nk + Nn)) = request key || request
 * nonce || response key || response nonce. Request body = id (16) || I2OSP(n, 8) || chunks;
 * the response stream is chunks only (its keys already depend on n, no response nonce).
 * Chunks as in section 3: varint length framing, nonce = base nonce XOR chunk counter, AAD
 * empty on non-final chunks and "final" on the final one, so truncation is detected.
 *
 * Replay: the server accepts each sequence number once: above the highest seen, or among the
 * SESSION_REPLAY_WINDOW below it not yet seen (RFC 4303 section 3.4.3), O(1) per session; a
 * response opens only under the keys of its own request, session and sequence number.
 */
import { createPrivateKey, createPublicKey, diffieHellman } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { CloisterError } from '../errors.js';
import { assertBytes, concatBytes, copyBytes, i2osp, utf8 } from '../core/bytes.js';
import { timingSafeEqualBytes } from '../crypto/ct.js';
import { hkdfExpand, hkdfExtract } from '../crypto/hkdf.js';
import { generateX25519KeyPair } from '../crypto/hpke/kem.js';
import { MAX_SEQUENCE } from '../crypto/hpke/context.js';
import { suiteParams } from '../crypto/hpke/suite.js';
import type { HpkeSuite, SuiteParams } from '../crypto/hpke/suite.js';
import { ChunkReader, DEFAULT_CHUNKED_LIMITS, DEFAULT_REQUEST_CHUNK_SIZE, KeyedChunkOpen, KeyedChunkSealer, MAX_RESPONSE_CHUNK_LENGTH, sealChunkedRequest } from './chunked.js';
import type { ChunkKeys, ChunkedLimits, ChunkedResponseOpener } from './chunked.js';
import { randomBytesPooled } from '../crypto/random.js';
import { decodeSealedRequest, encodeSealedRequest } from './messages.js';
import type { SealedRequest } from './messages.js';
import type { SealTarget } from './ohttp.js';
import type { OpenedRequest, RequestKey, SealRequestOptions, SealedExchangeRequest } from './request.js';
import { ResponseReader, ResponseWriter } from './response.js';
import { decodeCbor, encodeCbor } from '../core/cbor.js';
import type { CborKey, CborValue } from '../core/cbor.js';
import type { ChunkOpener, ChunkSealer } from './response.js';
import { SESSION_SALT_LENGTH, sessionCommitment } from './receipt-v2.js';

/** The protocol version that sessions are (key config `protocols`, evidence request `v`). */
export const SESSION_PROTOCOL_VERSION = 2;
export const SESSION_ID_LENGTH = 16;
/** id (16) || sequence number (8). */
export const SESSION_REQUEST_HEADER_LENGTH = SESSION_ID_LENGTH + 8;
/** Sequence numbers accepted below the highest seen, each once (reordering over HTTP). */
export const SESSION_REPLAY_WINDOW = 32;
/** Largest sequence number (then the client opens a new session). */
export const MAX_SESSION_SEQUENCE = Number.MAX_SAFE_INTEGER;

const SALT_LABEL = concatBytes(utf8('cloister/session/v2'), Uint8Array.of(0));
const KEYS_LABEL = utf8('cloister/session/v2 keys');
const RECEIPT_SALT_LABEL = utf8('cloister/session/v2 receipt salt');
const EMPTY = new Uint8Array(0);
const ZERO_DH = new Uint8Array(32);
const X25519_LEN = 32;
/** Largest session open message or answer (plaintext). */
export const OPEN_MAX_BYTES = 256;

function bad(field: string, why: string): CloisterError {
  return new CloisterError('MALFORMED', `session ${field}: ${why}`, { detail: { field } });
}

// --- Open messages (strict) -------------------------------------------------------------------

export interface SessionOpenRequest {
  readonly v: 2;
  /** The client's ephemeral X25519 public key. */
  readonly share: Uint8Array;
}

export interface SessionOpenReply {
  readonly v: 2;
  readonly id: Uint8Array;
  /** The server's ephemeral X25519 public key. */
  readonly share: Uint8Array;
  /** The session ends this many seconds after it opened (ServerLimits.sessionMaxAgeMs). */
  readonly maxAgeS: number;
  /** The session ends once this many bytes (requests and responses) went through it. */
  readonly maxBytes: number;
  /** The server forgets a session unused for this many seconds. */
  readonly idleS: number;
}

function strictMap(bytes: Uint8Array, what: string, keys: readonly string[]): Map<CborKey, CborValue> {
  if (bytes.byteLength > OPEN_MAX_BYTES) throw new CloisterError('LIMIT_EXCEEDED', `${what} longer than ${OPEN_MAX_BYTES} bytes`, { detail: { limit: 'OPEN_MAX_BYTES' } });
  const root = decodeCbor(bytes, { maxDepth: 2, maxItems: 16, maxBytes: OPEN_MAX_BYTES });
  if (!(root instanceof Map)) throw bad(what, 'must be a map');
  const v = root.get('v');
  if (typeof v === 'number' && v !== SESSION_PROTOCOL_VERSION) {
    throw new CloisterError('VERSION_UNSUPPORTED', `${what} version ${v} is not supported (this side speaks ${SESSION_PROTOCOL_VERSION})`, { detail: { field: 'v' } });
  }
  for (const k of root.keys()) if (typeof k !== 'string' || !keys.includes(k)) throw bad(what, `unknown key ${String(k)}`);
  for (const k of keys) if (!root.has(k)) throw bad(what, `missing key ${k}`);
  if (v !== SESSION_PROTOCOL_VERSION) throw bad('v', 'must be 2');
  return root;
}

function bytesField(m: Map<CborKey, CborValue>, k: string, len: number): Uint8Array {
  const v = m.get(k);
  if (!(v instanceof Uint8Array) || v.byteLength !== len) throw bad(k, `must be ${len} bytes`);
  return v;
}

function uintField(m: Map<CborKey, CborValue>, k: string): number {
  const v = m.get(k);
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw bad(k, 'must be a positive integer');
  return v;
}

export function encodeSessionOpen(r: SessionOpenRequest): Uint8Array {
  assertBytes(r.share, 'share', X25519_LEN);
  return encodeCbor({ v: SESSION_PROTOCOL_VERSION, share: r.share });
}

export function decodeSessionOpen(bytes: Uint8Array): SessionOpenRequest {
  const m = strictMap(bytes, 'open', ['v', 'share']);
  return { v: 2, share: bytesField(m, 'share', X25519_LEN) };
}

export function encodeSessionOpenReply(r: SessionOpenReply): Uint8Array {
  assertBytes(r.id, 'id', SESSION_ID_LENGTH);
  assertBytes(r.share, 'share', X25519_LEN);
  for (const k of ['maxAgeS', 'maxBytes', 'idleS'] as const) {
    if (!Number.isSafeInteger(r[k]) || r[k] <= 0) throw new CloisterError('INVALID_ARGUMENT', `${k} must be a positive integer`);
  }
  return encodeCbor({ v: SESSION_PROTOCOL_VERSION, id: r.id, share: r.share, maxAgeS: r.maxAgeS, maxBytes: r.maxBytes, idleS: r.idleS });
}

export function decodeSessionOpenReply(bytes: Uint8Array): SessionOpenReply {
  const m = strictMap(bytes, 'open reply', ['v', 'id', 'share', 'maxAgeS', 'maxBytes', 'idleS']);
  return {
    v: 2,
    id: bytesField(m, 'id', SESSION_ID_LENGTH),
    share: bytesField(m, 'share', X25519_LEN),
    maxAgeS: uintField(m, 'maxAgeS'),
    maxBytes: uintField(m, 'maxBytes'),
    idleS: uintField(m, 'idleS'),
  };
}

// --- Key agreement -----------------------------------------------------------------------------

/** An ephemeral X25519 key pair; `agree` may be called once, then the private half is gone. */
export class EphemeralShare {
  readonly publicKey: Uint8Array;
  #privateKey: KeyObject | undefined;

  constructor() {
    const kp = generateX25519KeyPair();
    this.publicKey = kp.publicKey;
    this.#privateKey = createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: Buffer.from(kp.privateKey).toString('base64url'), x: Buffer.from(kp.publicKey).toString('base64url') }, format: 'jwk' });
    kp.privateKey.fill(0);
  }

  /** X25519 with `peer`; refuses the all-zero output (a small-order peer share). */
  agree(peer: Uint8Array): Uint8Array {
    assertBytes(peer, 'share', X25519_LEN);
    const sk = this.#privateKey;
    if (sk === undefined) throw new CloisterError('PROTOCOL_VIOLATION', 'ephemeral share already used');
    this.#privateKey = undefined;
    let out: Uint8Array;
    try {
      const pk = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(peer).toString('base64url') }, format: 'jwk' });
      out = new Uint8Array(diffieHellman({ privateKey: sk, publicKey: pk }));
    } catch (cause) {
      throw new CloisterError('DECRYPT_FAILED', 'X25519 with the peer share failed', { cause });
    }
    if (timingSafeEqualBytes(out, ZERO_DH)) throw new CloisterError('DECRYPT_FAILED', 'the peer share is a small-order point');
    return out;
  }
}

/** The secret of one session and the AEAD it uses; derives per-request keys. */
export class SessionKeys {
  readonly id: Uint8Array;
  readonly suite: HpkeSuite;
  readonly #p: SuiteParams;
  readonly #prk: Uint8Array;
  #receiptSalt: Uint8Array | undefined;

  constructor(suite: HpkeSuite, id: Uint8Array, clientShare: Uint8Array, serverShare: Uint8Array, dh: Uint8Array) {
    assertBytes(id, 'id', SESSION_ID_LENGTH);
    this.#p = suiteParams(suite);
    this.suite = this.#p.suite;
    this.id = copyBytes(id);
    this.#prk = hkdfExtract(concatBytes(SALT_LABEL, id, clientShare, serverShare), dh);
    dh.fill(0);
  }

  /**
   * The session's receipt salt (receipts v2, PROTOCOL.md section 12): HKDF-Expand(prk,
   * "cloister/session/v2 receipt salt" || id, 32). Independent of every request key; the
   * client may hand it to an auditor (it links the session's receipts, it opens nothing).
   */
  get receiptSalt(): Uint8Array {
    this.#receiptSalt ??= hkdfExpand(this.#prk, concatBytes(RECEIPT_SALT_LABEL, this.id), SESSION_SALT_LENGTH);
    return this.#receiptSalt;
  }

  /** Request and response keys of sequence number `seq`. */
  keysFor(seq: number): { readonly request: ChunkKeys; readonly response: ChunkKeys } {
    if (!Number.isSafeInteger(seq) || seq < 1 || seq > MAX_SESSION_SEQUENCE) throw new CloisterError('INVALID_ARGUMENT', 'sequence number out of range');
    const { nk, nn } = this.#p;
    const okm = hkdfExpand(this.#prk, concatBytes(KEYS_LABEL, this.id, i2osp(seq, 8)), 2 * (nk + nn));
    return {
      request: { p: this.#p, key: okm.subarray(0, nk), nonce: okm.subarray(nk, nk + nn) },
      response: { p: this.#p, key: okm.subarray(nk + nn, 2 * nk + nn), nonce: okm.subarray(2 * nk + nn) },
    };
  }
}


/** Seals one direction's chunks: `start()` is empty (the keys already depend on the request). */
export class SessionChunkSealer implements ChunkSealer {
  readonly #chunks: KeyedChunkSealer;
  constructor(k: ChunkKeys) {
    this.#chunks = new KeyedChunkSealer(k);
  }

  start(): Uint8Array {
    return EMPTY;
  }

  sealChunk(plaintext: Uint8Array): Uint8Array {
    return this.#chunks.seal(plaintext, false);
  }

  sealFinal(plaintext: Uint8Array): Uint8Array {
    return this.#chunks.seal(plaintext, true);
  }
}

/** Opens one direction's chunks (a byte stream in any split; `prefix` bytes skipped first). */
export class SessionChunkOpener extends ChunkReader implements ChunkOpener {
  readonly #chunks: KeyedChunkOpen;
  #total = 0;
  readonly #totalLimit: number | undefined;

  constructor(k: ChunkKeys, limits: ChunkedLimits, private readonly prefix = 0, totalLimit?: number) {
    super(limits);
    this.#chunks = new KeyedChunkOpen(k);
    this.#totalLimit = totalLimit;
  }

  protected prefixLength(): number {
    return this.prefix;
  }

  protected onPrefix(): void {}

  protected open = (ct: Uint8Array, final: boolean): Uint8Array => this.#chunks.open(ct, final);

  protected onChunk(plaintextLength: number): void {
    if (this.#totalLimit === undefined) return;
    this.#total += plaintextLength;
    if (this.#total > this.#totalLimit) {
      throw new CloisterError('LIMIT_EXCEEDED', 'request plaintext exceeds maxMessageBytes', { detail: { limit: 'maxMessageBytes', value: this.#totalLimit } });
    }
  }
}

/** A response opener for the client (chunks up to MAX_RESPONSE_CHUNK_LENGTH, any number). */
export function sessionResponseOpener(k: ChunkKeys): SessionChunkOpener {
  return new SessionChunkOpener(k, { ...DEFAULT_CHUNKED_LIMITS, maxChunkLength: MAX_RESPONSE_CHUNK_LENGTH, maxChunks: MAX_SEQUENCE });
}

// --- Request header and the replay window ----------------------------------------------------

export function encodeSessionRequestHeader(id: Uint8Array, seq: number): Uint8Array {
  assertBytes(id, 'id', SESSION_ID_LENGTH);
  if (!Number.isSafeInteger(seq) || seq < 1 || seq > MAX_SESSION_SEQUENCE) throw new CloisterError('INVALID_ARGUMENT', 'sequence number out of range');
  return concatBytes(id, i2osp(seq, 8));
}

/** The session id and sequence number of a session request body (MALFORMED when short or out of range). */
export function parseSessionRequestHeader(body: Uint8Array): { readonly id: Uint8Array; readonly seq: number } {
  if (body.byteLength < SESSION_REQUEST_HEADER_LENGTH) throw bad('request', `shorter than its ${SESSION_REQUEST_HEADER_LENGTH}-byte header`);
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const hi = view.getUint32(SESSION_ID_LENGTH);
  const lo = view.getUint32(SESSION_ID_LENGTH + 4);
  const seq = hi * 2 ** 32 + lo;
  if (hi >= 2 ** 21 || seq < 1) throw bad('seq', 'out of range');
  return { id: body.subarray(0, SESSION_ID_LENGTH), seq };
}

/**
 * Which sequence numbers a session has accepted: the highest, and a bitmap of the
 * SESSION_REPLAY_WINDOW below it (bit i: highest - 1 - i was accepted). O(1) memory.
 */
export class SequenceWindow {
  #highest = 0;
  #bits = 0;

  /** Whether `seq` may be accepted (not seen, not too old); records nothing. */
  fresh(seq: number): boolean {
    if (seq > this.#highest) return true;
    const back = this.#highest - seq;
    if (back === 0 || back > SESSION_REPLAY_WINDOW) return false;
    return (this.#bits & (1 << (back - 1))) === 0;
  }

  /** Records `seq` as accepted (call after `fresh(seq)` and the request authenticated). */
  accept(seq: number): void {
    if (!this.fresh(seq)) throw new CloisterError('REPLAY', 'sequence number already used or too old');
    if (seq > this.#highest) {
      const shift = seq - this.#highest;
      // The old highest becomes bit shift - 1; bits shifted past the window fall off.
      this.#bits = shift > SESSION_REPLAY_WINDOW ? 0 : shift === SESSION_REPLAY_WINDOW ? (this.#highest > 0 ? 1 << 31 : 0) >>> 0 : ((this.#bits << shift) | (this.#highest > 0 ? 1 << (shift - 1) : 0)) >>> 0;
      this.#highest = seq;
      return;
    }
    this.#bits = (this.#bits | (1 << (this.#highest - seq - 1))) >>> 0;
  }

  get highest(): number {
    return this.#highest;
  }
}

/** A session id as a map key (the id is not secret: it travels in clear in every request). */
export function sessionKeyOf(id: Uint8Array): string {
  return Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('base64');
}

// --- The two ends: open, then seal (client) / open (server) requests ----------------------------

/** Client: a session open in flight. Send `bytes`; feed the response stream to `push`/`finish`. */
export class SessionOpening {
  readonly bytes: Uint8Array;
  readonly #share = new EphemeralShare();
  readonly #opener: ChunkedResponseOpener;
  readonly #suite: HpkeSuite;

  constructor(target: SealTarget) {
    const sealed = sealChunkedRequest(target, encodeSessionOpen({ v: 2, share: this.#share.publicKey }));
    this.bytes = sealed.bytes;
    this.#opener = sealed.response;
    this.#suite = target.suite;
  }

  /** Bytes of the sealed answer, in any split. The answer is a single final chunk. */
  push(bytes: Uint8Array): void {
    if (this.#opener.push(bytes).length > 0) throw new CloisterError('PROTOCOL_VIOLATION', 'a session open answer has one chunk');
  }

  /** End of the answer: the open session (STREAM_TRUNCATED, MALFORMED, DECRYPT_FAILED otherwise). */
  finish(now: number): ClientSession {
    const [chunk] = this.#opener.finish();
    if (chunk === undefined) throw new CloisterError('STREAM_TRUNCATED');
    const reply = decodeSessionOpenReply(chunk.plaintext);
    const dh = this.#share.agree(reply.share);
    return new ClientSession(new SessionKeys(this.#suite, reply.id, this.#share.publicKey, reply.share, dh), reply, now);
  }
}

/** Client: an open session; seals requests with increasing sequence numbers. */
export class ClientSession {
  readonly #keys: SessionKeys;
  readonly reply: SessionOpenReply;
  /** Local time (ms) the session opened (its age bound runs from here). */
  readonly openedAt: number;
  #seq = 0;
  /** Bytes sent and received in this session (sealed requests and responses), as the server counts them. */
  bytes = 0;

  constructor(keys: SessionKeys, reply: SessionOpenReply, openedAt: number) {
    this.#keys = keys;
    this.reply = reply;
    this.openedAt = openedAt;
  }

  get id(): Uint8Array {
    return this.#keys.id;
  }

  /** Sequence numbers used so far. */
  get sequence(): number {
    return this.#seq;
  }

  /**
   * Whether a request of about `bytes` may still go out in this session at `now`: the
   * server's age and byte bounds (with `marginMs` of the age left, so the request does not
   * cross the end on its way) and the sequence space.
   */
  usable(now: number, bytes: number, marginMs: number): boolean {
    return now + marginMs < this.openedAt + this.reply.maxAgeS * 1000 && this.bytes + bytes < this.reply.maxBytes && this.#seq < MAX_SESSION_SEQUENCE;
  }

  /** Seals `request` under the next sequence number; the reader opens its response. */
  seal(request: SealedRequest, options: SealRequestOptions): SealedExchangeRequest & { readonly seq: number } {
    const seq = ++this.#seq;
    const keys = this.#keys.keysFor(seq);
    const plaintext = encodeSealedRequest(request, { pad: options.pad });
    const header = encodeSessionRequestHeader(this.#keys.id, seq);
    const sealer = new SessionChunkSealer(keys.request);
    const parts: Uint8Array[] = [header];
    let off = 0;
    while (plaintext.byteLength - off > DEFAULT_REQUEST_CHUNK_SIZE) {
      parts.push(sealer.sealChunk(plaintext.subarray(off, off + DEFAULT_REQUEST_CHUNK_SIZE)));
      off += DEFAULT_REQUEST_CHUNK_SIZE;
    }
    parts.push(sealer.sealFinal(plaintext.subarray(off)));
    // Receipts v2: the leaf names this session by a commitment only its two ends can open.
    const v2 = options.receiptV2;
    const salt = v2 === undefined ? undefined : this.#keys.receiptSalt;
    const readerOptions = v2 === undefined || salt === undefined ? options : { ...options, receiptV2: { ...v2, session: sessionCommitment(salt, seq), sessionLink: { salt: salt.slice(), seq } } };
    const reader = new ResponseReader(sessionResponseOpener(keys.response), plaintext, readerOptions);
    plaintext.fill(0);
    const bytes = concatBytes(...parts);
    this.bytes += bytes.byteLength;
    return { bytes, reader, seq };
  }
}

/** Server: the keys and replay state of one session (the server's table keeps the rest). */
export interface SessionState {
  readonly keys: SessionKeys;
  readonly window: SequenceWindow;
}

/**
 * Server: answers a session open (`plaintext`: the opened one-shot request). Returns the
 * plaintext of the answer's final chunk and the session's keys.
 */
export function acceptSessionOpen(
  suite: HpkeSuite,
  plaintext: Uint8Array,
  bounds: { readonly maxAgeS: number; readonly maxBytes: number; readonly idleS: number },
  id: Uint8Array = randomBytesPooled(SESSION_ID_LENGTH),
): { readonly reply: Uint8Array; readonly state: SessionState } {
  const open = decodeSessionOpen(plaintext);
  const share = new EphemeralShare();
  const dh = share.agree(open.share);
  const keys = new SessionKeys(suite, id, open.share, share.publicKey, dh);
  return { reply: encodeSessionOpenReply({ v: 2, id, share: share.publicKey, ...bounds }), state: { keys, window: new SequenceWindow() } };
}

/**
 * Server: opens a session request (the header already looked up as `state`). REPLAY for a
 * sequence number used before or too old; the crypto failure codes for a forged or damaged
 * body; the sequence number is recorded only once the whole request authenticated.
 */
export function openSessionRequest<K extends RequestKey>(state: SessionState, key: K, body: Uint8Array, options: { readonly maxMessageBytes: number }): OpenedRequest<K> & { readonly seq: number } {
  const { seq } = parseSessionRequestHeader(body);
  if (!state.window.fresh(seq)) throw new CloisterError('REPLAY', 'session sequence number already used or too old', { detail: { limit: 'SESSION_REPLAY_WINDOW' } });
  const keys = state.keys.keysFor(seq);
  const opener = new SessionChunkOpener(keys.request, DEFAULT_CHUNKED_LIMITS, SESSION_REQUEST_HEADER_LENGTH, options.maxMessageBytes);
  const chunks = [...opener.push(body), ...opener.finish()];
  state.window.accept(seq);
  const plaintext = chunks.length === 1 && chunks[0] !== undefined ? chunks[0].plaintext : concatBytes(...chunks.map((c) => c.plaintext));
  return {
    seq,
    plaintext,
    key,
    writer: new ResponseWriter(new SessionChunkSealer(keys.response), plaintext, { sign: (message) => key.signReceipt(message) }),
    decode: (limits) => decodeSealedRequest(plaintext, limits),
  };
}
