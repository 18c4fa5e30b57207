/** Verification of AWS Nitro Enclaves attestation documents (and the simulated platform's, same format). */
export { AWS_NITRO_ROOT_G1_PEM, AWS_NITRO_ROOT_G1_SHA256_HEX, awsNitroRootDer } from './aws-root.js';
export { NITRO_DOCUMENT_DEFAULTS, NITRO_PCR_BYTES, parseNitroDocument } from './document.js';
export type { NitroDocument, NitroDocumentLimits } from './document.js';
export {
  DEFAULT_MAX_AGE_MS,
  DEFAULT_MAX_CLOCK_SKEW_MS,
  DEFAULT_MAX_DOCUMENT_BYTES,
  verifyNitroDocument,
  verifyNitroDocumentDetailed,
} from './verify.js';
export type { NitroBindingExpectation, NitroVerification, VerifyNitroOptions } from './verify.js';
