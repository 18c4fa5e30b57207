/** The upstream (OpenAI-compatible HTTP) engine: vLLM, TensorRT-LLM trtllm-serve, SGLang. */
export { UpstreamEngine, UPSTREAM_KINDS, UPSTREAM_OPERATIONS } from './engine.js';
export type { EmbeddingsCanary, UpstreamEngineOptions, UpstreamIdentity, UpstreamKind, UpstreamOperation } from './engine.js';
export { SseParser, DEFAULT_MAX_EVENT_BYTES } from './sse.js';
export type { SseEvent, SseParserOptions } from './sse.js';
export { isLoopbackHost } from './target.js';
export { UPSTREAM_SERVE_FLAGS, UPSTREAM_SERVE_USAGE, parseExpectation, upstreamFromArgs } from './cli-options.js';
