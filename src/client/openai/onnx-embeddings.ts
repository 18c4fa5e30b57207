/**
 * OpenAI embeddings on an in-TEE ONNX feature-extraction model: its sealed operation is
 * `embed` (texts in, vectors out), answered here in OpenAI's /v1/embeddings shape. Shared by
 * the gateway and the in-process facade.
 *
 * `input`: a string or an array of strings (token-id arrays need the model's own tokenizer
 * ids: refused); `encoding_format`: "float" (default) or "base64" (each vector as
 * little-endian float32, base64-encoded, as OpenAI defines it; the openai package asks for it
 * by default); `dimensions` is refused. `usage` counts are 0: the engine reports none.
 */
import { CloisterError } from '../../errors.js';
import type { CreateEmbeddingResponse, SealedRequester } from './types.js';

/** Whether `model` is, per the verified key config, an ONNX feature-extraction model. */
export function isOnnxEmbedder(sealed: SealedRequester, model: string): boolean {
  return sealed.models?.().find((m) => m.name === model)?.task === 'feature-extraction';
}

export async function embedWithOnnx(
  sealed: SealedRequester,
  model: string,
  body: Readonly<Record<string, unknown>>,
  signal?: AbortSignal,
): Promise<CreateEmbeddingResponse> {
  const raw = body['input'];
  const texts = typeof raw === 'string' ? [raw] : Array.isArray(raw) && raw.every((t) => typeof t === 'string') ? (raw as string[]) : undefined;
  if (texts === undefined) {
    throw new CloisterError('INVALID_ARGUMENT', `'input' must be a string or an array of strings for the ${model} (feature-extraction) model`);
  }
  if (texts.length === 0 || texts.some((t) => t === '')) throw new CloisterError('INVALID_ARGUMENT', "'input' must not be empty, nor contain an empty string");
  const format = body['encoding_format'] ?? 'float';
  if (format !== 'float' && format !== 'base64') throw new CloisterError('INVALID_ARGUMENT', "'encoding_format' must be \"float\" or \"base64\"");
  if (body['dimensions'] !== undefined) throw new CloisterError('INVALID_ARGUMENT', `'dimensions' is not supported by the ${model} (feature-extraction) model`);
  const results: unknown[] = [];
  for await (const r of sealed.request({ op: 'embed', model, input: texts, ...(signal === undefined ? {} : { signal }) })) results.push(r);
  const vectors = results[0];
  if (results.length !== 1 || !Array.isArray(vectors) || vectors.length !== texts.length || !vectors.every((v) => Array.isArray(v) && v.every((x) => typeof x === 'number'))) {
    throw new CloisterError('PROTOCOL_VIOLATION', 'embedding result has the wrong shape');
  }
  const data = (vectors as number[][]).map((v, index) => ({
    object: 'embedding' as const,
    index,
    embedding: format === 'float' ? v : float32LeBase64(v),
  }));
  return { object: 'list', data, model, usage: { prompt_tokens: 0, total_tokens: 0 } };
}

function float32LeBase64(v: readonly number[]): string {
  const b = Buffer.alloc(v.length * 4);
  v.forEach((x, i) => b.writeFloatLE(x, i * 4));
  return b.toString('base64');
}
