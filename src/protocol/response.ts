/**
 * The sealed response stream as two small state machines (docs/PROTOCOL.md section 4):
 * `ResponseWriter` (server) turns results, an error and the end into sealed chunk bytes;
 * `ResponseReader` (client) turns bytes in any split back into results, checks the order of
 * the chunks and the receipt. Neither touches a transport: the server writes what the writer
 * returns, the client pushes what its transport delivers. Both work over any chunk sealer /
 * opener (the one-shot chunked OHTTP exchange, or a session's per-request keys).
 *
 * Stream: start (the response nonce) || non-final chunks (data | items | json)* [error] ||
 * final chunk {t:'end', receipt}. The receipt signs the request plaintext's digest and the
 * digest of every non-final chunk plaintext in order (messages.ts ReceiptHasher).
 */
import { CloisterError, isErrorCode } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { MAX_RESPONSE_CHUNK_LENGTH } from './chunked.js';
import type { OpenedChunk } from './chunked.js';
import { ReceiptHasher, decodeResponseChunk, encodeResponseChunk, encodeResultsChunk, padChunkPlaintext, verifyReceipt } from './messages.js';
import {
  SaltedResponseHasher,
  checkInclusion,
  checkLeaf,
  decodeEndReceipt,
  encodeEndReceipt,
  encodeReceiptLeaf,
  saltCommitment,
  saltedRequestHash,
} from './receipt-v2.js';
import type { EndReceipt, EnforcedPolicy, InclusionProof, ReceiptLog, SessionLink, TreeHeadVerifier } from './receipt-v2.js';
import type { ReplicaRef } from './replica.js';

/** What the server needs to write a receipts-v2 receipt (PROTOCOL.md section 12). */
export interface ReceiptV2WriterContext {
  /** The client's salt (the request's `salt`). */
  readonly salt: Uint8Array;
  /** The log of the key generation that opened the request. */
  readonly log: ReceiptLog;
  readonly model: { readonly name: string; readonly digest: Uint8Array };
  readonly policy: EnforcedPolicy;
  /** Server time the request was opened (Unix ms). */
  readonly receivedAt: number;
  /** Include the inclusion proof to a signed tree head (the `receipt-proof` capability). */
  readonly withProof: boolean;
  readonly now: () => number;
  readonly session?: Uint8Array;
  /** Called once the leaf is in the log (a session counts its leaves for its end-of-session head). */
  readonly onAppend?: () => void;
}

/** What the client needs to check a receipts-v2 receipt. */
export interface ReceiptV2ReaderContext {
  readonly salt: Uint8Array;
  readonly keyConfigDigest: Uint8Array;
  /** The model asked for and its digest in the verified key config. */
  readonly model: { readonly name: string; readonly digest: Uint8Array };
  /** Verifies tree heads of this key config (one signature per head). */
  readonly verifier: TreeHeadVerifier;
  /** Require the inclusion proof (the client declared `receipt-proof`). */
  readonly requireProof: boolean;
  /** A session request: the leaf must hold this commitment (sessionCommitment of `sessionLink`). */
  readonly session?: Uint8Array;
  /** A session request: its session salt and sequence number, kept in the record for auditors. */
  readonly sessionLink?: SessionLink;
}

/** A verified receipts-v2 receipt as the client keeps it (an audit record when it has its proof). */
export interface ReceiptV2Record {
  readonly leaf: Uint8Array;
  readonly index: number;
  readonly salt: Uint8Array;
  readonly proof?: InclusionProof;
  /** The request came in a session: what ties the leaf to it (give it to an auditor with the record). */
  readonly session?: SessionLink;
}

const AEAD_TAG = 16;
/** Longest server error message the reader hands on (a longer one is replaced by the code's text). */
export const MAX_ERROR_MESSAGE_CHARS = 2048;

/** Seals the chunks of one response (ChunkedResponseSealer, or a session's response sealer). */
export interface ChunkSealer {
  /** The first bytes of the stream (the response nonce). */
  start(): Uint8Array;
  sealChunk(plaintext: Uint8Array): Uint8Array;
  sealFinal(plaintext: Uint8Array): Uint8Array;
}

