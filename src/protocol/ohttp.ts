/**
 * The parts of Oblivious HTTP (RFC 9458) that the chunked variant (chunked.ts) shares: the
 * request header, the HPKE info, the key lookup and the response-key derivation; and the
 * server side of the non-chunked encapsulation (`decapsulateRequest`, `OhttpResponseSealer`),
 * which the standard OHTTP gateway uses (src/server/ohttp-gateway.ts, Binary HTTP inside).
 * The client side is test code (test/helpers/ohttp-rfc9458.ts); both are checked against the
 * RFC's Appendix A.
 */
import { CloisterError } from '../errors.js';
import { assertBytes, concatBytes, copyBytes, utf8 } from '../core/bytes.js';
import { aeadSeal } from '../crypto/aead.js';
import { setupBaseRecipient } from '../crypto/hpke/setup.js';
import { randomBytesPooled } from '../crypto/random.js';
import { hkdfExpand, hkdfExtract } from '../crypto/hkdf.js';
import type { HpkeRecipientContext, HpkeSenderContext } from '../crypto/hpke/context.js';
import type { HpkeRecipientKey } from '../crypto/hpke/kem.js';
import { suiteFromIds, suiteParams } from '../crypto/hpke/suite.js';
import type { HpkeSuite, SuiteParams } from '../crypto/hpke/suite.js';

/** Where a client seals to: the OHTTP key id, the recipient's X25519 key, the suite. */
export interface SealTarget {
  readonly keyId: number;
  readonly publicKey: Uint8Array;
  readonly suite: HpkeSuite;
}

/**
 * Server-side key lookup by OHTTP key id and requested suite. It may throw (e.g.
 * UNKNOWN_KEY_ID, KEY_STALE, UNSUPPORTED_SUITE); the error propagates unchanged.
 */
export type LookupKey = (keyId: number, suite: HpkeSuite) => HpkeRecipientKey;

/** keyId(1) kemId(2) kdfId(2) aeadId(2) (RFC 9458 section 4.1). */
export const REQUEST_HEADER_LENGTH = 7;

interface RequestHeader {
  readonly keyId: number;
  readonly suite: HpkeSuite;
}

export function encodeRequestHeader(keyId: number, suite: HpkeSuite): Uint8Array {
  if (!Number.isInteger(keyId) || keyId < 0 || keyId > 255) {
    throw new CloisterError('INVALID_ARGUMENT', 'keyId must be 0..255', { detail: { keyId } });
  }
  const p = suiteParams(suite);
  const out = new Uint8Array(REQUEST_HEADER_LENGTH);
  const v = new DataView(out.buffer);
  v.setUint8(0, keyId);
  v.setUint16(1, p.suite.kemId);
  v.setUint16(3, p.suite.kdfId);
  v.setUint16(5, p.suite.aeadId);
  return out;
}

/** Parse the 7-byte header; unsupported ids fail with UNSUPPORTED_SUITE. */
export function parseRequestHeader(b: Uint8Array): RequestHeader {
  if (b.byteLength < REQUEST_HEADER_LENGTH) throw new CloisterError('MALFORMED', 'request shorter than its header');
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return { keyId: v.getUint8(0), suite: suiteFromIds(v.getUint16(1), v.getUint16(3), v.getUint16(5)) };
}

/** info = label || 0x00 || hdr (RFC 9458 section 4.3). */
export function requestInfo(label: string, header: Uint8Array): Uint8Array {
  return concatBytes(utf8(label), Uint8Array.of(0), header);
}

interface ResponseKeys {
  readonly key: Uint8Array;
  readonly nonce: Uint8Array;
}

/**
 * RFC 9458 section 4.4: secret = Export(label, max(Nn, Nk)); salt = enc || response_nonce;
 * prk = Extract(salt, secret); key = Expand(prk, "key", Nk); nonce = Expand(prk, "nonce", Nn).
 */
export function deriveResponseKeys(
  p: SuiteParams,
  context: HpkeSenderContext | HpkeRecipientContext,
  label: string,
  enc: Uint8Array,
  responseNonce: Uint8Array,
): ResponseKeys {
  const nr = Math.max(p.nn, p.nk);
  const secret = context.export(utf8(label), nr);
  const prk = hkdfExtract(concatBytes(enc, responseNonce), secret);
  secret.fill(0);
  return { key: hkdfExpand(prk, LABEL_KEY, p.nk), nonce: hkdfExpand(prk, LABEL_NONCE, p.nn) };
}

const LABEL_KEY = utf8('key');
const LABEL_NONCE = utf8('nonce');

// --- The non-chunked encapsulation, server side (RFC 9458 sections 4.3, 4.4) ---------------

/** HPKE info and export labels of the standard (non-chunked) encapsulation, Binary HTTP inside. */
export const OHTTP_REQUEST_LABEL = 'message/bhttp request';
export const OHTTP_RESPONSE_LABEL = 'message/bhttp response';
const EMPTY = new Uint8Array(0);

/** Server side: seals the one response to a request it opened. */
export class OhttpResponseSealer {
  readonly #p: SuiteParams;
  readonly #context: HpkeRecipientContext;
  readonly #enc: Uint8Array;
  #used = false;

  /** Internal: returned by `decapsulateRequest`. */
  constructor(p: SuiteParams, context: HpkeRecipientContext, enc: Uint8Array) {
    this.#p = p;
    this.#context = context;
    this.#enc = enc;
  }

  /** `responseNonce` pins the nonce for test vectors; normally it is random. */
  seal(plaintext: Uint8Array, options?: { readonly responseNonce?: Uint8Array }): Uint8Array {
    assertBytes(plaintext, 'plaintext');
    if (this.#used) throw new CloisterError('PROTOCOL_VIOLATION', 'response already sealed');
    const nr = Math.max(this.#p.nn, this.#p.nk);
    const responseNonce = options?.responseNonce === undefined ? randomBytesPooled(nr) : copyBytes(options.responseNonce);
    assertBytes(responseNonce, 'responseNonce', nr);
    this.#used = true;
    const { key, nonce } = deriveResponseKeys(this.#p, this.#context, OHTTP_RESPONSE_LABEL, this.#enc, responseNonce);
    return concatBytes(responseNonce, aeadSeal(this.#p.cipher, key, nonce, EMPTY, plaintext));
  }
}

export interface DecapsulatedRequest {
  readonly plaintext: Uint8Array;
  readonly keyId: number;
  readonly suite: HpkeSuite;
  readonly response: OhttpResponseSealer;
}

/** Server: parse, look the key up, open (RFC 9458 section 4.3). */
export function decapsulateRequest(lookupKey: LookupKey, bytes: Uint8Array): DecapsulatedRequest {
  assertBytes(bytes, 'encapsulatedRequest');
  const { keyId, suite } = parseRequestHeader(bytes);
  const p = suiteParams(suite);
  if (bytes.byteLength < REQUEST_HEADER_LENGTH + p.nenc + p.nt) throw new CloisterError('MALFORMED', 'encapsulated request too short');
  const key = lookupKey(keyId, suite);
  const hdr = bytes.subarray(0, REQUEST_HEADER_LENGTH);
  const enc = copyBytes(bytes.subarray(REQUEST_HEADER_LENGTH, REQUEST_HEADER_LENGTH + p.nenc));
  const context = setupBaseRecipient(suite, enc, key, requestInfo(OHTTP_REQUEST_LABEL, hdr));
  const plaintext = context.open(bytes.subarray(REQUEST_HEADER_LENGTH + p.nenc));
  return { plaintext, keyId, suite, response: new OhttpResponseSealer(p, context, enc) };
}

