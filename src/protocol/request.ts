/**
 * The request side of a sealed exchange, as the response side (response.ts), with no
 * transport: the client seals an inner request and gets the reader for its response; the
 * server opens a sealed body and gets the request plaintext, its decoder and the writer for
 * the response.
 *
 * The server's order of checks (DESIGN.md "Requests and responses"): opening the body (key
 * lookup, HPKE, AEAD, limits) fails with a plaintext coded error, since nothing can be sealed
 * to a client whose request did not open; decoding the inner message happens after the
 * response started, so its errors go inside the sealed response.
 */
import { CloisterError } from '../errors.js';
import type { HpkeRecipientKey } from '../crypto/hpke/kem.js';
import type { HpkeSuite } from '../crypto/hpke/suite.js';
import { openChunkedRequest, sealChunkedRequest } from './chunked.js';
import type { SealTarget } from './ohttp.js';
import { decodeSealedRequest, encodeSealedRequest } from './messages.js';
import type { MessageLimits, SealedRequest } from './messages.js';
import { ResponseReader, ResponseWriter } from './response.js';
import type { ResponseReaderOptions } from './response.js';

export interface SealRequestOptions extends ResponseReaderOptions {
  /** Pad the inner request to its size bucket (PROTOCOL.md section 4, "Padding"). */
  readonly pad: boolean;
}

/** A sealed request ready to send, and the reader for its response. */
export interface SealedExchangeRequest {
  readonly bytes: Uint8Array;
  readonly reader: ResponseReader;
}

/**
 * Client: encodes and seals `request` to `target` (one-shot chunked OHTTP). The request
 * plaintext is zeroed once sealed and hashed for the receipt.
 */
export function sealRequest(target: SealTarget, request: SealedRequest, options: SealRequestOptions): SealedExchangeRequest {
  const plaintext = encodeSealedRequest(request, { pad: options.pad });
  const sealed = sealChunkedRequest(target, plaintext);
  const reader = new ResponseReader(sealed.response, plaintext, options);
  plaintext.fill(0);
  return { bytes: sealed.bytes, reader };
}

/** The server key that opens a request and signs its receipt (a key generation). */
export interface RequestKey {
  readonly recipient: HpkeRecipientKey;
  signReceipt(message: Uint8Array): Uint8Array;
}

/** A request the server opened: its plaintext, the key that opened it, and the response writer. */
export interface OpenedRequest<K extends RequestKey> {
  readonly plaintext: Uint8Array;
  /** The key generation that opened the request; it also signs the receipt. */
  readonly key: K;
  readonly writer: ResponseWriter;
  /** Strict decoding of the inner message (throws coded errors: seal them into the response). */
  decode(limits?: Partial<MessageLimits>): SealedRequest;
}

/**
 * Server: opens a sealed body with the key `lookup` names (looked up once: the generation
 * that opened the request also signs its receipt, so a rotation in between cannot leave the
 * request without an answer). Throws the coded reason on any failure (crypto failures are
 * DECRYPT_FAILED or the AEAD's own code: the caller collapses them for the wire).
 */
export function openRequest<K extends RequestKey>(lookup: (keyId: number, suite: HpkeSuite) => K, body: Uint8Array, options: { readonly maxMessageBytes: number }): OpenedRequest<K> {
  let key: K | undefined;
  const opened = openChunkedRequest(
    (keyId, suite) => {
      key = lookup(keyId, suite);
      return key.recipient;
    },
    body,
    { maxMessageBytes: options.maxMessageBytes },
  );
  if (key === undefined) throw new CloisterError('INTERNAL', 'request opened without a key lookup');
  const signer = key;
  const plaintext = opened.plaintext;
  return {
    plaintext,
    key: signer,
    writer: new ResponseWriter(opened.response, plaintext, { sign: (message) => signer.signReceipt(message) }),
    decode: (limits) => decodeSealedRequest(plaintext, limits),
  };
}
