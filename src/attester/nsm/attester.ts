/**
 * The Nitro attester: asks the NSM for an attestation document that binds the key config
 * (docs/PROTOCOL.md section 2):
 *   public_key = the HPKE public key, user_data = SHA-512(keyConfig), nonce = client nonce.
 *
 * Before handing the document out it checks, fail-closed, that the NSM signed what was asked
 * (the payload's public_key / user_data / nonce are exactly the requested bytes), so a broken
 * device or driver cannot make the server publish evidence that binds nothing.
 */
import { createHash } from 'node:crypto';
import { CloisterError } from '../../errors.js';
import type { AttestationRequest, Attester, EvidenceBundle } from '../../core/types.js';
import { decodeCbor } from '../../core/cbor.js';
import type { CborValue } from '../../core/cbor.js';
import { decodeNsmResponse, encodeAttestationRequest, encodeDescribePcrRequest, encodeGetRandomRequest } from './protocol.js';
import type { NsmResponse } from './protocol.js';
import type { NsmTransport } from './device.js';

const MAX_NONCE = 64;
const HPKE_PUBLIC_KEY_LENGTH = 32;

/** A typed client over an NSM transport. */
export class NsmClient {
  constructor(private readonly transport: NsmTransport) {}

  private call(request: Uint8Array, expected: NsmResponse['kind']): NsmResponse {
    let raw: Uint8Array;
    try {
      raw = this.transport.raw(request);
    } catch (err) {
      if (err instanceof CloisterError) throw err;
      throw new CloisterError('ATTESTER_FAILED', 'NSM transport failed', { cause: err });
    }
    let response: NsmResponse;
    try {
      response = decodeNsmResponse(raw);
    } catch (cause) {
      throw new CloisterError('ATTESTER_FAILED', 'NSM returned an undecodable response', { cause });
    }
    if (response.kind === 'Error') {
      throw new CloisterError('ATTESTER_FAILED', `NSM returned error ${response.error}`, { detail: { nsmError: response.error } });
    }
    if (response.kind !== expected) {
      throw new CloisterError('ATTESTER_FAILED', `NSM answered ${response.kind} to a ${expected} request`);
    }
    return response;
  }

  attestation(fields: { userData?: Uint8Array; nonce?: Uint8Array; publicKey?: Uint8Array }): Uint8Array {
    const r = this.call(encodeAttestationRequest(fields), 'Attestation');
    if (r.kind !== 'Attestation') throw new CloisterError('INTERNAL', 'unreachable');
    return r.document;
  }

  describePcr(index: number): { lock: boolean; data: Uint8Array } {
    const r = this.call(encodeDescribePcrRequest(index), 'DescribePCR');
    if (r.kind !== 'DescribePCR') throw new CloisterError('INTERNAL', 'unreachable');
    return { lock: r.lock, data: r.data };
  }

  getRandom(): Uint8Array {
    const r = this.call(encodeGetRandomRequest(), 'GetRandom');
    if (r.kind !== 'GetRandom') throw new CloisterError('INTERNAL', 'unreachable');
    return r.random;
  }
}

function sameBytes(a: CborValue | undefined, b: Uint8Array | null): boolean {
  if (b === null) return a === null || a === undefined || (a instanceof Uint8Array && a.byteLength === 0);
  return a instanceof Uint8Array && a.byteLength === b.byteLength && a.every((x, i) => x === b[i]);
}

/**
 * Reads the payload of the COSE_Sign1 document (RFC 9052 section 4.2; tagged 18 or untagged,
 * see test/vectors/README.md) just far enough to check the three bound fields.
 */
function checkDocumentBinds(document: Uint8Array, publicKey: Uint8Array, userData: Uint8Array | null, nonce: Uint8Array | null): void {
  const body = document[0] === 0xd2 ? document.subarray(1) : document;
  let payload: Uint8Array;
  let fields: CborValue;
  try {
    const cose = decodeCbor(body, { maxDepth: 4, maxItems: 64, requireCanonical: false, allowIndefinite: true });
    if (!Array.isArray(cose) || cose.length !== 4 || !(cose[2] instanceof Uint8Array)) {
      throw new CloisterError('EVIDENCE_MALFORMED', 'not a COSE_Sign1 array');
    }
    payload = cose[2];
    fields = decodeCbor(payload, { maxDepth: 4, maxItems: 4096, requireCanonical: false, allowIndefinite: true });
  } catch (cause) {
    throw new CloisterError('ATTESTER_FAILED', 'NSM returned an undecodable attestation document', { cause });
  }
  if (!(fields instanceof Map)) throw new CloisterError('ATTESTER_FAILED', 'attestation payload is not a map');
  if (!sameBytes(fields.get('public_key'), publicKey) || !sameBytes(fields.get('user_data'), userData) || !sameBytes(fields.get('nonce'), nonce)) {
    throw new CloisterError('ATTESTER_FAILED', 'NSM document does not carry the requested binding');
  }
}

export interface NitroAttesterOptions {
  /** The NSM transport, e.g. `openNsmDevice()`. */
  readonly transport: NsmTransport;
}

/** Attester for AWS Nitro Enclaves (platform 'nitro'). */
export class NitroAttester implements Attester {
  readonly platform = 'nitro' as const;
  readonly simulated = false;
  private readonly client: NsmClient;

  constructor(options: NitroAttesterOptions) {
    this.client = new NsmClient(options.transport);
  }

  attest(request: AttestationRequest): Promise<EvidenceBundle> {
    // Synchronous ioctl under the hood; wrapped so callers see a rejected promise, not a throw.
    return new Promise((resolve) => {
      const keyConfig = request.keyConfig.slice();
      const publicKey = request.hpkePublicKey.slice();
      if (publicKey.byteLength !== HPKE_PUBLIC_KEY_LENGTH) {
        throw new CloisterError('INVALID_ARGUMENT', `hpkePublicKey must be ${HPKE_PUBLIC_KEY_LENGTH} bytes`);
      }
      if (keyConfig.byteLength === 0) throw new CloisterError('INVALID_ARGUMENT', 'keyConfig is empty');
      const nonce = request.nonce === undefined || request.nonce.byteLength === 0 ? null : request.nonce.slice();
      if (nonce !== null && nonce.byteLength > MAX_NONCE) {
        throw new CloisterError('LIMIT_EXCEEDED', `nonce exceeds ${MAX_NONCE} bytes`);
      }
      // docs/PROTOCOL.md section 2: user_data = SHA-512(keyConfig bytes).
      const userData = new Uint8Array(createHash('sha512').update(keyConfig).digest());
      const document = this.client.attestation(nonce === null ? { userData, publicKey } : { userData, nonce, publicKey });
      checkDocumentBinds(document, publicKey, userData, nonce);
      resolve({ platform: 'nitro', evidence: document, keyConfig });
    });
  }

  attestPublicKey(publicKeyDer: Uint8Array): Promise<Uint8Array> {
    return new Promise((resolve) => {
      const publicKey = publicKeyDer.slice();
      // The NSM caps public_key at 1024 bytes; an RSA-2048 SPKI is 294.
      if (publicKey.byteLength === 0 || publicKey.byteLength > 1024) throw new CloisterError('INVALID_ARGUMENT', `public key of ${publicKey.byteLength} bytes: 1..1024 allowed`);
      const document = this.client.attestation({ publicKey });
      checkDocumentBinds(document, publicKey, null, null);
      resolve(document);
    });
  }
}
