/**
 * The two demo ONNX graphs. Both take the BERT-style inputs transformers.js feeds an encoder
 * (`input_ids`, `attention_mask`, int64 [batch, sequence]) and name their outputs the way its
 * model classes read them: `logits` for *ForSequenceClassification, `last_hidden_state` for
 * the base model used by the feature-extraction pipeline.
 */
import {
  encodeOnnxModel,
  float32Raw,
  int64Raw,
  ONNX_FLOAT,
  ONNX_INT64,
  type NodeSpec,
  type TensorInit,
  type ValueSpec,
} from './onnx-proto.js';
import type { ClassifierWeights } from './train.js';

const BATCH = 'batch_size';
const SEQ = 'sequence_length';

const INPUTS: readonly ValueSpec[] = [
  { name: 'input_ids', elemType: ONNX_INT64, shape: [BATCH, SEQ] },
  { name: 'attention_mask', elemType: ONNX_INT64, shape: [BATCH, SEQ] },
];

/** Embedding lookup and the float mask, shared by both graphs. */
function embedNodes(): NodeSpec[] {
  return [
    { name: 'embed', opType: 'Gather', inputs: ['embeddings.weight', 'input_ids'], outputs: ['token_embeddings'] },
    // Cast.to = TensorProto.FLOAT
    { name: 'mask_float', opType: 'Cast', inputs: ['attention_mask'], outputs: ['mask_f'], intAttrs: { to: ONNX_FLOAT } },
    { name: 'mask_unsqueeze', opType: 'Unsqueeze', inputs: ['mask_f', 'axis_last'], outputs: ['mask_3d'] },
    { name: 'mask_apply', opType: 'Mul', inputs: ['token_embeddings', 'mask_3d'], outputs: ['masked_embeddings'] },
  ];
}

function embedInitializers(w: ClassifierWeights): TensorInit[] {
  return [
    { name: 'embeddings.weight', dims: [w.vocabSize, w.dim], dataType: ONNX_FLOAT, raw: float32Raw(w.embeddings) },
    { name: 'axis_last', dims: [1], dataType: ONNX_INT64, raw: int64Raw([2]) },
  ];
}

/**
 * logits = (sum_t mask_t * E[id_t]) / max(sum_t mask_t, eps) @ W + b
 * (opset 13+ ReduceSum and Unsqueeze take their axes as an input tensor).
 */
export function classifierOnnx(w: ClassifierWeights, metadata: Readonly<Record<string, string>>, version: string): Uint8Array {
  const nodes: NodeSpec[] = [
    ...embedNodes(),
    { name: 'sum_tokens', opType: 'ReduceSum', inputs: ['masked_embeddings', 'axis_seq'], outputs: ['summed'], intAttrs: { keepdims: 0 } },
    { name: 'count_tokens', opType: 'ReduceSum', inputs: ['mask_3d', 'axis_seq'], outputs: ['count'], intAttrs: { keepdims: 0 } },
    { name: 'count_floor', opType: 'Max', inputs: ['count', 'min_count'], outputs: ['count_safe'] },
    { name: 'mean_pool', opType: 'Div', inputs: ['summed', 'count_safe'], outputs: ['pooled'] },
    { name: 'classifier_matmul', opType: 'MatMul', inputs: ['pooled', 'classifier.weight'], outputs: ['projected'] },
    { name: 'classifier_bias', opType: 'Add', inputs: ['projected', 'classifier.bias'], outputs: ['logits'] },
  ];
  const initializers: TensorInit[] = [
    ...embedInitializers(w),
    { name: 'axis_seq', dims: [1], dataType: ONNX_INT64, raw: int64Raw([1]) },
    { name: 'min_count', dims: [], dataType: ONNX_FLOAT, raw: float32Raw([1e-9]) },
    { name: 'classifier.weight', dims: [w.dim, w.numLabels], dataType: ONNX_FLOAT, raw: float32Raw(w.weight) },
    { name: 'classifier.bias', dims: [w.numLabels], dataType: ONNX_FLOAT, raw: float32Raw(w.bias) },
  ];
  return encodeOnnxModel(
    {
      name: 'cloister_demo_classifier',
      docString: 'Mean-pooled token embeddings followed by a linear classifier (fastText style).',
      nodes,
      initializers,
      inputs: INPUTS,
      outputs: [{ name: 'logits', elemType: ONNX_FLOAT, shape: [BATCH, w.numLabels] }],
      metadata,
    },
    version,
  );
}

/** last_hidden_state = mask * E[input_ids]: the classifier's encoder without its head. */
export function embedderOnnx(w: ClassifierWeights, metadata: Readonly<Record<string, string>>, version: string): Uint8Array {
  return encodeOnnxModel(
    {
      name: 'cloister_demo_embedder',
      docString: 'Token embeddings of the demo classifier, masked; mean-pool them for a sentence embedding.',
      nodes: [
        ...embedNodes(),
        { name: 'output', opType: 'Identity', inputs: ['masked_embeddings'], outputs: ['last_hidden_state'] },
      ],
      initializers: embedInitializers(w),
      inputs: INPUTS,
      outputs: [{ name: 'last_hidden_state', elemType: ONNX_FLOAT, shape: [BATCH, SEQ, w.dim] }],
      metadata,
    },
    version,
  );
}
