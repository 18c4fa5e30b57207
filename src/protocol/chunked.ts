/**
 * Chunked Oblivious HTTP (draft-ietf-ohai-chunked-ohttp-08).
 *
 * Request:  hdr(7) || enc(Nenc) || *(varint(len) || ct) || varint(0) || final_ct
 * Response: response_nonce(max(Nn, Nk)) || *(varint(len) || ct) || varint(0) || final_ct
 *
 * Non-final chunks are sealed with an empty AAD, the final chunk with AAD "final", so a
 * stream cut by the host is never mistaken for a complete one (section 6). Request chunks
 * use the HPKE context's sequence numbers; response chunks use
 * nonce = aead_nonce XOR I2OSP(counter, Nn) with keys from the RFC 9458 section 4.4
 * construction under the label "message/bhttp chunked response". The final chunk runs to
 * the end of the stream.
 *
 * Readers take the stream in any split: `push(bytes)`, then `finish()` at end of stream.
 */
import { CloisterError } from '../errors.js';
import { aeadOpen, aeadSeal } from '../crypto/aead.js';
import { assertBytes, concatBytes, copyBytes, utf8 } from '../core/bytes.js';
import { MAX_SEQUENCE, xorNonce } from '../crypto/hpke/context.js';
import { randomBytesPooled } from '../crypto/random.js';
import type { HpkeRecipientContext, HpkeSenderContext } from '../crypto/hpke/context.js';
import { setupBaseRecipient, setupBaseSender } from '../crypto/hpke/setup.js';
import type { SetupSenderOptions } from '../crypto/hpke/setup.js';
import { suiteParams } from '../crypto/hpke/suite.js';
import type { HpkeSuite, SuiteParams } from '../crypto/hpke/suite.js';
import { deriveResponseKeys, encodeRequestHeader, parseRequestHeader, REQUEST_HEADER_LENGTH, requestInfo } from './ohttp.js';
import type { LookupKey, SealTarget } from './ohttp.js';
import { readVarint, varintLength, varintSizeFromFirstByte, writeVarint } from '../core/varint.js';

/** Media type of a chunked OHTTP response (draft-ietf-ohai-chunked-ohttp section 3). */
export const CHUNKED_RESPONSE_TYPE = 'message/ohttp-chunked-res';
export const CHUNKED_REQUEST_LABEL = 'message/bhttp chunked request';
export const CHUNKED_RESPONSE_LABEL = 'message/bhttp chunked response';
const FINAL_AAD = utf8('final');
const EMPTY = new Uint8Array(0);
const AEAD_TAG = 16;

export interface ChunkedLimits {
  /** Largest chunk ciphertext (tag included) accepted, final chunk included. Bounds buffering. */
  readonly maxChunkLength: number;
  /** Most plaintext bytes across all chunks of one request (`openChunkedRequest`, request opener). */
  readonly maxMessageBytes: number;
  /** Most chunks in one request (defends against floods of tiny chunks). */
  readonly maxChunks: number;
}

export const DEFAULT_CHUNKED_LIMITS: ChunkedLimits = Object.freeze({
  maxChunkLength: 1 << 20,
  maxMessageBytes: 8 << 20,
  maxChunks: 4096,
});

/**
 * Largest response chunk (ciphertext, tag included) a server seals and a client opens: one
 * limit for both sides. The server refuses to seal a bigger result (LIMIT_EXCEEDED, sealed),
 * so no answer it sends is one the client refuses.
 */
export const MAX_RESPONSE_CHUNK_LENGTH = 4 * 1024 * 1024;

/** Plaintext size of the chunks `sealChunkedRequest` cuts a large request into. */
export const DEFAULT_REQUEST_CHUNK_SIZE = 64 * 1024;

export interface OpenedChunk {
  readonly plaintext: Uint8Array;
  readonly final: boolean;
}

