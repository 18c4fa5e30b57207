/**
 * Start-up canaries (DESIGN.md "Engines", upstream): a known prompt with a known answer, or
 * embeddings that must separate similar from dissimilar text. A wrong answer means the engine
 * is broken or not the model it claims to be: the engine refuses to serve (fail closed,
 * ENGINE_UNAVAILABLE). The answer itself never goes into an error, only its length.
 */
import { CloisterError } from '../../errors.js';
import type { EmbeddingsCanary, UpstreamEngineOptions, UpstreamOperation } from './options.js';
import { positiveInt } from '../../core/validate.js';

/** One non-streamed call to the engine; the caller wraps failures. */
export type CanaryCall = (op: UpstreamOperation, body: Record<string, unknown>) => Promise<Record<string, unknown>>;

/** Run the canaries `options` configure (none: nothing to do). */
export async function runCanaries(options: UpstreamEngineOptions, model: string, call: CanaryCall): Promise<void> {
  if (options.canaryPrompt !== undefined && options.canaryExpect !== undefined) {
    await textCanary(options, model, options.canaryPrompt, options.canaryExpect, call);
  }
  if (options.canaryEmbeddings !== undefined) await embeddingsCanary(options.canaryEmbeddings, model, call);
}

async function textCanary(options: UpstreamEngineOptions, model: string, prompt: string, expect: string | RegExp, call: CanaryCall): Promise<void> {
  const op = options.canaryOp ?? 'chat';
  const maxTokens = positiveInt('canaryMaxTokens', options.canaryMaxTokens, 32);
  const body: Record<string, unknown> = op === 'chat'
    ? { messages: [{ role: 'user', content: prompt }] }
    : { prompt };
  Object.assign(body, { model, max_tokens: maxTokens, temperature: 0, stream: false });
  const result = await call(op, body);
  const choice = Array.isArray(result['choices']) ? (result['choices'][0] as unknown) : undefined;
  let answer: unknown;
  if (typeof choice === 'object' && choice !== null) {
    const c = choice as Record<string, unknown>;
    if (op === 'chat') {
      const message = c['message'];
      answer = typeof message === 'object' && message !== null ? (message as Record<string, unknown>)['content'] : undefined;
    } else {
      answer = c['text'];
    }
  }
  if (typeof answer !== 'string') {
    throw new CloisterError('ENGINE_UNAVAILABLE', 'upstream canary failed: the engine returned no answer text');
  }
  const ok = typeof expect === 'string' ? answer.includes(expect) : new RegExp(expect.source, expect.flags.replace(/[gy]/g, '')).test(answer);
  if (!ok) {
    // The answer itself is not put in the error: only its length (no content in diagnostics).
    throw new CloisterError('ENGINE_UNAVAILABLE', 'upstream canary failed: the engine answered the canary prompt wrongly; refusing to serve', {
      detail: { canary: op, answerLength: answer.length },
    });
  }
}

async function embeddingsCanary(canary: EmbeddingsCanary, model: string, call: CanaryCall): Promise<void> {
  const result = await call('embeddings', {
    model,
    input: [canary.anchor, canary.similar, canary.dissimilar],
  });
  const vectors = embeddingVectors(result, 3);
  if (vectors === undefined) {
    throw new CloisterError('ENGINE_UNAVAILABLE', 'upstream canary failed: the engine returned malformed embeddings');
  }
  const [a, s, d] = vectors as [number[], number[], number[]];
  const near = cosine(a, s);
  const far = cosine(a, d);
  if (!(near >= canary.minSimilarity) || !(near > far)) {
    throw new CloisterError('ENGINE_UNAVAILABLE', 'upstream canary failed: embeddings do not separate similar from dissimilar text; refusing to serve', {
      detail: { similar: round(near), dissimilar: round(far), minSimilarity: canary.minSimilarity },
    });
  }
}

function embeddingVectors(result: Record<string, unknown>, count: number): number[][] | undefined {
  const data = result['data'];
  if (!Array.isArray(data) || data.length !== count) return undefined;
  const out: (number[] | undefined)[] = new Array<number[] | undefined>(count).fill(undefined);
  for (const [i, entry] of (data as unknown[]).entries()) {
    if (typeof entry !== 'object' || entry === null) return undefined;
    const e = entry as Record<string, unknown>;
    const index = typeof e['index'] === 'number' ? e['index'] : i;
    const v = e['embedding'];
    if (!Number.isInteger(index) || index < 0 || index >= count || out[index] !== undefined) return undefined;
    if (!Array.isArray(v) || v.length === 0 || !(v as unknown[]).every((x) => typeof x === 'number' && Number.isFinite(x))) return undefined;
    out[index] = v as number[];
  }
  const vectors = out.filter((v): v is number[] => v !== undefined);
  const dim = vectors[0]?.length;
  if (vectors.length !== count || vectors.some((v) => v.length !== dim)) return undefined;
  return vectors;
}

function cosine(a: readonly number[], b: readonly number[]): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  if (na === 0 || nb === 0) return Number.NaN; // a zero vector is garbage: fails every check
  return dot / Math.sqrt(na * nb);
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
