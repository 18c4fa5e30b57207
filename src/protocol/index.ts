export {
  DEFAULT_CHUNKED_LIMITS,
  maxSealedRequestLength,
  sealChunkedRequest,
  createChunkedRequestSealer,
  openChunkedRequest,
  ChunkedRequestOpener,
  ChunkedResponseOpener,
} from './chunked.js';
export type { OpenedChunk } from './chunked.js';
export { encodeKeyConfig, decodeKeyConfig, keyConfigDigest, sealTargetFromKeyConfig } from './key-config.js';
export type { KeyConfig } from './key-config.js';
export {
  encodeSealedRequest,
  decodeSealedRequest,
  encodeResponseChunk,
  decodeResponseChunk,
  ReceiptHasher,
  generateReceiptKeyPair,
  signReceipt,
  verifyReceipt,
  padChunkPlaintext,
} from './messages.js';
export type { SealedRequest, ResponseChunk } from './messages.js';
