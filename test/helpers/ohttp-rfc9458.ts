/**
 * Oblivious HTTP message encapsulation (RFC 9458), non-chunked, client side: test code (a
 * standard OHTTP client). The server side (decapsulateRequest) is product code in
 * src/protocol/ohttp.ts, used by the standard gateway (src/server/ohttp-gateway.ts); both
 * are checked against the RFC's Appendix A vectors.
 */
import { CloisterError } from '../../src/errors.js';
import { aeadOpen } from '../../src/crypto/aead.js';
import { assertBytes, concatBytes, copyBytes } from '../../src/core/bytes.js';
import type { HpkeSenderContext } from '../../src/crypto/hpke/context.js';
import { setupBaseSender } from '../../src/crypto/hpke/setup.js';
import type { SetupSenderOptions } from '../../src/crypto/hpke/setup.js';
import { KEM_DHKEM_X25519_HKDF_SHA256, suiteFromIds, suiteParams } from '../../src/crypto/hpke/suite.js';
import type { SuiteParams } from '../../src/crypto/hpke/suite.js';
import { deriveResponseKeys, encodeRequestHeader, OHTTP_REQUEST_LABEL, OHTTP_RESPONSE_LABEL, requestInfo } from '../../src/protocol/ohttp.js';
export { decapsulateRequest } from '../../src/protocol/ohttp.js';
import type { SealTarget } from '../../src/protocol/ohttp.js';

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
