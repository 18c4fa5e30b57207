/** The in-process ONNX engine: Hugging Face-layout models on onnxruntime-node, local files only. */
export { OnnxEngine } from './engine.js';
export type { OnnxEngineOptions } from './engine.js';
export { modelDigest } from './digest.js';
