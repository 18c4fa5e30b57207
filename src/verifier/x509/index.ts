/** Certificate parsing and chain verification shared by every attestation platform. */
export { verifyCertificateChain } from './chain.js';