function resolveChunkedLimits(l: Partial<ChunkedLimits> | undefined): ChunkedLimits {
  // Fast path (per request on the server): the frozen defaults, or limits already resolved.
  if (l === undefined || l === DEFAULT_CHUNKED_LIMITS || resolved.has(l)) return l === undefined ? DEFAULT_CHUNKED_LIMITS : (l as ChunkedLimits);
  const out = { ...DEFAULT_CHUNKED_LIMITS, ...l };
  for (const [k, v] of Object.entries(out)) {
    if (!Number.isSafeInteger(v) || v <= 0) throw new CloisterError('CONFIG_INVALID', `limit ${k} must be a positive integer`);
  }
  if (out.maxChunkLength < AEAD_TAG) throw new CloisterError('CONFIG_INVALID', 'maxChunkLength below the AEAD tag length');
  const frozen = Object.freeze(out);
  resolved.add(frozen);
  return frozen;
}

/** Limits objects that `resolveChunkedLimits` produced (validated and frozen). */
const resolved = new WeakSet<object>();

/**
 * The most bytes a valid sealed request can occupy under `limits`: a server may refuse a
 * body (Content-Length or bytes received so far) beyond this before doing any crypto.
 */
export function maxSealedRequestLength(limits?: Partial<ChunkedLimits>): number {
  const l = resolveChunkedLimits(limits);
  return REQUEST_HEADER_LENGTH + 32 + l.maxMessageBytes + l.maxChunks * (AEAD_TAG + varintLength(l.maxChunkLength));
}

/** One framed chunk: varint(length) || ct, or varint(0) || ct for the final chunk. */
export function frameChunk(ct: Uint8Array, final: boolean): Uint8Array {
  const len = final ? 0 : ct.byteLength;
  const out = new Uint8Array(varintLength(len) + ct.byteLength);
  const n = writeVarint(out, 0, len);
  out.set(ct, n);
  return out;
}

/** A FIFO of owned byte pieces, so a partial chunk never needs repeated concatenation. */
class ByteQueue {
  #pieces: Uint8Array[] = [];
  #length = 0;
  get length(): number {
    return this.#length;
  }
  push(b: Uint8Array): void {
    if (b.byteLength === 0) return;
    this.#pieces.push(copyBytes(b));
    this.#length += b.byteLength;
  }
  /** First `n` bytes as one array, without consuming. */
  peek(n: number): Uint8Array {
    const first = this.#pieces[0];
    if (first !== undefined && first.byteLength >= n) return first.subarray(0, n);
    const out = new Uint8Array(n);
    let off = 0;
    for (const p of this.#pieces) {
      if (off >= n) break;
      const take = Math.min(p.byteLength, n - off);
      out.set(p.subarray(0, take), off);
      off += take;
    }
    return out;
  }
  take(n: number): Uint8Array {
    const out = this.peek(n);
    let left = n;
    while (left > 0) {
      const p = this.#pieces[0];
      if (p === undefined) break;
      if (p.byteLength <= left) {
        this.#pieces.shift();
        left -= p.byteLength;
      } else {
        this.#pieces[0] = p.subarray(left);
        left = 0;
      }
    }
    this.#length -= n;
    return out;
  }
  takeAll(): Uint8Array {
    return this.take(this.#length);
  }
}

type OpenFn = (ct: Uint8Array, final: boolean) => Uint8Array;
type State = 'prefix' | 'chunks' | 'final' | 'done' | 'failed';

/**
 * The shared chunk reader: a prefix (request header + enc, or response nonce), then chunks.
 * Any error is terminal: the reader fails closed and every later call throws.
 */
export abstract class ChunkReader {
  protected readonly limits: ChunkedLimits;
  #queue = new ByteQueue();
  #state: State = 'prefix';
  #chunks = 0;

  constructor(limits: ChunkedLimits) {
    this.limits = limits;
  }

  /** Bytes of prefix needed before chunks start, given what is buffered (may grow). */
  protected abstract prefixLength(buffered: Uint8Array): number;
  /** Consume the prefix; set up keys. */
  protected abstract onPrefix(prefix: Uint8Array): void;
  protected abstract open: OpenFn;
  /** Called once per opened chunk with its plaintext length (limits on totals). */
  protected abstract onChunk(plaintextLength: number): void;

  #guard<T>(fn: () => T): T {
    if (this.#state === 'failed') throw new CloisterError('PROTOCOL_VIOLATION', 'stream already failed');
    if (this.#state === 'done') throw new CloisterError('PROTOCOL_VIOLATION', 'data after the final chunk');
    try {
      return fn();
    } catch (err) {
      this.#state = 'failed';
      throw err;
    }
  }

  #countChunk(): void {
    this.#chunks += 1;
    if (this.#chunks > this.limits.maxChunks) {
      throw new CloisterError('LIMIT_EXCEEDED', 'too many chunks', { detail: { limit: 'maxChunks', value: this.limits.maxChunks } });
    }
  }

