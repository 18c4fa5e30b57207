/** The upstream (OpenAI-compatible HTTP) engine: vLLM, TensorRT-LLM trtllm-serve, SGLang. */
export { UpstreamEngine } from './engine.js';
export type { UpstreamEngineOptions } from './engine.js';
export { UPSTREAM_SERVE_FLAGS, UPSTREAM_SERVE_USAGE, parseExpectation, upstreamFromArgs } from './cli-options.js';
