/**
 * The upstream engine's options: what an operator sets (UpstreamEngineOptions) and their
 * validation into one resolved object (CONFIG_INVALID for anything out of range), with the
 * engine identity and model entry for the key config.
 */
import { createHash } from 'node:crypto';
import { CloisterError } from '../../errors.js';
import type { ModelInfo, Operation } from '../types.js';
import type { ClientLimits, ExchangeLimits, UpstreamTarget } from './http.js';
import { DEFAULT_MAX_EVENT_BYTES } from './sse.js';
import { parseTarget } from './target.js';
import { nonNegativeInt, positiveInt } from '../../core/validate.js';

export type UpstreamKind = 'vllm' | 'trtllm' | 'sglang' | 'openai';
export const UPSTREAM_KINDS: readonly UpstreamKind[] = ['vllm', 'trtllm', 'sglang', 'openai'];

export type UpstreamOperation = Extract<Operation, 'chat' | 'completion' | 'embeddings' | 'models'>;
export const UPSTREAM_OPERATIONS: readonly UpstreamOperation[] = ['chat', 'completion', 'embeddings', 'models'];

/** What goes into the key config's `engine` field (PROTOCOL.md section 1, key 13). */
export interface UpstreamIdentity {
  readonly kind: UpstreamKind;
  readonly model: string;
  readonly imageDigest?: string;
}

/** Embeddings canary: `anchor` must be closer to `similar` than `minSimilarity` and than to `dissimilar`. */
export interface EmbeddingsCanary {
  readonly anchor: string;
  readonly similar: string;
  readonly dissimilar: string;
  /** Cosine similarity that anchor/similar must reach, in [-1, 1]. */
  readonly minSimilarity: number;
}

export interface UpstreamEngineOptions {
  /** Base URL of the OpenAI-compatible API, e.g. "http://127.0.0.1:8000/v1". */
  readonly baseUrl: string;
  /** The model name the engine serves (vLLM `--served-model-name`, or the path it loaded). */
  readonly model: string;
  /** Name clients use in sealed requests and that goes into the key config. Default: `model`. */
  readonly name?: string;
  /** Which server this is; recorded in the key config. Default "openai" (generic). */
  readonly kind?: UpstreamKind;
  /** Digest of the engine's container image, recorded in the key config when given. */
  readonly imageDigest?: string;
  /**
   * 32-byte digest for the key config's model entry (e.g. SHA-256 over the weights, computed
   * at image build). Default: SHA-256 over the engine identity (kind, model, image digest),
   * which names the configuration but does not measure the weights.
   */
  readonly modelDigest?: Uint8Array;
  /** Hugging Face style task for the key config. Default "text-generation". */
  readonly task?: string;
  /** Operations offered. Default: chat, completion, embeddings, models. */
  readonly operations?: readonly UpstreamOperation[];
  /** Unix socket of the engine; `baseUrl` then only supplies the path prefix. */
  readonly socketPath?: string;
  /** Allow a non-loopback engine address. Default false: plaintext must not leave the TEE. */
  readonly allowNonLoopback?: boolean;
  /** Whole-request deadline, streams included. Default 600 000. */
  readonly requestTimeoutMs?: number;
  /** TCP / socket connect deadline. Default 5 000. */
  readonly connectTimeoutMs?: number;
  /** Wait for the response head of a streamed request or a GET. Default 60 000. */
  readonly firstByteTimeoutMs?: number;
  /** Largest silence between body bytes (between SSE events). Default 120 000. */
  readonly idleTimeoutMs?: number;
  /** Requests in flight at the engine. Default 64. */
  readonly maxConcurrency?: number;
  /**
   * How long an idle connection to the engine is kept for the next request (HTTP
   * keep-alive); 0 opens a new connection per request. Default 4 000: below the 5 s
   * keep-alive timeout of uvicorn (vLLM, SGLang), so the engine rarely closes a socket
   * Cloister is about to reuse.
   */
  readonly keepAliveTimeoutMs?: number;
  /** Requests waiting for a slot; beyond this OVERLOADED. Default 256. */
  readonly maxQueued?: number;
  /** Largest response body (a whole stream included). Default 64 MiB. */
  readonly maxResponseBytes?: number;
  /** Largest single SSE event. Default 1 MiB. */
  readonly maxEventBytes?: number;
  /** Retries of idempotent requests (models, embeddings) that failed before any result. Default 2. */
  readonly maxRetries?: number;
  /** First retry delay, doubled each time. Default 200. */
  readonly retryDelayMs?: number;
  /** How long start() keeps polling /v1/models for the engine to come up. Default 0 (one try). */
  readonly readyTimeoutMs?: number;
  /** Poll interval while waiting for readiness. Default 1 000. */
  readonly readyPollMs?: number;
  /** Start-up canary prompt (chat, temperature 0). Requires canaryExpect. */
  readonly canaryPrompt?: string;
  /** Substring, or regular expression, the canary answer must contain. */
  readonly canaryExpect?: string | RegExp;
  /** Which endpoint the canary prompt goes to. Default "chat". */
  readonly canaryOp?: 'chat' | 'completion';
  /** max_tokens for the canary. Default 32. */
  readonly canaryMaxTokens?: number;
  /** Embeddings canary, for embedding models. */
  readonly canaryEmbeddings?: EmbeddingsCanary;
  /**
   * Request fields clients may send beyond the per-operation allow-list (./fields.ts), e.g.
   * an engine's sampling extension such as "min_p". Default none. Each one is forwarded to
   * the engine as sent: allow only fields that cannot make the engine fetch or read anything.
   */
  readonly allowFields?: readonly string[];
}

