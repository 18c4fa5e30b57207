/**
 * `cloister serve` flags for the upstream engine, kept here so the serve command only lists
 * them and calls `upstreamFromArgs`.
 */
import { CloisterError } from '../../errors.js';
import { UPSTREAM_KINDS, UpstreamEngine } from './engine.js';
import type { UpstreamEngineOptions, UpstreamKind } from './engine.js';
import { checkUnixSocketPath } from '../../core/unix-socket.js';

/** Value-taking flags (each at most once). */
export const UPSTREAM_SERVE_FLAGS = [
  'upstream',
  'upstream-model',
  'upstream-name',
  'upstream-kind',
  'upstream-socket',
  'upstream-image-digest',
  'upstream-ready-timeout-s',
  'upstream-max-concurrency',
  'upstream-request-timeout-s',
  'upstream-allow-fields',
  'canary-prompt',
  'canary-expect',
  'canary-embeddings',
] as const;

export const UPSTREAM_SERVE_USAGE = `upstream engine (vLLM, TensorRT-LLM trtllm-serve, SGLang) in the same TEE:
  --upstream url                 OpenAI-compatible base URL on loopback, e.g. http://127.0.0.1:8000/v1
  --upstream-model name          the model name the engine serves (required with --upstream)
  --upstream-name name           name clients use (default: --upstream-model)
  --upstream-kind k              vllm | trtllm | sglang | openai (recorded in the key config)
  --upstream-socket path         reach the engine over this Unix socket instead of TCP
  --upstream-image-digest d      engine image digest, recorded in the key config
  --upstream-ready-timeout-s n   wait up to n s for the engine to come up (default 0)
  --upstream-max-concurrency n   requests in flight at the engine (default 64)
  --upstream-request-timeout-s n whole-request deadline (default 600)
  --upstream-allow-fields a,b    request fields to forward beyond the OpenAI allow-list (docs/UPSTREAM.md)
  --canary-prompt text           start-up canary prompt (chat, temperature 0) ...
  --canary-expect text|/re/flags ... and what its answer must contain; a wrong answer stops start-up
  --canary-embeddings a|b|c|min  embeddings canary: sim(a,b) >= min and sim(a,b) > sim(a,c)`;

function intArg(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) < 0) throw new CloisterError('CONFIG_INVALID', `--${name} must be a non-negative integer`);
  return Number(text);
}

/** "/re/flags" is a regular expression; anything else a substring. */
export function parseExpectation(text: string): string | RegExp {
  const m = /^\/(.+)\/([a-z]*)$/s.exec(text);
  if (m === null) return text;
  try {
    return new RegExp(m[1] ?? '', m[2]);
  } catch (cause) {
    throw new CloisterError('CONFIG_INVALID', '--canary-expect is not a valid regular expression', { cause });
  }
}

/** Build the upstream engine from serve flags; undefined when --upstream is absent. */
export function upstreamFromArgs(get: (name: (typeof UPSTREAM_SERVE_FLAGS)[number]) => string | undefined): UpstreamEngine | undefined {
  const baseUrl = get('upstream');
  if (baseUrl === undefined) {
    for (const f of UPSTREAM_SERVE_FLAGS) {
      if (get(f) !== undefined) throw new CloisterError('CONFIG_INVALID', `--${f} needs --upstream`);
    }
    return undefined;
  }
  const model = get('upstream-model');
  if (model === undefined) throw new CloisterError('CONFIG_INVALID', '--upstream needs --upstream-model (the name the engine serves)');
  const kind = get('upstream-kind');
  if (kind !== undefined && !(UPSTREAM_KINDS as readonly string[]).includes(kind)) {
    throw new CloisterError('CONFIG_INVALID', `--upstream-kind must be one of ${UPSTREAM_KINDS.join(', ')}`);
  }
  const prompt = get('canary-prompt');
  const expect = get('canary-expect');
  if ((prompt === undefined) !== (expect === undefined)) throw new CloisterError('CONFIG_INVALID', '--canary-prompt and --canary-expect go together');
  const name = get('upstream-name');
  const socketPath = get('upstream-socket');
  if (socketPath !== undefined) checkUnixSocketPath(socketPath);
  const imageDigest = get('upstream-image-digest');
  const ready = intArg('upstream-ready-timeout-s', get('upstream-ready-timeout-s'));
  const concurrency = intArg('upstream-max-concurrency', get('upstream-max-concurrency'));
  const timeout = intArg('upstream-request-timeout-s', get('upstream-request-timeout-s'));
  const allowFields = get('upstream-allow-fields')?.split(',').map((f) => f.trim()).filter((f) => f !== '');
  const embeddings = get('canary-embeddings');
  let canaryEmbeddings: UpstreamEngineOptions['canaryEmbeddings'];
  if (embeddings !== undefined) {
    const parts = embeddings.split('|');
    const min = Number(parts[3]);
    if (parts.length !== 4 || parts.slice(0, 3).some((p) => p === '') || !Number.isFinite(min)) {
      throw new CloisterError('CONFIG_INVALID', '--canary-embeddings must be "anchor|similar|dissimilar|minSimilarity"');
    }
    canaryEmbeddings = { anchor: parts[0] ?? '', similar: parts[1] ?? '', dissimilar: parts[2] ?? '', minSimilarity: min };
  }
  return new UpstreamEngine({
    baseUrl,
    model,
    ...(name === undefined ? {} : { name }),
    ...(kind === undefined ? {} : { kind: kind as UpstreamKind }),
    ...(socketPath === undefined ? {} : { socketPath }),
    ...(imageDigest === undefined ? {} : { imageDigest }),
    ...(ready === undefined ? {} : { readyTimeoutMs: ready * 1000 }),
    ...(concurrency === undefined ? {} : { maxConcurrency: concurrency }),
    ...(timeout === undefined ? {} : { requestTimeoutMs: timeout * 1000 }),
    ...(prompt === undefined || expect === undefined ? {} : { canaryPrompt: prompt, canaryExpect: parseExpectation(expect) }),
    ...(canaryEmbeddings === undefined ? {} : { canaryEmbeddings }),
    ...(allowFields === undefined ? {} : { allowFields }),
  });
}
