/**
 * What a client may ask of the upstream engine: an allow-list of OpenAI request fields per
 * operation. Everything else the client sends is refused (INVALID_ARGUMENT), not forwarded.
 *
 * Why: the engine runs inside the TEE with the TEE's network view. Fields such as vLLM's
 * multimodal `image_url` / `video_url` / `audio_url` parts with an http(s) URL, or
 * engine-specific extensions (guided decoding grammars read from paths, LoRA adapter
 * names, `kv_transfer_params`), would let any client make the TEE issue requests to
 * internal addresses or reach engine features the operator never meant to expose. Media
 * parts are accepted only inline (`data:` URLs); text parts always.
 *
 * The lists follow the OpenAI API reference (Chat Completions, Completions, Embeddings),
 * minus fields that only make sense for OpenAI's own service (`store`, `metadata`,
 * `service_tier`, `prediction`, `web_search_options`, `audio`, `modalities`). An operator
 * can allow more with UpstreamEngineOptions.allowFields (`cloister serve --upstream-allow-field`).
 */
import { CloisterError } from '../../errors.js';
import type { UpstreamOperation } from './engine.js';

const SAMPLING = [
  'max_tokens', 'temperature', 'top_p', 'n', 'stop', 'presence_penalty', 'frequency_penalty', 'seed', 'logit_bias', 'logprobs', 'user', 'stream', 'stream_options',
] as const;

const ALLOWED_FIELDS: Readonly<Record<Exclude<UpstreamOperation, 'models'>, ReadonlySet<string>>> = {
  chat: new Set([
    ...SAMPLING, 'messages', 'model', 'max_completion_tokens', 'top_logprobs', 'response_format', 'tools', 'tool_choice', 'parallel_tool_calls', 'reasoning_effort',
  ]),
  completion: new Set([...SAMPLING, 'prompt', 'model', 'echo', 'best_of', 'suffix']),
  // 'stream' is accepted and dropped: embeddings never stream.
  embeddings: new Set(['input', 'model', 'encoding_format', 'dimensions', 'user', 'stream']),
};

/** Content part types of a chat message, and which carry a URL that must be inline. */
const TEXT_PARTS = new Set(['text', 'refusal']);
const MEDIA_PARTS: Readonly<Record<string, string>> = { image_url: 'image_url', input_audio: 'input_audio', video_url: 'video_url', audio_url: 'audio_url', file: 'file' };

function refuse(why: string, field: string, op: string): CloisterError {
  return new CloisterError('INVALID_ARGUMENT', `upstream ${op} request: ${why}`, { detail: { field, op } });
}

/** Throws INVALID_ARGUMENT for any field or content part the operation does not allow. */
export function checkUpstreamBody(op: Exclude<UpstreamOperation, 'models'>, body: Readonly<Record<string, unknown>>, extra: ReadonlySet<string> = new Set()): void {
  const allowed = ALLOWED_FIELDS[op];
  for (const key of Object.keys(body)) {
    if (!allowed.has(key) && !extra.has(key)) throw refuse(`field '${key}' is not allowed (see docs/UPSTREAM.md, allowed fields)`, key, op);
  }
  if (op !== 'chat') return;
  const messages = body['messages'];
  if (!Array.isArray(messages)) return; // the engine refuses a malformed body itself
  for (const m of messages) {
    if (typeof m !== 'object' || m === null) continue;
    const content = (m as Record<string, unknown>)['content'];
    if (!Array.isArray(content)) continue;
    for (const part of content) {
      if (typeof part !== 'object' || part === null) throw refuse('a content part must be an object', 'messages', op);
      const type = (part as Record<string, unknown>)['type'];
      if (typeof type !== 'string') throw refuse('a content part needs a type', 'messages', op);
      if (TEXT_PARTS.has(type)) continue;
      const key = MEDIA_PARTS[type];
      if (key === undefined) throw refuse(`content part type '${type}' is not allowed`, 'messages', op);
      if (!inlineOnly((part as Record<string, unknown>)[key])) {
        throw refuse(`content part '${type}' must carry its data inline (a data: URL), never a URL the TEE would fetch`, 'messages', op);
      }
    }
  }
}

/** True when every URL inside `v` (a `url` or `file_data` field, at any depth) is a data: URL. */
function inlineOnly(v: unknown, depth = 0): boolean {
  if (depth > 4) return false;
  if (typeof v === 'string') return v.startsWith('data:');
  if (typeof v !== 'object' || v === null) return true;
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    if (k === 'url' || k === 'file_url') {
      if (typeof x !== 'string' || !x.startsWith('data:')) return false;
    } else if (k === 'file_id') {
      return false; // a reference to storage outside the request
    } else if (!inlineOnly(x, depth + 1) && typeof x === 'object') {
      return false;
    }
  }
  return true;
}
