/** Certificate parsing and chain verification shared by every attestation platform. */
export {
  DEFAULT_MAX_CERTIFICATE_BYTES,
  KeyUsageFlags,
  parseCertificate,
  pemToDerList,
} from './certificate.js';
export type { CertificateInput, ParsedCertificate } from './certificate.js';
export {
  ALLOWED_SIGNATURE_ALGORITHMS,
  DEFAULT_MAX_CHAIN_LENGTH,
  verifyCertificateChain,
} from './chain.js';
export type { ChainCertificateReport, ChainResult, VerifyChainOptions } from './chain.js';