/** The options once validated, with defaults applied. */
export interface ResolvedUpstreamOptions {
  readonly model: string;
  readonly name: string;
  readonly kind: UpstreamKind;
  readonly operations: ReadonlySet<UpstreamOperation>;
  readonly target: UpstreamTarget;
  readonly client: ClientLimits;
  readonly maxConcurrency: number;
  readonly maxQueued: number;
  readonly requestTimeoutMs: number;
  readonly limits: ExchangeLimits;
  readonly maxEventBytes: number;
  readonly maxRetries: number;
  readonly retryDelayMs: number;
  readonly readyTimeoutMs: number;
  readonly readyPollMs: number;
  readonly allowFields: ReadonlySet<string>;
  readonly identity: UpstreamIdentity;
  readonly info: ModelInfo;
}

/** Validate `options` and apply the defaults (UPSTREAM.md lists them). */
export function resolveOptions(options: UpstreamEngineOptions): ResolvedUpstreamOptions {
  if (typeof options.model !== 'string' || options.model === '') {
    throw new CloisterError('CONFIG_INVALID', 'upstream model name is required');
  }
  const kind = options.kind ?? 'openai';
  if (!UPSTREAM_KINDS.includes(kind)) throw new CloisterError('CONFIG_INVALID', 'unknown upstream kind');
  const operations = options.operations ?? UPSTREAM_OPERATIONS;
  if (operations.length === 0 || operations.some((op) => !UPSTREAM_OPERATIONS.includes(op))) {
    throw new CloisterError('CONFIG_INVALID', 'upstream operations must be a non-empty subset of chat, completion, embeddings, models');
  }
  const target = parseTarget(options);
  for (const f of options.allowFields ?? []) {
    if (typeof f !== 'string' || !/^[a-z][a-z0-9_]{0,63}$/.test(f)) throw new CloisterError('CONFIG_INVALID', `upstream allowFields: '${String(f)}' is not a field name`);
  }
  const requestTimeoutMs = positiveInt('requestTimeoutMs', options.requestTimeoutMs, 600_000);
  const limits: ExchangeLimits = {
    connectTimeoutMs: positiveInt('connectTimeoutMs', options.connectTimeoutMs, 5_000),
    firstByteTimeoutMs: positiveInt('firstByteTimeoutMs', options.firstByteTimeoutMs, 60_000),
    idleTimeoutMs: positiveInt('idleTimeoutMs', options.idleTimeoutMs, 120_000),
    maxResponseBytes: positiveInt('maxResponseBytes', options.maxResponseBytes, 64 * 1024 * 1024),
  };
  const maxEventBytes = positiveInt('maxEventBytes', options.maxEventBytes, DEFAULT_MAX_EVENT_BYTES);
  const maxRetries = nonNegativeInt('maxRetries', options.maxRetries, 2);
  const retryDelayMs = nonNegativeInt('retryDelayMs', options.retryDelayMs, 200);
  const readyTimeoutMs = nonNegativeInt('readyTimeoutMs', options.readyTimeoutMs, 0);
  const readyPollMs = positiveInt('readyPollMs', options.readyPollMs, 1_000);
  const maxConcurrency = positiveInt('maxConcurrency', options.maxConcurrency, 64);
  const maxQueued = nonNegativeInt('maxQueued', options.maxQueued, 256);
  // The gate already bounds requests in flight; the pool's bound only repeats it.
  const client: ClientLimits = {
    connectTimeoutMs: limits.connectTimeoutMs,
    keepAliveTimeoutMs: nonNegativeInt('keepAliveTimeoutMs', options.keepAliveTimeoutMs, 4_000),
    maxConnections: maxConcurrency,
  };
  if ((options.canaryPrompt === undefined) !== (options.canaryExpect === undefined)) {
    throw new CloisterError('CONFIG_INVALID', 'canaryPrompt and canaryExpect go together');
  }
  if (options.canaryEmbeddings !== undefined) {
    const m = options.canaryEmbeddings.minSimilarity;
    if (typeof m !== 'number' || !(m >= -1 && m <= 1)) {
      throw new CloisterError('CONFIG_INVALID', 'canaryEmbeddings.minSimilarity must be in [-1, 1]');
    }
  }
  if (options.imageDigest !== undefined && options.imageDigest === '') {
    throw new CloisterError('CONFIG_INVALID', 'imageDigest must not be empty');
  }
  const identity: UpstreamIdentity = {
    kind,
    model: options.model,
    ...(options.imageDigest === undefined ? {} : { imageDigest: options.imageDigest }),
  };
  const name = options.name ?? options.model;
  return {
    model: options.model,
    name,
    kind,
    operations: new Set(operations),
    target,
    client,
    maxConcurrency,
    maxQueued,
    requestTimeoutMs,
    limits,
    maxEventBytes,
    maxRetries,
    retryDelayMs,
    readyTimeoutMs,
    readyPollMs,
    allowFields: new Set(options.allowFields ?? []),
    identity,
    info: {
      name,
      task: options.task ?? 'text-generation',
      operations: [...operations],
      digest: modelDigestOf(options, kind),
    },
  };
}

/** The key config's model digest: the operator's, or SHA-256 over the engine identity. */
function modelDigestOf(options: UpstreamEngineOptions, kind: UpstreamKind): Uint8Array {
  if (options.modelDigest === undefined) {
    return new Uint8Array(
      createHash('sha256')
        .update(`cloister/upstream-identity/v1\0${kind}\0${options.model}\0${options.imageDigest ?? ''}`)
        .digest(),
    );
  }
  if (!(options.modelDigest instanceof Uint8Array) || options.modelDigest.length !== 32) {
    throw new CloisterError('CONFIG_INVALID', 'modelDigest must be exactly 32 bytes');
  }
  return options.modelDigest.slice();
}
