/**
 * One model call over a batch of texts: each text is tokenized alone, padded to the longest
 * in the batch with its padding masked, and post-processed from its own output rows only
 * (postprocess.ts), so batching never changes a result.
 */
import type { ModelInfo } from '../types.js';
import { buildBatchInputs } from './batch-inputs.js';
import { meanPoolNormalized, rankLabels, tokenEntities } from './postprocess.js';
import type { ModelRunner } from './runner.js';
import { isRecord } from '../../core/validate.js';

export type OnnxTask = 'text-classification' | 'feature-extraction' | 'token-classification';

/** A model loaded and checked by ./load.ts. */
export interface LoadedModel {
  readonly info: ModelInfo;
  readonly task: OnnxTask;
  readonly labels: readonly string[];
  readonly runner: ModelRunner;
}

/** The float32 data of a model output of the expected dims (-1: any positive size). */
function floatOutput(tensor: unknown, dims: readonly number[], what: string): Float32Array {
  if (!isRecord(tensor)) throw new TypeError(`${what} output is missing`);
  const got = tensor['dims'];
  const data = tensor['data'];
  if (!Array.isArray(got) || got.length !== dims.length || !(data instanceof Float32Array)) {
    throw new TypeError(`${what} output has the wrong shape`);
  }
  let size = 1;
  dims.forEach((d, k) => {
    const g: unknown = got[k];
    if (typeof g !== 'number' || !Number.isInteger(g) || g < 1 || (d !== -1 && g !== d)) throw new TypeError(`${what} output has the wrong shape`);
    size *= g;
  });
  if (data.length !== size) throw new TypeError(`${what} output has the wrong size`);
  return data;
}

/** One model call over `texts`; one result per text, validated before it is returned. */
export async function inferTexts(model: LoadedModel, texts: string[]): Promise<unknown[]> {
  const runner = model.runner;
  const encoded = runner.encode(texts);
  const needsTypes = runner.inputNames.has('token_type_ids');
  const batch = buildBatchInputs(encoded.ids, needsTypes ? encoded.typeIds : undefined, {
    padId: runner.padId,
    side: runner.paddingSide,
    withTokenTypes: needsTypes,
  });
  const feeds: Record<string, BigInt64Array> = { input_ids: batch.inputIds };
  if (runner.inputNames.has('attention_mask')) feeds['attention_mask'] = batch.attentionMask;
  if (batch.tokenTypeIds !== undefined) feeds['token_type_ids'] = batch.tokenTypeIds;
  const out = await runner.run(feeds, batch.rows, batch.seq);
  const rows = texts.length;
  switch (model.task) {
    case 'text-classification': {
      const n = model.labels.length;
      const logits = floatOutput(out['logits'], [rows, n], 'classification');
      const scratch = new Float32Array(n);
      return texts.map((_, i) => rankLabels(logits, i, model.labels, scratch));
    }
    case 'feature-extraction': {
      // The feature-extraction pipeline pools the first of these outputs the model has.
      const hidden = out['last_hidden_state'] ?? out['logits'] ?? out['token_embeddings'];
      const data = floatOutput(hidden, [rows, batch.seq, -1], 'embedding');
      const dim = data.length / (rows * batch.seq);
      return texts.map((_, i) => meanPoolNormalized(data, i, batch.seq, dim, batch.starts[i] ?? 0, encoded.ids[i]?.length ?? 0));
    }
    case 'token-classification': {
      const n = model.labels.length;
      const logits = floatOutput(out['logits'], [rows, batch.seq, n], 'token');
      const scratch = new Float32Array(n);
      const decode = (id: number): string => runner.decodeToken(id);
      return texts.map((_, i) =>
        tokenEntities(logits, i, batch.seq, model.labels, encoded.ids[i] ?? [], batch.starts[i] ?? 0, decode, scratch),
      );
    }
  }
}