  #checkLength(len: number): void {
    if (len > this.limits.maxChunkLength) {
      throw new CloisterError('LIMIT_EXCEEDED', 'chunk longer than maxChunkLength', {
        detail: { limit: 'maxChunkLength', value: this.limits.maxChunkLength },
      });
    }
  }

  #emit(ct: Uint8Array, final: boolean): OpenedChunk {
    this.#countChunk();
    const plaintext = this.open(ct, final);
    this.onChunk(plaintext.byteLength);
    return { plaintext, final };
  }

  /** Feed bytes of a stream in any split. Returns the non-final chunks completed so far. */
  push(bytes: Uint8Array): OpenedChunk[] {
    assertBytes(bytes, 'bytes');
    return this.#guard(() => {
      const q = this.#queue;
      q.push(bytes);
      const out: OpenedChunk[] = [];
      if (this.#state === 'prefix') {
        const need = this.prefixLength(q.peek(Math.min(q.length, REQUEST_HEADER_LENGTH)));
        if (q.length < need) return out;
        this.onPrefix(q.take(need));
        this.#state = 'chunks';
      }
      while (this.#state === 'chunks' && q.length > 0) {
        const size = varintSizeFromFirstByte(q.peek(1)[0] ?? 0);
        if (q.length < size) break;
        const vi = readVarint(q.peek(size), 0);
        if (vi === undefined) break;
        if (vi.value === 0) {
          q.take(size);
          this.#state = 'final';
          break;
        }
        this.#checkLength(vi.value);
        if (q.length < size + vi.value) break;
        q.take(size);
        out.push(this.#emit(q.take(vi.value), false));
      }
      if (this.#state === 'final') this.#checkLength(q.length);
      return out;
    });
  }

  /**
   * End of stream. Returns the final chunk. Throws STREAM_TRUNCATED when the stream ended
   * before its final chunk (cut by the host), and PROTOCOL_VIOLATION when called again.
   */
  finish(): OpenedChunk[] {
    return this.#guard(() => {
      if (this.#state !== 'final') {
        throw new CloisterError('STREAM_TRUNCATED', undefined, { detail: { buffered: this.#queue.length } });
      }
      const chunk = this.#emit(this.#queue.takeAll(), true);
      this.#state = 'done';
      return [chunk];
    });
  }

  /** True once the authenticated final chunk was opened. */
  get complete(): boolean {
    return this.#state === 'done';
  }
}

// --- Chunks under one key: the shared sealer and opener ----------------------------------------

/** The AEAD key and base nonce of one direction of one stream. */
export interface ChunkKeys {
  readonly p: SuiteParams;
  readonly key: Uint8Array;
  readonly nonce: Uint8Array;
}

/**
 * Seals the chunks of one stream under one key: nonce = base nonce XOR counter, the final
 * chunk with FINAL_AAD, nothing after it, no empty non-final chunk, at most MAX_SEQUENCE.
 * Used by the one-shot response (ChunkedResponseSealer) and by sessions (session.ts).
 */
export class KeyedChunkSealer {
  #counter = 0;
  #done = false;
  constructor(private readonly k: ChunkKeys) {}

