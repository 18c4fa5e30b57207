/**
 * The Nitro attestation document: the COSE_Sign1 payload, a CBOR map defined in the AWS
 * Nitro Enclaves "Verifying the root of trust" documentation (section "Attestation
 * document specification"):
 *
 *   module_id: tstr, digest: "SHA384", timestamp: uint (ms), pcrs: { uint => bstr },
 *   certificate: bstr (DER), cabundle: [* bstr] (root first),
 *   public_key / user_data / nonce: bstr or null (optional).
 *
 * Every field is type- and length-checked, unknown keys are rejected, and every bound is a
 * named option. Parsing proves nothing about authenticity: only `verifyNitroDocument`
 * does, after the signature and chain checks.
 */
import { CloisterError } from '../../errors.js';
import { isCborMap } from '../../core/cbor.js';
import type { CborKey, CborValue } from '../../core/cbor.js';
import { decodeEvidenceCbor } from './cose.js';

export interface NitroDocumentLimits {
  /** Longest module_id. Default 256. */
  readonly maxModuleIdLength?: number;
  /** Most PCR entries. Default 32 (the NSM has 32 PCRs). */
  readonly maxPcrs?: number;
  /** Largest DER certificate. Default 1024 (the AWS specification's bound). */
  readonly maxCertificateBytes?: number;
  /** Most certificates in cabundle. Default 8. */
  readonly maxCabundleLength?: number;
  /** Largest public_key / user_data / nonce. Default 1024 each (the NSM accepts 1024 although the text says 512 for user_data and nonce). */
  readonly maxPublicKeyBytes?: number;
  readonly maxUserDataBytes?: number;
  readonly maxNonceBytes?: number;
}

export const NITRO_DOCUMENT_DEFAULTS = {
  maxModuleIdLength: 256,
  maxPcrs: 32,
  maxCertificateBytes: 1024,
  maxCabundleLength: 8,
  maxPublicKeyBytes: 1024,
  maxUserDataBytes: 1024,
  maxNonceBytes: 1024,
} as const satisfies Required<NitroDocumentLimits>;

/** SHA-384 PCRs are 48 bytes; NSM reports digest "SHA384" only. */
export const NITRO_PCR_BYTES = 48;
const NSM_PCR_COUNT = 32;

export interface NitroDocument {
  readonly moduleId: string;
  readonly digest: 'SHA384';
  /** Milliseconds since the Unix epoch, as signed by the NSM. */
  readonly timestamp: number;
  /** PCR index -> 48-byte value. */
  readonly pcrs: ReadonlyMap<number, Uint8Array>;
  readonly certificate: Uint8Array;
  /** Root first, as the NSM emits it. */
  readonly cabundle: readonly Uint8Array[];
  /** null when unset (CBOR null, or the key absent). */
  readonly publicKey: Uint8Array | null;
  readonly userData: Uint8Array | null;
  readonly nonce: Uint8Array | null;
}

const KNOWN_KEYS: ReadonlySet<string> = new Set([
  'module_id',
  'digest',
  'timestamp',
  'pcrs',
  'certificate',
  'cabundle',
  'public_key',
  'user_data',
  'nonce',
]);

function bad(message: string): CloisterError {
  return new CloisterError('EVIDENCE_MALFORMED', `attestation document: ${message}`);
}

function bytesField(v: CborValue | undefined, name: string, min: number, max: number): Uint8Array {
  if (!(v instanceof Uint8Array)) throw bad(`${name} is not a byte string`);
  if (v.byteLength < min || v.byteLength > max) {
    throw new CloisterError('EVIDENCE_MALFORMED', `attestation document: ${name} length ${v.byteLength} outside ${min}..${max}`, {
      detail: { field: name, length: v.byteLength, min, max },
    });
  }
  return v;
}

function optionalBytes(map: ReadonlyMap<CborKey, CborValue>, name: string, max: number): Uint8Array | null {
  const v = map.get(name);
  if (v === undefined || v === null) return null;
  return bytesField(v, name, 0, max);
}

/** Parse the COSE payload into a NitroDocument. Throws CloisterError(EVIDENCE_MALFORMED | LIMIT_EXCEEDED). */
export function parseNitroDocument(payload: Uint8Array, limits: NitroDocumentLimits = {}): NitroDocument {
  const l = { ...NITRO_DOCUMENT_DEFAULTS, ...limits };
  // Depth: map -> pcrs map / cabundle array -> leaf values.
  const root = decodeEvidenceCbor(payload, { maxDepth: 3, maxItems: 16 + 2 * l.maxPcrs + l.maxCabundleLength + 8 });
  if (!isCborMap(root)) throw bad('payload is not a map');
  for (const k of root.keys()) {
    if (typeof k !== 'string' || !KNOWN_KEYS.has(k)) throw bad(`unknown key ${typeof k === 'string' ? JSON.stringify(k) : k}`);
  }

  const moduleId = root.get('module_id');
  if (typeof moduleId !== 'string' || moduleId.length === 0 || moduleId.length > l.maxModuleIdLength) {
    throw bad('module_id must be a non-empty text string within the limit');
  }
  if (root.get('digest') !== 'SHA384') throw bad('digest must be "SHA384"');
  const timestamp = root.get('timestamp');
  if (typeof timestamp !== 'number' || !Number.isSafeInteger(timestamp) || timestamp <= 0) {
    throw bad('timestamp must be a positive integer');
  }

  const pcrsValue = root.get('pcrs');
  if (pcrsValue === undefined || !isCborMap(pcrsValue)) throw bad('pcrs must be a map');
  if (pcrsValue.size === 0 || pcrsValue.size > l.maxPcrs) {
    throw new CloisterError('EVIDENCE_MALFORMED', `attestation document: ${pcrsValue.size} PCRs outside 1..${l.maxPcrs}`, {
      detail: { count: pcrsValue.size, max: l.maxPcrs },
    });
  }
  const pcrs = new Map<number, Uint8Array>();
  for (const [index, value] of pcrsValue) {
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= NSM_PCR_COUNT) {
      throw bad('PCR index must be an integer 0..31');
    }
    pcrs.set(index, bytesField(value, `pcrs[${index}]`, NITRO_PCR_BYTES, NITRO_PCR_BYTES));
  }

  const certificate = bytesField(root.get('certificate'), 'certificate', 1, l.maxCertificateBytes);
  const cabundleValue = root.get('cabundle');
  if (!Array.isArray(cabundleValue)) throw bad('cabundle must be an array');
  const bundle = cabundleValue as readonly CborValue[];
  if (bundle.length === 0 || bundle.length > l.maxCabundleLength) {
    throw new CloisterError('EVIDENCE_MALFORMED', `attestation document: cabundle of ${bundle.length} outside 1..${l.maxCabundleLength}`, {
      detail: { count: bundle.length, max: l.maxCabundleLength },
    });
  }
  const cabundle = bundle.map((c, i) => bytesField(c, `cabundle[${i}]`, 1, l.maxCertificateBytes));

  return {
    moduleId,
    digest: 'SHA384',
    timestamp,
    pcrs,
    certificate,
    cabundle,
    publicKey: optionalBytes(root, 'public_key', l.maxPublicKeyBytes),
    userData: optionalBytes(root, 'user_data', l.maxUserDataBytes),
    nonce: optionalBytes(root, 'nonce', l.maxNonceBytes),
  };
}
