/**
 * Oblivious HTTP message encapsulation (RFC 9458), non-chunked: test code only. The
 * Cloister wire uses the chunked variant (src/protocol/chunked.ts); this one checks the
 * shared header, HPKE info and response-key derivation (src/protocol/ohttp.ts) against the
 * RFC's Appendix A vectors.
 */
import { CloisterError } from '../../src/errors.js';
import { aeadOpen, aeadSeal } from '../../src/crypto/aead.js';
import { assertBytes, concatBytes, copyBytes } from '../../src/core/bytes.js';
import type { HpkeRecipientContext, HpkeSenderContext } from '../../src/crypto/hpke/context.js';
import { setupBaseRecipient, setupBaseSender } from '../../src/crypto/hpke/setup.js';
import type { SetupSenderOptions } from '../../src/crypto/hpke/setup.js';
import { KEM_DHKEM_X25519_HKDF_SHA256, suiteFromIds, suiteParams } from '../../src/crypto/hpke/suite.js';
import type { HpkeSuite, SuiteParams } from '../../src/crypto/hpke/suite.js';
import { randomBytesPooled } from '../../src/crypto/random.js';
import { deriveResponseKeys, encodeRequestHeader, parseRequestHeader, REQUEST_HEADER_LENGTH, requestInfo } from '../../src/protocol/ohttp.js';
import type { LookupKey, SealTarget } from '../../src/protocol/ohttp.js';

const OHTTP_REQUEST_LABEL = 'message/bhttp request';
const OHTTP_RESPONSE_LABEL = 'message/bhttp response';
const EMPTY = new Uint8Array(0);

/** Client side: opens the one response to a request it sealed. */
class OhttpResponseOpener {
  readonly #p: SuiteParams;
  readonly #context: HpkeSenderContext;
  readonly #enc: Uint8Array;
  #used = false;

  /** Internal: returned by `encapsulateRequest`. */
  constructor(p: SuiteParams, context: HpkeSenderContext, enc: Uint8Array) {
    this.#p = p;
    this.#context = context;
    this.#enc = enc;
  }

  open(encapsulatedResponse: Uint8Array): Uint8Array {
    assertBytes(encapsulatedResponse, 'encapsulatedResponse');
    if (this.#used) throw new CloisterError('PROTOCOL_VIOLATION', 'response already opened');
    const nr = Math.max(this.#p.nn, this.#p.nk);
    if (encapsulatedResponse.byteLength < nr + this.#p.nt) {
      throw new CloisterError('MALFORMED', 'encapsulated response too short');
    }
    this.#used = true;
    const { key, nonce } = deriveResponseKeys(this.#p, this.#context, OHTTP_RESPONSE_LABEL, this.#enc, encapsulatedResponse.subarray(0, nr));
    return aeadOpen(this.#p.cipher, key, nonce, EMPTY, encapsulatedResponse.subarray(nr));
  }
}

/** Server side: seals the one response to a request it opened. */
class OhttpResponseSealer {
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

interface EncapsulatedRequest {
  readonly bytes: Uint8Array;
  readonly response: OhttpResponseOpener;
}

/** Client: hdr || enc || ct (RFC 9458 section 4.3). */
export function encapsulateRequest(target: SealTarget, plaintext: Uint8Array, options?: SetupSenderOptions): EncapsulatedRequest {
  assertBytes(plaintext, 'plaintext');
  const p = suiteParams(target.suite);
  const hdr = encodeRequestHeader(target.keyId, p.suite);
  const { enc, context } = setupBaseSender(p.suite, target.publicKey, requestInfo(OHTTP_REQUEST_LABEL, hdr), options);
  const ct = context.seal(plaintext);
  return { bytes: concatBytes(hdr, enc, ct), response: new OhttpResponseOpener(p, context, enc) };
}

interface DecapsulatedRequest {
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

// --- Key configuration encoding (RFC 9458 section 3) ------------------------------------

interface OhttpKeyConfig {
  readonly keyId: number;
  readonly kemId: number;
  readonly publicKey: Uint8Array;
  readonly symmetric: readonly { readonly kdfId: number; readonly aeadId: number }[];
}

export function encodeOhttpKeyConfig(kc: OhttpKeyConfig): Uint8Array {
  if (!Number.isInteger(kc.keyId) || kc.keyId < 0 || kc.keyId > 255) throw new CloisterError('INVALID_ARGUMENT', 'keyId must be 0..255');
  if (kc.kemId !== KEM_DHKEM_X25519_HKDF_SHA256) throw new CloisterError('UNSUPPORTED_SUITE');
  assertBytes(kc.publicKey, 'publicKey', 32);
  if (kc.symmetric.length === 0) throw new CloisterError('INVALID_ARGUMENT', 'at least one symmetric algorithm');
  const out = new Uint8Array(1 + 2 + 32 + 2 + 4 * kc.symmetric.length);
  const v = new DataView(out.buffer);
  v.setUint8(0, kc.keyId);
  v.setUint16(1, kc.kemId);
  out.set(kc.publicKey, 3);
  v.setUint16(35, 4 * kc.symmetric.length);
  kc.symmetric.forEach((s, i) => {
    suiteFromIds(kc.kemId, s.kdfId, s.aeadId);
    v.setUint16(37 + 4 * i, s.kdfId);
    v.setUint16(39 + 4 * i, s.aeadId);
  });
  return out;
}

/** Strict: exact lengths, supported ids only, no trailing bytes. */
export function decodeOhttpKeyConfig(b: Uint8Array): OhttpKeyConfig {
  assertBytes(b, 'keyConfig');
  if (b.byteLength < 37) throw new CloisterError('MALFORMED', 'key config too short');
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const keyId = v.getUint8(0);
  const kemId = v.getUint16(1);
  if (kemId !== KEM_DHKEM_X25519_HKDF_SHA256) throw new CloisterError('UNSUPPORTED_SUITE', undefined, { detail: { kemId } });
  const symLen = v.getUint16(35);
  if (symLen === 0 || symLen % 4 !== 0) throw new CloisterError('MALFORMED', 'bad symmetric algorithms length');
  if (b.byteLength !== 37 + symLen) {
    throw new CloisterError('MALFORMED', 'key config length mismatch (truncated or trailing bytes)', {
      detail: { expected: 37 + symLen, actual: b.byteLength },
    });
  }
  const symmetric: { kdfId: number; aeadId: number }[] = [];
  for (let off = 37; off < b.byteLength; off += 4) {
    const kdfId = v.getUint16(off);
    const aeadId = v.getUint16(off + 2);
    suiteFromIds(kemId, kdfId, aeadId);
    symmetric.push({ kdfId, aeadId });
  }
  return { keyId, kemId, publicKey: copyBytes(b.subarray(3, 35)), symmetric };
}
