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
