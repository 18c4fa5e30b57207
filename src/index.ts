/**
 * Cloister's server-side and verification API. Client applications import
 * `cloister/client` instead (connect, classify, embed, OpenAI-shaped facade, gateway).
 */
export { CloisterError, ERROR_CODES, isErrorCode, wireCodeOf } from './errors.js';
export type { ErrorCode } from './errors.js';
export {
  verifyEvidence,
  verifyNitroDocument,
  EvidenceVerificationError,
  parsePolicy,
  policyFromJson,
  verifySevSnpEvidence,
  verifyTdxEvidence,
  PLATFORMS,
  encodeEvidenceFile,
  decodeEvidenceFile,
} from './verifier/index.js';
export { createSimulatedAttester, detectPlatform, createTeeAttester } from './attester/index.js';
export type {
  Attester,
  EvidenceBundle,
  EvidenceFile,
  Platform,
  Policy,
  VerificationReport,
  VerifiedClaims,
  VerifiedEvidence,
  VerifyEvidenceOptions,
} from './verifier/index.js';
export { decodeKeyConfig, encodeKeyConfig } from './protocol/index.js';
export type { KeyConfig } from './protocol/index.js';
export { CloisterServer, DEFAULT_LIMITS } from './server/index.js';
export type { CloisterServerOptions, ServerLimits } from './server/index.js';
export { OnnxEngine, modelDigest } from './inference/onnx/index.js';
export type { OnnxEngineOptions } from './inference/onnx/index.js';
export { UpstreamEngine } from './inference/upstream/index.js';
export type { UpstreamEngineOptions } from './inference/upstream/index.js';
export type { Engine, EngineRequest, ModelInfo, Operation } from './inference/types.js';
export { startRelay } from './host/relay.js';
export type { RelayOptions } from './host/relay.js';
