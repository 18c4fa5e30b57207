/**
 * One error taxonomy for the whole runtime.
 *
 * Every error Cloister raises is a `CloisterError` with a stable string `code` from the
 * closed union below, so callers can `switch` on it. Codes are part of the public API and
 * of the wire protocol: never rename one, only add. Each code maps to exactly one wire
 * outcome (see `wireCodeOf`); crypto failures are deliberately collapsed into one opaque
 * `DECRYPT_FAILED` on the wire, while the local error keeps the precise code and cause for
 * diagnostics (which never include request or response content).
 */

export const ERROR_CODES = {
  // --- generic input / encoding -------------------------------------------------------
  INVALID_ARGUMENT: 'a caller passed an argument of the wrong type, length or range',
  MALFORMED: 'an encoded structure could not be parsed (bad length, trailing bytes, wrong type)',
  LIMIT_EXCEEDED: 'a configured resource limit was hit',

  // --- crypto (local detail; all map to DECRYPT_FAILED on the wire) ---------------------
  HPKE_DECAP_FAILED: 'HPKE decapsulation failed (bad encapsulated key)',
  HPKE_OPEN_FAILED: 'AEAD authentication failed while opening a message',
  HPKE_MESSAGE_LIMIT: 'the HPKE context sequence number would overflow',
  UNSUPPORTED_SUITE: 'the KEM, KDF or AEAD identifier is not supported',
  DECRYPT_FAILED: 'decryption failed (opaque wire code for every crypto failure)',

  // --- protocol ----------------------------------------------------------------------------
  UNKNOWN_KEY_ID: 'the request names a key id the server does not hold',
  KEY_STALE: 'the key config the client holds has been rotated out; refetch it',
  REPLAY: 'the request id was already seen, or its timestamp is outside the replay window',
  STREAM_TRUNCATED: 'a sealed stream ended without its authenticated final chunk',
  UNKNOWN_OPERATION: 'the sealed request names an operation the server does not offer',
  UNKNOWN_MODEL: 'the sealed request names a model the server does not serve',
  PROTOCOL_VIOLATION: 'a peer sent a message that is not valid at this point of the protocol',
  RECEIPT_INVALID: 'the receipt in the final response chunk does not verify under the attested receipt key',
  VERSION_UNSUPPORTED: 'the peer uses a protocol version this side does not support',
  SESSION_EXPIRED: 'the session ended (key rotation, age or byte bound) before this request ran; open a new session',
  SESSION_UNKNOWN: 'the server holds no such session (it expired, was never opened, or the server restarted)',
  PROTOCOL_DOWNGRADE: 'the attested key config does not offer a protocol version the client policy requires (a host that served an older key config, or a server to upgrade)',

  // --- attestation ---------------------------------------------------------------------------
  EVIDENCE_MALFORMED: 'the attestation evidence could not be decoded',
  EVIDENCE_SIGNATURE_INVALID: 'the evidence signature does not verify',
  CERT_CHAIN_INVALID: 'the certificate chain does not verify to a trusted root',
  CERT_EXPIRED: 'a certificate in the chain is not valid at the verification time',
  ROOT_UNTRUSTED: 'the chain ends in a root the verifier was not told to trust',
  EVIDENCE_STALE: 'the evidence is older than the allowed age, or from the future',
  POLICY_MISMATCH: 'a measurement or platform property does not match the policy',
  POLICY_INVALID: 'the policy itself is missing, malformed or names nothing to check',
  BINDING_MISMATCH: 'the evidence does not bind the key config or nonce the client expected',
  VERIFICATION_INCOMPLETE: 'the evidence passed every check that ran, but the policy or the key-config binding was not checked',
  TCB_MISMATCH: 'the reported TCB does not match the endorsement key certificate or is below minimum',
  TCB_STATUS_REJECTED: 'the platform TCB status is not accepted by the policy',
  DEBUG_MODE: 'the TEE runs in debug mode, which the policy does not allow',
  PLATFORM_UNAVAILABLE: 'the TEE device or interface is not present on this machine',
  ATTESTER_FAILED: 'the platform attester failed to produce evidence',

  // --- server / engines ------------------------------------------------------------------
  OVERLOADED: 'the server or engine queue is full; retry later',
  TIMEOUT: 'the request took longer than its deadline',
  CANCELLED: 'the request was cancelled by the client',
  ENGINE_FAILED: 'the inference engine failed while processing the request',
  ENGINE_UNAVAILABLE: 'the inference engine is not reachable or not ready',
  RATE_LIMITED: 'too many requests of this kind; retry later',
  UNAUTHORIZED: 'the request carries no valid API key',
  FORBIDDEN: 'the request comes from a browser origin that is not allowed',
  INTERNAL: 'an unexpected server error',
  CAPABILITY_INVALID: 'the collection does not exist or the request carries no valid capability for it',
  OUTPUT_BLOCKED: 'the output guard found identifiers (PHI/PII) in the answer and the policy is block',
  STORAGE_CORRUPT: 'sealed storage on the host failed authentication or is not well formed',
  STORAGE_ROLLBACK: 'sealed storage on the host is older than its rollback counter (an older copy was put back) or is missing',
  ROLLBACK_COUNTER_FAILED: 'the rollback counter could not be read or advanced: the change is not acknowledged',

  // --- client / configuration --------------------------------------------------------------
  CONNECTION_FAILED: 'the connection to the server failed or closed unexpectedly',
  CONFIG_INVALID: 'a configuration value is invalid',
  NOT_FOUND: 'a required file or resource does not exist',

  // --- sealed models and key release (issue 13; docs/KEYS.md) --------------------------------
  SEALED_MODEL_INVALID: 'a sealed model directory or its manifest is malformed',
  SEALED_MODEL_KEY_MISMATCH: 'the data key does not open this sealed model (wrong key, or the manifest was changed)',
  SEALED_MODEL_TAMPERED: 'a sealed model file fails authentication (changed, reordered or swapped)',
  SEALED_MODEL_TRUNCATED: 'a sealed model file is shorter or longer than its manifest says',
  SEALED_MODEL_DIGEST_MISMATCH: 'the unsealed model does not have the plaintext digest its manifest records',
  KEY_REVOKED: 'the key broker key was revoked',
  KEY_RELEASE_REFUSED: 'the key broker refused to release a key',
  STORE_CORRUPT: 'the key broker store fails authentication or does not parse',
  KMS_REFUSED: 'AWS KMS refused the request (its error type is in the message)',
  CMS_INVALID: 'the CMS EnvelopedData from AWS KMS (CiphertextForRecipient) is malformed or uses other algorithms',
  CMS_DECRYPT_FAILED: 'the CMS EnvelopedData from AWS KMS does not decrypt under this enclave\'s key',
  EGRESS_DENIED: 'the parent relay\'s egress allow-list does not name the host:port the enclave asked for',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** Codes that are crypto failures: on the wire they all read `DECRYPT_FAILED`. */
const OPAQUE_ON_WIRE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'HPKE_DECAP_FAILED',
  'HPKE_OPEN_FAILED',
  'HPKE_MESSAGE_LIMIT',
  'DECRYPT_FAILED',
]);

interface CloisterErrorOptions {
  cause?: unknown;
  /** Non-content diagnostic detail (field names, lengths, step names). Never payload bytes. */
  detail?: Readonly<Record<string, string | number | boolean>>;
}

export class CloisterError extends Error {
  readonly code: ErrorCode;
  readonly detail: Readonly<Record<string, string | number | boolean>> | undefined;

  constructor(code: ErrorCode, message?: string, options: CloisterErrorOptions = {}) {
    super(message ?? ERROR_CODES[code], options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CloisterError';
    this.code = code;
    this.detail = options.detail;
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CODES, value);
}

/** The code a peer may see for an error: crypto detail is collapsed into DECRYPT_FAILED. */
export function wireCodeOf(code: ErrorCode): ErrorCode {
  return OPAQUE_ON_WIRE.has(code) ? 'DECRYPT_FAILED' : code;
}

/** Wrap anything thrown into a CloisterError, keeping a CloisterError as it is. */
export function asCloisterError(err: unknown, fallback: ErrorCode = 'INTERNAL'): CloisterError {
  if (err instanceof CloisterError) return err;
  return new CloisterError(fallback, undefined, { cause: err });
}
