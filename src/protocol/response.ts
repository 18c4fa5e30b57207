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
import { ReceiptHasher, decodeResponseChunk, encodeResponseChunk, encodeResultsChunk, padChunkPlaintext } from './messages.js';

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

  constructor(sealer: ChunkSealer, requestPlaintext: Uint8Array, options: ResponseWriterOptions) {
    this.#sealer = sealer;
    this.#receipt = new ReceiptHasher(requestPlaintext);
    this.#sign = options.sign;
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
    this.#chunks++;
    return sealed;
  }

  /** The sealed error chunk (a wire code and a content-free message). */
  error(code: ErrorCode, message: string): Uint8Array {
    return this.data(encodeResponseChunk({ t: 'error', code, message }));
  }

  /** The final chunk with the receipt; nothing can be written after it. */
  end(): Uint8Array {
    if (this.#ended) throw new CloisterError('PROTOCOL_VIOLATION', 'response already ended');
    const signature = this.#sign(this.#receipt.message());
    const bytes = this.#sealer.sealFinal(encodeResponseChunk({ t: 'end', receipt: signature }));
    this.#ended = true;
    return bytes;
  }
}

export interface ResponseReaderOptions {
  /** Checks the receipt signature over `message` (false: RECEIPT_INVALID). */
  readonly verify: (message: Uint8Array, signature: Uint8Array) => boolean;
  /** Called once with the verified receipt, before the final results are handed out. */
  readonly onReceipt?: (message: Uint8Array, signature: Uint8Array) => void;
  /** Parses a `json` chunk item (default JSON.parse; MALFORMED without the text on failure). */
  readonly parseJson?: (text: string) => unknown;
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

  constructor(opener: ChunkOpener, requestPlaintext: Uint8Array, options: ResponseReaderOptions) {
    this.#opener = opener;
    this.#receipt = new ReceiptHasher(requestPlaintext);
    this.#options = options;
  }

  /** Whether any result was opened (the caller may have seen it: a request is not resent then). */
  get started(): boolean {
    return this.#started;
  }

  /** Whether the authenticated final chunk was opened and its receipt verified. */
  get complete(): boolean {
    return this.#complete;
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
        if (msg.t === 'error') {
          // Sealed by the attested server: the generic text of the code, or a content-free one
          // naming a limit and its value, or what the server offers.
          const text = msg.message.length > 0 && msg.message.length <= MAX_ERROR_MESSAGE_CHARS ? msg.message : undefined;
          this.#serverError = new CloisterError(isErrorCode(msg.code) ? msg.code : 'INTERNAL', text, { detail: { origin: 'server' } });
          continue;
        }
        if (msg.t === 'end') throw new CloisterError('PROTOCOL_VIOLATION', 'end message in a non-final chunk');
        if (this.#serverError !== undefined) throw new CloisterError('PROTOCOL_VIOLATION', 'data after an error chunk');
        this.#started = true;
        if (msg.t === 'data') results.push(msg.data);
        // Results the server had at the same moment, sealed together: one by one, in order.
        else if (msg.t === 'items') for (const item of msg.items) results.push(item);
        // Results relayed as JSON text (an upstream engine's events): the parsed values.
        else for (const text of msg.items) results.push(this.#parseJson(text));
        continue;
      }
      if (msg.t !== 'end') throw new CloisterError('PROTOCOL_VIOLATION', 'final chunk is not an end message');
      // The receipt covers the chunks before the final one only: a result in `end.data`
      // would reach the caller unsigned. No server sends it (PROTOCOL.md section 4); refuse it.
      if (msg.data !== undefined) throw new CloisterError('PROTOCOL_VIOLATION', 'the final end chunk carries data, which the receipt does not cover');
      const message = this.#receipt.message();
      if (!this.#options.verify(message, msg.receipt)) throw new CloisterError('RECEIPT_INVALID', 'receipt signature does not verify');
      this.#complete = true;
      this.#options.onReceipt?.(message, msg.receipt);
    }
    return results;
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
