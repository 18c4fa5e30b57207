/**
 * COSE_Sign1 (RFC 9052 section 4.2) with ES384, as produced by the Nitro Security Module.
 *
 * The signature is checked over a Sig_structure built from the exact received protected
 * header and payload byte strings (RFC 9052 section 4.4); the payload is never decoded and
 * re-encoded for this, because NSM documents may use indefinite-length maps that a
 * re-encoding would change.
 */
import { createSign, verify as cryptoVerify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { CloisterError } from '../../errors.js';
import { decodeCbor, encodeCbor, isCborMap, isCborTagged } from '../../core/cbor.js';
import type { CborDecodeOptions, CborValue } from '../../core/cbor.js';

/** COSE algorithm identifier for ECDSA w/ SHA-384 (RFC 9053 section 2.1). */
const COSE_ALG_ES384 = -35;
/** CBOR tag for COSE_Sign1 (RFC 9052 section 2). NSM documents are usually untagged. */
const COSE_SIGN1_TAG = 18;
/** ES384 signature: r || s, 48 bytes each (RFC 9053 section 2.1). */
const ES384_SIGNATURE_BYTES = 96;

export interface CoseSign1 {
  readonly tagged: boolean;
  /** The protected header bstr contents, exactly as received. */
  readonly protectedBytes: Uint8Array;
  /** The payload bstr contents, exactly as received. */
  readonly payload: Uint8Array;
  readonly signature: Uint8Array;
}

/**
 * How NSM output is read: whatever well-formed heads and key order the NSM's serializer
 * chose (newer NSM documents use an indefinite-length payload map, RFC 8949 section
 * 3.2.2), but still no indefinite strings, floats, undefined, duplicate keys or trailing
 * bytes. The signature covers the exact bytes, so nothing here is ever re-encoded.
 */
const NITRO_CBOR_OPTIONS = Object.freeze({
  requireCanonical: false,
  requireShortestHeads: false,
  allowIndefinite: true,
} as const satisfies CborDecodeOptions);

/** decodeCbor for evidence: a malformed encoding is EVIDENCE_MALFORMED (limits stay LIMIT_EXCEEDED). */
export function decodeEvidenceCbor(bytes: Uint8Array, options: CborDecodeOptions): CborValue {
  try {
    return decodeCbor(bytes, { ...NITRO_CBOR_OPTIONS, ...options });
  } catch (err) {
    if (err instanceof CloisterError && err.code === 'MALFORMED') {
      throw new CloisterError('EVIDENCE_MALFORMED', err.message, { cause: err, ...(err.detail === undefined ? {} : { detail: err.detail }) });
    }
    throw err;
  }
}

/**
 * How the COSE_Sign1 envelope itself (the outer array, its four item heads, the empty
 * unprotected map, the optional tag) and the protected header are read: the deterministic
 * form, i.e. definite lengths and shortest heads. Every real AWS document in
 * test/vectors/nitro is exactly `84 44 a1 01 38 22 a0 59 <len> <payload> 58 60 <signature>`,
 * which is what aws-nitro-enclaves-cose (serde_cbor) writes; the envelope is not covered by
 * the signature, so leniency there would only let the same signed document take other
 * encodings. The one benign acceptance: tag 18 (COSE_Sign1, RFC 9052 section 2) around the
 * array, which RFC 9052 allows and which changes nothing that is signed (its head must be
 * shortest too: d2). The payload bytes inside are read with NITRO_CBOR_OPTIONS.
 */
const NITRO_ENVELOPE_CBOR_OPTIONS = Object.freeze({
  requireCanonical: true,
  requireShortestHeads: true,
  allowIndefinite: false,
} as const satisfies CborDecodeOptions);

/** Decode the envelope. Throws CloisterError(EVIDENCE_MALFORMED | LIMIT_EXCEEDED). */
export function decodeCoseSign1(bytes: Uint8Array, options: CborDecodeOptions = {}): CoseSign1 {
  // The envelope is shallow: tag -> array -> header map.
  let top: CborValue = decodeEvidenceCbor(bytes, { maxDepth: 3, maxItems: 64, ...options, ...NITRO_ENVELOPE_CBOR_OPTIONS, allowTags: true });
  let tagged = false;
  if (isCborTagged(top)) {
    if (top.tag !== COSE_SIGN1_TAG) throw new CloisterError('EVIDENCE_MALFORMED', `unexpected CBOR tag ${top.tag}`);
    tagged = true;
    top = top.value;
  }
  if (!Array.isArray(top) || top.length !== 4) {
    throw new CloisterError('EVIDENCE_MALFORMED', 'COSE_Sign1 must be an array of 4 items');
  }
  const [protectedBytes, unprotectedHeader, payload, signature] = top as readonly CborValue[];
  if (!(protectedBytes instanceof Uint8Array)) throw new CloisterError('EVIDENCE_MALFORMED', 'protected header is not a byte string');
  if (unprotectedHeader === undefined || !isCborMap(unprotectedHeader)) {
    throw new CloisterError('EVIDENCE_MALFORMED', 'unprotected header is not a map');
  }
  // Nothing in the unprotected header is authenticated; NSM leaves it empty, so anything
  // there is unexpected and rejected rather than ignored.
  if (unprotectedHeader.size !== 0) throw new CloisterError('EVIDENCE_MALFORMED', 'unprotected header is not empty');
  // A detached (nil) payload is legal COSE but never an attestation document.
  if (!(payload instanceof Uint8Array)) throw new CloisterError('EVIDENCE_MALFORMED', 'payload is not a byte string');
  if (!(signature instanceof Uint8Array)) throw new CloisterError('EVIDENCE_MALFORMED', 'signature is not a byte string');
  return { tagged, protectedBytes, payload, signature };
}

/**
 * Check the protected header names ES384 and nothing else, and the signature length.
 * Throws CloisterError(EVIDENCE_MALFORMED).
 */
export function checkEs384Header(cose: CoseSign1): void {
  // Deterministic form too (a1 01 38 22 in every real document).
  const header = decodeEvidenceCbor(cose.protectedBytes, { maxDepth: 2, maxItems: 16, ...NITRO_ENVELOPE_CBOR_OPTIONS });
  if (!isCborMap(header) || header.size !== 1 || header.get(1) !== COSE_ALG_ES384) {
    throw new CloisterError('EVIDENCE_MALFORMED', 'protected header must be exactly { 1: -35 } (alg ES384)');
  }
  if (cose.signature.byteLength !== ES384_SIGNATURE_BYTES) {
    throw new CloisterError('EVIDENCE_MALFORMED', `ES384 signature must be ${ES384_SIGNATURE_BYTES} bytes`, {
      detail: { length: cose.signature.byteLength },
    });
  }
}

/** Sig_structure = ["Signature1", body_protected, external_aad = h'', payload] (RFC 9052 section 4.4). */
export function sigStructure(protectedBytes: Uint8Array, payload: Uint8Array): Uint8Array {
  return encodeCbor(['Signature1', protectedBytes, new Uint8Array(0), payload]);
}

/**
 * Verify the ES384 signature with a P-384 public key. High-S signatures are valid ECDSA
 * and NSM emits them: they are accepted (OpenSSL does not normalise S).
 */
export function verifyEs384(cose: CoseSign1, key: KeyObject): boolean {
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'secp384r1') return false;
  try {
    return cryptoVerify('sha384', sigStructure(cose.protectedBytes, cose.payload), { key, dsaEncoding: 'ieee-p1363' }, cose.signature);
  } catch {
    return false;
  }
}

/** Produce an untagged COSE_Sign1 over `payload` with a P-384 private key (the simulated attester). */
export function signEs384(payload: Uint8Array, privateKey: KeyObject): Uint8Array {
  const protectedBytes = encodeCbor(new Map<number, CborValue>([[1, COSE_ALG_ES384]]));
  const signer = createSign('sha384');
  signer.update(sigStructure(protectedBytes, payload));
  const signature = new Uint8Array(signer.sign({ key: privateKey, dsaEncoding: 'ieee-p1363' }));
  return encodeCbor([protectedBytes, new Map(), payload, signature]);
}
