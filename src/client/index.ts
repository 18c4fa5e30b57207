/** The Cloister client SDK (package export `cloister/client`). */
export { connect, CloisterClient, DEFAULT_CLIENT_REQUEST_TIMEOUT_MS, DEFAULT_RECONNECT } from './client.js';
export type { ConnectOptions, RequestOptions, ClassifyOptions, LabelScore, TokenEntity, ReconnectOptions, ClientEvent } from './client.js';
export { developmentPolicy, developmentPolicyFromEvidence, DEV_POLICY_MAX_AGE_SECONDS } from './dev-policy.js';
export type { DevelopmentPolicyInput } from './dev-policy.js';
export { WsClientTransport } from './ws-transport.js';
export { HttpClientTransport } from './http-transport.js';
export type { ClientTransport, SealedExchange, TransportLimits } from './transport.js';
export { CloisterError } from '../errors.js';
export type { ErrorCode } from '../errors.js';
export { createOpenAIClient, SealedStream } from './openai/index.js';
export type { OpenAIClient, OpenAIClientOptions, SealedRequester } from './openai/index.js';
export { startGateway } from './gateway/index.js';
export type { Gateway, GatewayOptions } from './gateway/index.js';
export { parsePolicy } from '../attestation/policy.js';
export { decodeEvidenceFile, encodeEvidenceFile } from '../attestation/evidence-file.js';
export type { EvidenceFile } from '../attestation/evidence-file.js';
export { PcsCollateralFetcher } from '../attestation/tdx/collateral.js';
export type { Policy } from '../attestation/policy.js';
