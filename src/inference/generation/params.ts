/**
 * The OpenAI request bodies the generation engine answers (`/v1/chat/completions` as op
 * `chat`, `/v1/completions` as op `completion`), checked field by field. Unknown fields are
 * refused, not ignored: a client must not believe a parameter took effect when it did not.
 *
 * Errors name the field and the allowed range, never the value the client sent (it came
 * from inside the sealed request); they are raised content-free (`detail.public`), so the
 * client reads the reason in its sealed error chunk.
 */
import { CloisterError } from '../../errors.js';

export type GenerationOp = 'chat' | 'completion';

export interface ChatMessage {
  readonly role: 'system' | 'user' | 'assistant';
  readonly content: string;
}

export interface GenerationRequest {
  readonly op: GenerationOp;
  /** chat: the messages; completion: undefined. */
  readonly messages?: readonly ChatMessage[];
  /** completion: the prompt; chat: undefined. */
  readonly prompt?: string;
  /** max_tokens / max_completion_tokens; undefined: up to the KV cache bound. */
  readonly maxTokens: number | undefined;
  /** Undefined: the model's generation_config.json decides. */
  readonly temperature: number | undefined;
  readonly topP: number | undefined;
  readonly topK: number | undefined;
  readonly seed: number | undefined;
  readonly stop: readonly string[];
  readonly presencePenalty: number;
  readonly frequencyPenalty: number;
  /** stream_options.include_usage. */
  readonly includeUsage: boolean;
}

export interface ParamLimits {
  /** Most characters of prompt text (all messages together). */
  readonly maxInputChars: number;
  /** Most chat messages. */
  readonly maxMessages: number;
  /** Most stop sequences, and the longest one in characters. */
  readonly maxStopSequences: number;
  readonly maxStopChars: number;
}

const COMMON = ['model', 'stream', 'stream_options', 'max_tokens', 'temperature', 'top_p', 'top_k', 'seed', 'stop', 'presence_penalty', 'frequency_penalty', 'n', 'user', 'logprobs'];
const ALLOWED: Readonly<Record<GenerationOp, ReadonlySet<string>>> = {
  chat: new Set([...COMMON, 'messages', 'max_completion_tokens']),
  completion: new Set([...COMMON, 'prompt']),
};
const ROLES: ReadonlySet<string> = new Set(['system', 'user', 'assistant']);

function bad(message: string, field: string): CloisterError {
  return new CloisterError('INVALID_ARGUMENT', message, { detail: { field, public: true } });
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

function numberIn(body: Record<string, unknown>, field: string, min: number, max: number, open = false): number | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (open && v === min)) {
    throw bad(`${field} must be a number ${open ? 'above' : 'from'} ${min} ${open ? 'and up to' : 'to'} ${max}`, field);
  }
  return v;
}

function intIn(body: Record<string, unknown>, field: string, min: number, max: number): number | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) throw bad(`${field} must be an integer from ${min} to ${max}`, field);
  return v;
}

function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw bad('a message content must be a string or a list of text parts', 'messages');
  let text = '';
  for (const part of content) {
    if (!isRecord(part) || part['type'] !== 'text' || typeof part['text'] !== 'string') {
      throw bad('only text content parts are supported by this model', 'messages');
    }
    text += part['text'];
  }
  return text;
}

/** Parses and checks an OpenAI chat or completion body (params override body fields). */
export function parseGenerationRequest(op: GenerationOp, input: unknown, params: Readonly<Record<string, unknown>>, limits: ParamLimits): GenerationRequest {
  if (!isRecord(input)) throw bad(`a ${op} request must be an OpenAI-shaped JSON object`, 'input');
  const body: Record<string, unknown> = { ...input, ...params };
  for (const key of Object.keys(body)) {
    // The field name is not echoed: it came from inside the sealed request.
    if (!ALLOWED[op].has(key)) throw bad(`a request field is not supported by this model; supported: ${[...ALLOWED[op]].join(', ')}`, 'unknown');
  }
  const n = intIn(body, 'n', 1, 1);
  void n;
  if (body['logprobs'] !== undefined && body['logprobs'] !== null && body['logprobs'] !== false) throw bad('logprobs are not supported by this model', 'logprobs');
  let chars = 0;
  let messages: ChatMessage[] | undefined;
  let prompt: string | undefined;
  if (op === 'chat') {
    const list = body['messages'];
    if (!Array.isArray(list) || list.length === 0) throw bad('messages must be a non-empty list', 'messages');
    if (list.length > limits.maxMessages) {
      throw new CloisterError('LIMIT_EXCEEDED', `${list.length} messages exceed maxMessages (${limits.maxMessages})`, {
        detail: { limit: 'maxMessages', max: limits.maxMessages, public: true },
      });
    }
    messages = list.map((m) => {
      if (!isRecord(m) || typeof m['role'] !== 'string' || !ROLES.has(m['role'])) throw bad('every message needs a role: system, user or assistant', 'messages');
      const content = textOf(m['content']);
      chars += content.length;
      return { role: m['role'] as ChatMessage['role'], content };
    });
  } else {
    const p = body['prompt'];
    const one = Array.isArray(p) && p.length === 1 ? (p[0] as unknown) : p;
    if (typeof one !== 'string') throw bad('prompt must be a string (or a list of one string)', 'prompt');
    prompt = one;
    chars = one.length;
  }
  if (chars > limits.maxInputChars) {
    throw new CloisterError('LIMIT_EXCEEDED', `a prompt of ${chars} characters exceeds maxInputChars (${limits.maxInputChars}; serve --max-input-chars)`, {
      detail: { limit: 'maxInputChars', max: limits.maxInputChars, public: true },
    });
  }
  const maxTokens = intIn(body, op === 'chat' && body['max_completion_tokens'] !== undefined ? 'max_completion_tokens' : 'max_tokens', 1, Number.MAX_SAFE_INTEGER);
  let stop: string[] = [];
  const s = body['stop'];
  if (typeof s === 'string') stop = [s];
  else if (Array.isArray(s)) stop = s.map((x) => (typeof x === 'string' ? x : ''));
  else if (s !== undefined && s !== null) throw bad('stop must be a string or a list of strings', 'stop');
  if (stop.length > limits.maxStopSequences || stop.some((x) => x.length === 0 || x.length > limits.maxStopChars)) {
    throw bad(`stop takes at most ${limits.maxStopSequences} non-empty strings of at most ${limits.maxStopChars} characters`, 'stop');
  }
  const so = body['stream_options'];
  if (so !== undefined && so !== null && !isRecord(so)) throw bad('stream_options must be an object', 'stream_options');
  const includeUsage = isRecord(so) && so['include_usage'] === true;
  return {
    op,
    ...(messages === undefined ? {} : { messages }),
    ...(prompt === undefined ? {} : { prompt }),
    maxTokens,
    temperature: numberIn(body, 'temperature', 0, 2),
    topP: numberIn(body, 'top_p', 0, 1, true),
    topK: intIn(body, 'top_k', 0, 1_000_000),
    seed: intIn(body, 'seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER),
    stop,
    presencePenalty: numberIn(body, 'presence_penalty', -2, 2) ?? 0,
    frequencyPenalty: numberIn(body, 'frequency_penalty', -2, 2) ?? 0,
    includeUsage,
  };
}
