/**
 * The parts of Oblivious HTTP (RFC 9458) that the chunked variant (chunked.ts) shares: the
 * request header, the HPKE info, the key lookup and the response-key derivation. The
 * non-chunked encapsulation itself is test code (test/helpers/ohttp-rfc9458.ts), kept to
 * check these parts against the RFC's Appendix A.
 */
import { CloisterError } from '../errors.js';
import { concatBytes, utf8 } from '../core/bytes.js';
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
