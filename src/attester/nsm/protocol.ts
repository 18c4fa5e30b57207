/**
 * NSM request/response messages, encoded exactly as the aws-nitro-enclaves-nsm-api crate
 * does (src/api/mod.rs, serialised with serde_cbor): serde's externally tagged enums.
 *
 * - a unit variant is the bare text string: `"GetRandom"`
 * - a struct variant is a one-entry map from the variant name to a map of its fields in
 *   declaration order: `{"Attestation": {"user_data": b|null, "nonce": b|null, "public_key": b|null}}`
 * - `Option<ByteBuf>` None is CBOR null; ByteBuf / serde_bytes is a byte string
 * - a newtype variant wraps its value: `{"Error": "InvalidArgument"}`
 *
 * Responses are parsed strictly: exactly the expected variant, exactly its fields, no extras.
 */
import { CloisterError } from '../../errors.js';
import { decodeCbor, encodeCbor } from '../../core/cbor.js';
import type { CborMap, CborValue } from '../../core/cbor.js';

/** Bounds on Attestation request fields (the NSM accepts up to 1024 bytes each). */
const NSM_ATTESTATION_FIELD_MAX = 1024;

/** ErrorCode in nsm-api src/api/mod.rs, in declaration order. */
const NSM_ERROR_CODES = [
  'Success',
  'InvalidArgument',
  'InvalidIndex',
  'InvalidResponse',
  'ReadOnlyIndex',
  'InvalidOperation',
  'BufferTooSmall',
  'InputTooLarge',
  'InternalError',
] as const;
type NsmErrorCode = (typeof NSM_ERROR_CODES)[number];

interface NsmAttestationRequest {
  readonly userData?: Uint8Array;
  readonly nonce?: Uint8Array;
  readonly publicKey?: Uint8Array;
}

export type NsmResponse =
  | { readonly kind: 'Attestation'; readonly document: Uint8Array }
  | { readonly kind: 'DescribePCR'; readonly lock: boolean; readonly data: Uint8Array }
  | { readonly kind: 'GetRandom'; readonly random: Uint8Array }
  | { readonly kind: 'Error'; readonly error: NsmErrorCode };

function optionalBytes(name: string, value: Uint8Array | undefined): CborValue {
  if (value === undefined) return null;
  if (!(value instanceof Uint8Array)) throw new CloisterError('INVALID_ARGUMENT', `${name} must be a Uint8Array`);
  if (value.byteLength > NSM_ATTESTATION_FIELD_MAX) {
    throw new CloisterError('LIMIT_EXCEEDED', `${name} exceeds ${NSM_ATTESTATION_FIELD_MAX} bytes`);
  }
  return value.slice();
}

/** `Request::Attestation { user_data, nonce, public_key }`. */
export function encodeAttestationRequest(request: NsmAttestationRequest): Uint8Array {
  const fields: CborMap = new Map<string, CborValue>([
    ['user_data', optionalBytes('userData', request.userData)],
    ['nonce', optionalBytes('nonce', request.nonce)],
    ['public_key', optionalBytes('publicKey', request.publicKey)],
  ]);
  // serde_cbor writes struct fields in declaration order, not sorted (RFC 8949 4.2.1 does not apply).
  return encodeCbor(new Map([['Attestation', fields]]), { sortKeys: false });
}

/** `Request::DescribePCR { index: u16 }`. */
export function encodeDescribePcrRequest(index: number): Uint8Array {
  if (!Number.isInteger(index) || index < 0 || index > 0xffff) {
    throw new CloisterError('INVALID_ARGUMENT', 'PCR index must be a u16');
  }
  return encodeCbor(new Map([['DescribePCR', new Map([['index', index]])]]), { sortKeys: false });
}

/** `Request::GetRandom` (a unit variant: the bare string). */
export function encodeGetRandomRequest(): Uint8Array {
  return encodeCbor('GetRandom');
}

function bad(message: string): CloisterError {
  return new CloisterError('MALFORMED', `NSM response: ${message}`);
}

function exactFields(map: CborValue | undefined, variant: string, names: readonly string[]): CborMap {
  if (!(map instanceof Map)) throw bad(`${variant} body must be a map`);
  if (map.size !== names.length || !names.every((n) => map.has(n))) {
    throw bad(`${variant} must have exactly the fields ${names.join(', ')}`);
  }
  return map;
}

function bytesField(map: CborMap, variant: string, name: string): Uint8Array {
  const v = map.get(name);
  if (!(v instanceof Uint8Array)) throw bad(`${variant}.${name} must be a byte string`);
  return v;
}

/** Parses an NSM response (the bytes NSM_IOCTL_RAW returned). */
export function decodeNsmResponse(bytes: Uint8Array): NsmResponse {
  // serde_cbor output: shortest heads, definite lengths, struct fields in declaration order.
  const value = decodeCbor(bytes, { maxDepth: 4, maxItems: 64, requireCanonical: false });
  if (!(value instanceof Map) || value.size !== 1) throw bad('expected a one-entry map (externally tagged enum)');
  const [[variant, body]] = [...value.entries()] as [[string | number, CborValue]];
  switch (variant) {
    case 'Attestation': {
      const m = exactFields(body, variant, ['document']);
      const document = bytesField(m, variant, 'document');
      if (document.byteLength === 0) throw bad('empty attestation document');
      return { kind: 'Attestation', document };
    }
    case 'DescribePCR': {
      const m = exactFields(body, variant, ['lock', 'data']);
      const lock = m.get('lock');
      if (typeof lock !== 'boolean') throw bad('DescribePCR.lock must be a bool');
      return { kind: 'DescribePCR', lock, data: bytesField(m, variant, 'data') };
    }
    case 'GetRandom': {
      const m = exactFields(body, variant, ['random']);
      return { kind: 'GetRandom', random: bytesField(m, variant, 'random') };
    }
    case 'Error': {
      const code = NSM_ERROR_CODES.find((c) => c === body);
      if (code === undefined) throw bad('unknown NSM error code');
      return { kind: 'Error', error: code };
    }
    default:
      throw bad('unexpected response variant');
  }
}
