/** The in-process ONNX engine: Hugging Face-layout models on onnxruntime-node, local files only. */
export { OnnxEngine, ONNX_ENGINE_DEFAULTS } from './engine.js';
export type { ClassLabelScore, OnnxEngineOptions, OnnxEngineStats, OnnxModelConfig, OnnxTask, TokenEntity } from './engine.js';
export { modelDigest, MODEL_DIGEST_LABEL, DEFAULT_MAX_MODEL_FILES } from './digest.js';
export type { ModelDigestOptions } from './digest.js';