  seal(pt: Uint8Array, final: boolean): Uint8Array {
    if (this.#done) throw new CloisterError('PROTOCOL_VIOLATION', 'stream already finished');
    if (!final && pt.byteLength === 0) throw new CloisterError('INVALID_ARGUMENT', 'non-final chunks must not be empty');
    if (this.#counter >= MAX_SEQUENCE) throw new CloisterError('HPKE_MESSAGE_LIMIT');
    const ct = aeadSeal(this.k.p.cipher, this.k.key, xorNonce(this.k.nonce, this.#counter), final ? FINAL_AAD : EMPTY, pt);
    this.#counter++;
    if (final) this.#done = true;
    return frameChunk(ct, final);
  }

  get done(): boolean {
    return this.#done;
  }
}

/** Opens the chunks of one stream under one key, in order (the counterpart of KeyedChunkSealer). */
export class KeyedChunkOpen {
  #counter = 0;
  constructor(private readonly k: ChunkKeys) {}

  open(ct: Uint8Array, final: boolean): Uint8Array {
    if (this.#counter >= MAX_SEQUENCE) throw new CloisterError('HPKE_MESSAGE_LIMIT');
    const pt = aeadOpen(this.k.p.cipher, this.k.key, xorNonce(this.k.nonce, this.#counter), final ? FINAL_AAD : EMPTY, ct);
    this.#counter++;
    return pt;
  }
}

// --- Response (server seals, client opens) -------------------------------------------------

/** Server side: seals the response stream to one request. */
class ChunkedResponseSealer {
  readonly #p: SuiteParams;
  readonly #context: HpkeRecipientContext;
  readonly #enc: Uint8Array;
  readonly #fixedNonce: Uint8Array | undefined;
  #sealer: KeyedChunkSealer | undefined;

  /** Internal: returned by `openChunkedRequest` / `ChunkedRequestOpener.response()`. */
  constructor(p: SuiteParams, context: HpkeRecipientContext, enc: Uint8Array, options?: { readonly responseNonce?: Uint8Array }) {
    this.#p = p;
    this.#context = context;
    this.#enc = enc;
    this.#fixedNonce = options?.responseNonce === undefined ? undefined : copyBytes(options.responseNonce);
  }

  /** The response nonce: the first bytes of the response stream (or its first message). */
  start(): Uint8Array {
    if (this.#sealer !== undefined) throw new CloisterError('PROTOCOL_VIOLATION', 'response already started');
    const nr = Math.max(this.#p.nn, this.#p.nk);
    const responseNonce = this.#fixedNonce ?? randomBytesPooled(nr);
    assertBytes(responseNonce, 'responseNonce', nr);
    const { key, nonce } = deriveResponseKeys(this.#p, this.#context, CHUNKED_RESPONSE_LABEL, this.#enc, responseNonce);
    this.#sealer = new KeyedChunkSealer({ p: this.#p, key, nonce });
    return copyBytes(responseNonce);
  }

  #seal(pt: Uint8Array, final: boolean): Uint8Array {
    assertBytes(pt, 'plaintext');
    if (this.#sealer === undefined) throw new CloisterError('PROTOCOL_VIOLATION', 'call start() first');
    return this.#sealer.seal(pt, final);
  }

  /** A framed non-final chunk, ready to append to the stream (or send as one message). */
  sealChunk(plaintext: Uint8Array): Uint8Array {
    return this.#seal(plaintext, false);
  }

  /** The framed final chunk; nothing can be sealed after it. */
  sealFinal(plaintext: Uint8Array): Uint8Array {
    return this.#seal(plaintext, true);
  }
}

/** Client side: opens the response stream to a request it sealed. */
export class ChunkedResponseOpener extends ChunkReader {
  readonly #p: SuiteParams;
  readonly #context: HpkeSenderContext;
  readonly #enc: Uint8Array;
  #chunks: KeyedChunkOpen | undefined;

  /** Internal: returned by `sealChunkedRequest` / `createChunkedRequestSealer`. */
  constructor(p: SuiteParams, context: HpkeSenderContext, enc: Uint8Array, limits?: Partial<ChunkedLimits>) {
    // A response is consumed chunk by chunk, so only the per-chunk bound matters; the
    // chunk count is bounded by the counter instead of maxChunks.
    super({ ...resolveChunkedLimits({ maxChunkLength: MAX_RESPONSE_CHUNK_LENGTH, ...limits }), maxChunks: MAX_SEQUENCE });
    this.#p = p;
    this.#context = context;
    this.#enc = enc;
  }

  protected prefixLength(): number {
    return Math.max(this.#p.nn, this.#p.nk);
  }

  // Chunks are handed out one by one; nothing accumulates, so there is no total to bound.
  protected onChunk(): void {}

  protected onPrefix(responseNonce: Uint8Array): void {
    const { key, nonce } = deriveResponseKeys(this.#p, this.#context, CHUNKED_RESPONSE_LABEL, this.#enc, responseNonce);
    this.#chunks = new KeyedChunkOpen({ p: this.#p, key, nonce });
  }

  protected open: OpenFn = (ct, final) => {
    if (this.#chunks === undefined) throw new CloisterError('INTERNAL');
    return this.#chunks.open(ct, final);
  };
}

// --- Request (client seals, server opens) --------------------------------------------------

interface ChunkedRequestSealerOptions extends SetupSenderOptions {
  /** Limits applied to the response opener. */
  readonly limits?: Partial<ChunkedLimits>;
}

/** Client side: seals one request, chunk by chunk. */
class ChunkedRequestSealer {
  /** hdr || enc: the first bytes of the request stream. */
  readonly header: Uint8Array;
  /** Opens the response to this request. */
  readonly response: ChunkedResponseOpener;
  readonly #context: HpkeSenderContext;
  #done = false;

  /** Internal: use `createChunkedRequestSealer`. */
  constructor(header: Uint8Array, context: HpkeSenderContext, response: ChunkedResponseOpener) {
    this.header = header;
    this.#context = context;
    this.response = response;
  }

  #seal(pt: Uint8Array, final: boolean): Uint8Array {
    assertBytes(pt, 'plaintext');
    if (this.#done) throw new CloisterError('PROTOCOL_VIOLATION', 'request already finished');
    if (!final && pt.byteLength === 0) throw new CloisterError('INVALID_ARGUMENT', 'non-final chunks must not be empty');
    const ct = this.#context.seal(pt, final ? FINAL_AAD : EMPTY);
    if (final) this.#done = true;
    return frameChunk(ct, final);
  }

  sealChunk(plaintext: Uint8Array): Uint8Array {
    return this.#seal(plaintext, false);
  }

  sealFinal(plaintext: Uint8Array): Uint8Array {
    return this.#seal(plaintext, true);
  }
}

export function createChunkedRequestSealer(target: SealTarget, options?: ChunkedRequestSealerOptions): ChunkedRequestSealer {
  const p = suiteParams(target.suite);
  const hdr = encodeRequestHeader(target.keyId, p.suite);
  const setupOptions: SetupSenderOptions = {
    ...(options?.ikmE === undefined ? {} : { ikmE: options.ikmE }),
    ...(options?.ephemeralPrivateKey === undefined ? {} : { ephemeralPrivateKey: options.ephemeralPrivateKey }),
  };
  const { enc, context } = setupBaseSender(p.suite, target.publicKey, requestInfo(CHUNKED_REQUEST_LABEL, hdr), setupOptions);
  return new ChunkedRequestSealer(concatBytes(hdr, enc), context, new ChunkedResponseOpener(p, context, enc, options?.limits));
}

interface SealedChunkedRequest {
  readonly bytes: Uint8Array;
  readonly response: ChunkedResponseOpener;
}

/**
 * Seal a whole request. Up to `chunkSize` bytes (64 KiB) it is one final chunk; larger
 * requests are cut into `chunkSize` chunks so each stays under the server's maxChunkLength.
 */
export function sealChunkedRequest(
  target: SealTarget,
  plaintext: Uint8Array,
  options?: ChunkedRequestSealerOptions & { readonly chunkSize?: number },
): SealedChunkedRequest {
  assertBytes(plaintext, 'plaintext');
  const chunkSize = options?.chunkSize ?? DEFAULT_REQUEST_CHUNK_SIZE;
  if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0) throw new CloisterError('INVALID_ARGUMENT', 'chunkSize must be positive');
  const s = createChunkedRequestSealer(target, options);
  const parts: Uint8Array[] = [s.header];
  let off = 0;
  while (plaintext.byteLength - off > chunkSize) {
    parts.push(s.sealChunk(plaintext.subarray(off, off + chunkSize)));
    off += chunkSize;
  }
  parts.push(s.sealFinal(plaintext.subarray(off)));
  return { bytes: concatBytes(...parts), response: s.response };
}

/** Server side: an incremental parser for a sealed request body. */
export class ChunkedRequestOpener extends ChunkReader {
  readonly #lookupKey: LookupKey;
  #keyId: number | undefined;
  #suite: HpkeSuite | undefined;
  #p: SuiteParams | undefined;
  #context: HpkeRecipientContext | undefined;
  #enc: Uint8Array | undefined;
  #total = 0;
  #responded = false;

  constructor(lookupKey: LookupKey, limits?: Partial<ChunkedLimits>) {
    super(resolveChunkedLimits(limits));
    this.#lookupKey = lookupKey;
  }

  protected prefixLength(buffered: Uint8Array): number {
    if (buffered.byteLength < REQUEST_HEADER_LENGTH) return REQUEST_HEADER_LENGTH;
    // Validates the suite ids as soon as the 7 header bytes are in.
    return REQUEST_HEADER_LENGTH + suiteParams(parseRequestHeader(buffered).suite).nenc;
  }

  protected onPrefix(prefix: Uint8Array): void {
    const { keyId, suite } = parseRequestHeader(prefix);
    const p = suiteParams(suite);
    // May throw UNKNOWN_KEY_ID / KEY_STALE / ...: propagates unchanged.
    const key = this.#lookupKey(keyId, suite);
    const hdr = prefix.subarray(0, REQUEST_HEADER_LENGTH);
    const enc = copyBytes(prefix.subarray(REQUEST_HEADER_LENGTH));
    this.#context = setupBaseRecipient(suite, enc, key, requestInfo(CHUNKED_REQUEST_LABEL, hdr));
    this.#keyId = keyId;
    this.#suite = suite;
    this.#p = p;
    this.#enc = enc;
  }

  protected open: OpenFn = (ct, final) => {
    if (this.#context === undefined) throw new CloisterError('INTERNAL');
    return this.#context.open(ct, final ? FINAL_AAD : EMPTY);
  };

  protected onChunk(plaintextLength: number): void {
    this.#total += plaintextLength;
    if (this.#total > this.limits.maxMessageBytes) {
      throw new CloisterError('LIMIT_EXCEEDED', 'request plaintext exceeds maxMessageBytes', {
        detail: { limit: 'maxMessageBytes', value: this.limits.maxMessageBytes },
      });
    }
  }

  /** The request's key id and suite, once its header was read. */
  get keyId(): number | undefined {
    return this.#keyId;
  }
  get suite(): HpkeSuite | undefined {
    return this.#suite;
  }

  /**
   * The response sealer. Only available once the whole request was authenticated (its
   * final chunk opened), so nothing is ever sent in answer to a truncated request.
   */
  response(options?: { readonly responseNonce?: Uint8Array }): ChunkedResponseSealer {
    if (!this.complete || this.#p === undefined || this.#context === undefined || this.#enc === undefined) {
      throw new CloisterError('PROTOCOL_VIOLATION', 'the request is not complete');
    }
    if (this.#responded) throw new CloisterError('PROTOCOL_VIOLATION', 'response already created');
    this.#responded = true;
    return new ChunkedResponseSealer(this.#p, this.#context, this.#enc, options);
  }
}

interface OpenedChunkedRequest {
  readonly plaintext: Uint8Array;
  readonly keyId: number;
  readonly suite: HpkeSuite;
  readonly response: ChunkedResponseSealer;
}

/** Server: open a whole sealed request body (bounded by `limits`). */
export function openChunkedRequest(lookupKey: LookupKey, bytes: Uint8Array, limits?: Partial<ChunkedLimits>): OpenedChunkedRequest {
  assertBytes(bytes, 'bytes');
  const l = resolveChunkedLimits(limits);
  if (bytes.byteLength > maxSealedRequestLength(l)) {
    throw new CloisterError('LIMIT_EXCEEDED', 'sealed request too large', { detail: { limit: 'maxSealedRequestLength' } });
  }
  if (bytes.byteLength < REQUEST_HEADER_LENGTH) throw new CloisterError('MALFORMED', 'request shorter than its header');
  const opener = new ChunkedRequestOpener(lookupKey, l);
  const chunks = [...opener.push(bytes), ...opener.finish()];
  const keyId = opener.keyId;
  const suite = opener.suite;
  if (keyId === undefined || suite === undefined) throw new CloisterError('INTERNAL');
  return {
    plaintext: chunks.length === 1 && chunks[0] !== undefined ? chunks[0].plaintext : concatBytes(...chunks.map((c) => c.plaintext)),
    keyId,
    suite,
    response: opener.response(),
  };
}