/** Opens the chunks of one response stream (ChunkedResponseOpener, or a session's response opener). */
export interface ChunkOpener {
  /** Bytes in any split; returns the chunks completed so far. */
  push(bytes: Uint8Array): OpenedChunk[];
  /** End of stream: the final chunk, or STREAM_TRUNCATED. */
  finish(): OpenedChunk[];
}

export interface ResponseWriterOptions {
  /** Signs the receipt message (the key generation that opened the request). */
  readonly sign: (message: Uint8Array) => Uint8Array;
}

/**
 * Server side. Every method returns the bytes to write, in order; the writer never writes.
 * `start()` first (it may be called again after a failure only if it was not called yet:
 * `started` tells), then `results()` / `data()` any number of times, at most one `error()`,
 * and `end()` last.
 */
export class ResponseWriter {
  readonly #sealer: ChunkSealer;
  readonly #receipt: ReceiptHasher;
  readonly #sign: (message: Uint8Array) => Uint8Array;
  #started = false;
  #ended = false;
  #pad = false;
  #chunks = 0;
  readonly #requestPlaintext: Uint8Array;
  #v2: { readonly ctx: ReceiptV2WriterContext; readonly hasher: SaltedResponseHasher; readonly requestHash: Uint8Array } | undefined;
  #errorCode: string | undefined;
  #replica: ReplicaRef | undefined;

  constructor(sealer: ChunkSealer, requestPlaintext: Uint8Array, options: ResponseWriterOptions) {
    this.#sealer = sealer;
    this.#receipt = new ReceiptHasher(requestPlaintext);
    this.#sign = options.sign;
    this.#requestPlaintext = requestPlaintext;
  }

