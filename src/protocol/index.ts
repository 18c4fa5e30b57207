export {
  OHTTP_REQUEST_LABEL,
  OHTTP_RESPONSE_LABEL,
  REQUEST_HEADER_LENGTH,
  encapsulateRequest,
  decapsulateRequest,
  encodeOhttpKeyConfig,
  decodeOhttpKeyConfig,
  responseNonceLength,
  OhttpResponseOpener,
  OhttpResponseSealer,
} from './ohttp.js';
export type { SealTarget, LookupKey, OhttpKeyConfig, EncapsulatedRequest, DecapsulatedRequest } from './ohttp.js';
export {
  CHUNKED_REQUEST_LABEL,
  CHUNKED_RESPONSE_LABEL,
  DEFAULT_CHUNKED_LIMITS,
  DEFAULT_REQUEST_CHUNK_SIZE,
  maxSealedRequestLength,
  sealChunkedRequest,
  createChunkedRequestSealer,
  openChunkedRequest,
  ChunkedRequestSealer,
  ChunkedRequestOpener,
  ChunkedResponseSealer,
  ChunkedResponseOpener,
} from './chunked.js';
export type {
  ChunkedLimits,
  OpenedChunk,
  ChunkedRequestSealerOptions,
  SealedChunkedRequest,
  OpenedChunkedRequest,
} from './chunked.js';
export {
  KEY_CONFIG_VERSION,
  KEY_CONFIG_LIMITS,
  encodeKeyConfig,
  decodeKeyConfig,
  keyConfigDigest,
  sealTargetFromKeyConfig,
} from './key-config.js';
export type { KeyConfig, KeyConfigModel, KeyConfigEngine } from './key-config.js';
export {
  MESSAGE_VERSION,
  OPERATIONS,
  DEFAULT_MESSAGE_LIMITS,
  REQUEST_ID_LENGTH,
  RECEIPT_SIGNATURE_LENGTH,
  encodeSealedRequest,
  decodeSealedRequest,
  encodeResponseChunk,
  decodeResponseChunk,
  ReceiptHasher,
  generateReceiptKeyPair,
  receiptPrivateKeyFromSeed,
  signReceipt,
  verifyReceipt,
  PAD_MIN_BUCKET,
  padBucket,
  padChunkPlaintext,
} from './messages.js';
export type { Operation, SealedRequest, MessageLimits, ResponseChunk, ReceiptKeyPair } from './messages.js';
export type { CborInput } from './cbor.js';
export { checkReceipt, receiptDigests, receiptMessage, receiptFromJson, receiptToJson } from './receipt.js';
export type { ReceiptRecord, CheckReceiptExpect } from './receipt.js';
export { ResponseReader, ResponseWriter } from './response.js';
export type { ChunkOpener, ChunkSealer, ResponseReaderOptions, ResponseWriterOptions } from './response.js';
export { openRequest, sealRequest } from './request.js';
export type { OpenedRequest, RequestKey, SealRequestOptions, SealedExchangeRequest } from './request.js';