  /**
   * Ends this response with a receipts-v2 receipt (`end2`) instead of a signature: call once
   * the request is routed, before any chunk. The leaf goes into the generation's log.
   */
  receiptV2(ctx: ReceiptV2WriterContext): void {
    if (this.#chunks > 0 || this.#ended || this.#v2 !== undefined) throw new CloisterError('PROTOCOL_VIOLATION', 'receipts v2 must be chosen before any chunk');
    this.#v2 = { ctx, hasher: new SaltedResponseHasher(ctx.salt), requestHash: saltedRequestHash(ctx.salt, this.#requestPlaintext) };
  }

  /**
   * A fleet replica's statement (or its digest) for the final `end` chunk (src/protocol/replica.ts):
   * the receipt is then checked under the receipt key that statement binds.
   */
  replica(ref: ReplicaRef): void {
    if (this.#ended) throw new CloisterError('PROTOCOL_VIOLATION', 'response already ended');
    this.#replica = ref;
  }

  /** Whether the response nonce was produced. */
  get started(): boolean {
    return this.#started;
  }

  /** Non-final chunks sealed so far. */
  get chunks(): number {
    return this.#chunks;
  }

  /**
   * Pads every later chunk with content (data, items, json, error) to its size bucket
   * (PROTOCOL.md section 4, "Padding"), for a client that declared `pad`. The final `end`
   * chunk carries only the 64-byte receipt, the same length for every answer: not padded.
   */
  padChunks(on: boolean): void {
    this.#pad = on;
  }

  start(): Uint8Array {
    if (this.#started) throw new CloisterError('PROTOCOL_VIOLATION', 'response already started');
    const bytes = this.#sealer.start();
    this.#started = true;
    return bytes;
  }

  /**
   * Results an engine produced together: one `json` chunk (JsonResults, for a client with
   * the `json` capability), one `data` chunk or one `items` chunk.
   */
  results(items: readonly unknown[], options: { readonly json: boolean }): Uint8Array {
    return this.data(encodeResultsChunk(items, options));
  }

  /** Seals one encoded non-final chunk plaintext (padded when asked). */
  data(unpadded: Uint8Array): Uint8Array {
    if (this.#ended) throw new CloisterError('PROTOCOL_VIOLATION', 'response already ended');
    const plaintext = this.#pad ? padChunkPlaintext(unpadded, MAX_RESPONSE_CHUNK_LENGTH - AEAD_TAG) : unpadded;
    if (plaintext.byteLength + AEAD_TAG > MAX_RESPONSE_CHUNK_LENGTH) {
      // The client opens no bigger chunk (one limit for both sides): refuse, sealed, by name.
      throw new CloisterError('LIMIT_EXCEEDED', `a result of ${plaintext.byteLength} bytes exceeds the response chunk limit (MAX_RESPONSE_CHUNK_LENGTH = ${MAX_RESPONSE_CHUNK_LENGTH} bytes)`, {
        detail: { limit: 'MAX_RESPONSE_CHUNK_LENGTH', max: MAX_RESPONSE_CHUNK_LENGTH, public: true },
      });
    }
    const sealed = this.#sealer.sealChunk(plaintext);
    this.#receipt.update(plaintext);
    this.#v2?.hasher.update(plaintext);
    this.#chunks++;
    return sealed;
  }

  /** The sealed error chunk (a wire code and a content-free message). */
  error(code: ErrorCode, message: string): Uint8Array {
    const bytes = this.data(encodeResponseChunk({ t: 'error', code, message }));
    this.#errorCode = code;
    return bytes;
  }

  /** The final chunk with the receipt; nothing can be written after it. */
  end(): Uint8Array {
    if (this.#ended) throw new CloisterError('PROTOCOL_VIOLATION', 'response already ended');
    const v2 = this.#v2;
    if (v2 !== undefined) {
      const { ctx } = v2;
      // Aborted after chunk k: the chunks before the error chunk carried results.
      const outcome = this.#errorCode === undefined ? { status: 'complete' as const, chunks: this.#chunks } : { status: 'aborted' as const, chunks: this.#chunks - 1, code: this.#errorCode };
      const leaf = encodeReceiptLeaf({
        version: 2,
        keyConfigDigest: ctx.log.keyConfigDigest,
        model: ctx.model,
        requestHash: v2.requestHash,
        responseHash: v2.hasher.digest(),
        saltCommitment: saltCommitment(ctx.salt),
        policy: ctx.policy,
        receivedAt: ctx.receivedAt,
        completedAt: Math.max(ctx.receivedAt, ctx.now()),
        outcome,
        ...(ctx.session === undefined ? {} : { session: ctx.session }),
      });
      let index: number;
      try {
        index = ctx.log.append(leaf);
        ctx.onAppend?.();
      } catch (err) {
        // A full log (maxLeaves) must not cost the client its answer: a version-1 receipt instead.
        if (!(err instanceof CloisterError && err.code === 'LIMIT_EXCEEDED')) throw err;
        this.#v2 = undefined;
        return this.end();
      }
      // The periodic head (at most one signature per treeHeadIntervalMs); a proof asked for in-band needs a head over this leaf.
      if (!ctx.withProof) ctx.log.headIfDue();
      const receipt: EndReceipt = ctx.withProof ? { leaf, index, proof: ctx.log.proofFor(index) } : { leaf, index };
      const bytes = this.#sealer.sealFinal(encodeResponseChunk({ t: 'end2', receipt: encodeEndReceipt(receipt) }));
      this.#ended = true;
      return bytes;
    }
    const signature = this.#sign(this.#receipt.message());
    const bytes = this.#sealer.sealFinal(encodeResponseChunk({ t: 'end', receipt: signature, ...(this.#replica === undefined ? {} : { replica: this.#replica }) }));
    this.#ended = true;
    return bytes;
  }
}

export interface ResponseReaderOptions {
  /** Checks the receipt signature over `message` (false: RECEIPT_INVALID). */
  readonly verify: (message: Uint8Array, signature: Uint8Array) => boolean;
  /**
   * Called once with the verified receipt, before the final results are handed out; with
   * `replica`, also with the replica reference the final chunk carried.
   */
  readonly onReceipt?: (message: Uint8Array, signature: Uint8Array, replica?: ReplicaRef) => void;
  /**
   * A fleet key config (`replicaReceipts`, src/protocol/replica.ts): the final chunk must name
   * the replica that answered, and the receipt is checked under the receipt key this returns
   * for it (it checks the statement's binding and throws RECEIPT_INVALID) instead of `verify`.
   * The statement's evidence is verified by the caller, after the reader completes.
   */
  readonly replica?: (ref: ReplicaRef) => Uint8Array;
  /** Parses a `json` chunk item (default JSON.parse; MALFORMED without the text on failure). */
  readonly parseJson?: (text: string) => unknown;
  /** The client asked for receipts v2: an `end2` final chunk is checked with this, and handed to `onReceiptV2`. */
  readonly receiptV2?: ReceiptV2ReaderContext;
  readonly onReceiptV2?: (record: ReceiptV2Record) => void;
}

/**
 * Client side. `push(bytes)` for every piece of the stream, `finish()` at its end; each
 * returns the results opened so far, in order. After `finish()`, `serverError` is the coded
 * error the server sealed into the stream, if any (its results before it were handed out).
 * Any failure is terminal.
 */
export class ResponseReader {
  readonly #opener: ChunkOpener;
  readonly #receipt: ReceiptHasher;
  readonly #options: ResponseReaderOptions;
  #serverError: CloisterError | undefined;
  #started = false;
  #complete = false;
  #failed = false;
  readonly #v2: { readonly hasher: SaltedResponseHasher; readonly requestHash: Uint8Array } | undefined;
  #chunks = 0;
  #report: unknown;

  constructor(opener: ChunkOpener, requestPlaintext: Uint8Array, options: ResponseReaderOptions) {
    this.#opener = opener;
    this.#receipt = new ReceiptHasher(requestPlaintext);
    this.#options = options;
    const v2 = options.receiptV2;
    this.#v2 = v2 === undefined ? undefined : { hasher: new SaltedResponseHasher(v2.salt), requestHash: saltedRequestHash(v2.salt, requestPlaintext) };
  }

  /** Whether any result was opened (the caller may have seen it: a request is not resent then). */
  get started(): boolean {
    return this.#started;
  }

  /** Whether the authenticated final chunk was opened and its receipt verified. */
  get complete(): boolean {
    return this.#complete;
  }

  /** The server's `report` chunk (PROTOCOL.md section 4), once the response is complete and its receipt verified. */
  get report(): unknown {
    return this.#complete ? this.#report : undefined;
  }

  /** The error the server sealed into the stream, once read. */
  get serverError(): CloisterError | undefined {
    return this.#serverError;
  }

  push(bytes: Uint8Array): unknown[] {
    if (this.#complete) throw new CloisterError('PROTOCOL_VIOLATION', 'data after the final chunk');
    return this.#guard(() => this.#read(this.#opener.push(bytes)));
  }

  /** End of stream. STREAM_TRUNCATED when the final chunk is missing. */
  finish(): unknown[] {
    if (this.#complete) return [];
    return this.#guard(() => this.#read(this.#opener.finish()));
  }

  #guard(fn: () => unknown[]): unknown[] {
    if (this.#failed) throw new CloisterError('PROTOCOL_VIOLATION', 'response already failed');
    try {
      return fn();
    } catch (err) {
      this.#failed = true;
      throw err;
    }
  }

  #read(chunks: readonly OpenedChunk[]): unknown[] {
    const results: unknown[] = [];
    for (const chunk of chunks) {
      const msg = decodeResponseChunk(chunk.plaintext);
      if (!chunk.final) {
        this.#receipt.update(chunk.plaintext);
        this.#v2?.hasher.update(chunk.plaintext);
        this.#chunks++;
        if (msg.t === 'error') {
          // Sealed by the attested server: the generic text of the code, or a content-free one
          // naming a limit and its value, or what the server offers.
          const text = msg.message.length > 0 && msg.message.length <= MAX_ERROR_MESSAGE_CHARS ? msg.message : undefined;
          this.#serverError = new CloisterError(isErrorCode(msg.code) ? msg.code : 'INTERNAL', text, { detail: { origin: 'server' } });
          continue;
        }
        if (msg.t === 'end' || msg.t === 'end2') throw new CloisterError('PROTOCOL_VIOLATION', 'end message in a non-final chunk');
        if (this.#serverError !== undefined) throw new CloisterError('PROTOCOL_VIOLATION', 'data after an error chunk');
        if (msg.t === 'report') {
          // What the server checked about this answer (output guard verdict, retrieval facts):
          // covered by the receipt, so the caller gets it only once the response is complete.
          if (this.#report !== undefined) throw new CloisterError('PROTOCOL_VIOLATION', 'a second report chunk');
          this.#report = msg.report;
          continue;
        }
        this.#started = true;
        if (msg.t === 'data') results.push(msg.data);
        // Results the server had at the same moment, sealed together: one by one, in order.
        else if (msg.t === 'items') for (const item of msg.items) results.push(item);
        // Results relayed as JSON text (an upstream engine's events): the parsed values.
        else for (const text of msg.items) results.push(this.#parseJson(text));
        continue;
      }
      if (msg.t === 'end2') {
        this.#readEnd2(msg.receipt);
        continue;
      }
      if (msg.t !== 'end') throw new CloisterError('PROTOCOL_VIOLATION', 'final chunk is not an end message');
      // The receipt covers the chunks before the final one only: a result in `end.data`
      // would reach the caller unsigned. No server sends it (PROTOCOL.md section 4); refuse it.
      if (msg.data !== undefined) throw new CloisterError('PROTOCOL_VIOLATION', 'the final end chunk carries data, which the receipt does not cover');
      const message = this.#receipt.message();
      const replica = this.#options.replica;
      if (replica !== undefined) {
        if (msg.replica === undefined) {
          // A request refused before the replica could name itself (it did not decode; its
          // statement could not be attested): the sealed error stands, no receipt is handed out.
          if (this.#serverError !== undefined) {
            this.#complete = true;
            continue;
          }
          throw new CloisterError('RECEIPT_INVALID', 'receipt: the fleet key config has each replica sign its receipts, and the final chunk names no replica');
        }
        if (!verifyReceipt(replica(msg.replica), message, msg.receipt)) throw new CloisterError('RECEIPT_INVALID', 'receipt signature does not verify under the receipt key of the replica that answered');
      } else {
        if (msg.replica !== undefined) throw new CloisterError('PROTOCOL_VIOLATION', 'a replica statement the client did not ask for');
        if (!this.#options.verify(message, msg.receipt)) throw new CloisterError('RECEIPT_INVALID', 'receipt signature does not verify');
      }
      this.#complete = true;
      this.#options.onReceipt?.(message, msg.receipt, msg.replica);
    }
    return results;
  }

  /** A receipts-v2 final chunk: only when asked for; the leaf must describe this exchange. */
  #readEnd2(bytes: Uint8Array): void {
    const ctx = this.#options.receiptV2;
    const v2 = this.#v2;
    if (ctx === undefined || v2 === undefined) throw new CloisterError('PROTOCOL_VIOLATION', 'an end2 receipt the client did not ask for');
    const r = decodeEndReceipt(bytes);
    checkLeaf(r.leaf, {
      keyConfigDigest: ctx.keyConfigDigest,
      salt: ctx.salt,
      requestHash: v2.requestHash,
      responseHash: v2.hasher.digest(),
      model: ctx.model,
      chunks: this.#chunks - (this.#serverError === undefined ? 0 : 1),
      aborted: this.#serverError !== undefined,
      ...(ctx.session === undefined ? {} : { session: ctx.session }),
    });
    if (r.proof !== undefined) checkInclusion(ctx.verifier, r.leaf, r.index, r.proof);
    else if (ctx.requireProof) throw new CloisterError('RECEIPT_INVALID', 'receipt: the inclusion proof the client asked for is missing');
    this.#complete = true;
    this.#options.onReceiptV2?.({ leaf: r.leaf, index: r.index, salt: ctx.salt, ...(r.proof === undefined ? {} : { proof: r.proof }), ...(ctx.sessionLink === undefined ? {} : { session: ctx.sessionLink }) });
  }

  #parseJson(text: string): unknown {
    if (this.#options.parseJson !== undefined) return this.#options.parseJson(text);
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new CloisterError('MALFORMED', 'json chunk item is not valid JSON', { detail: { field: 'items' } });
    }
  }
}
