/**
 * OpenAI-shaped request and response types, kept deliberately loose: the bodies pass
 * through to the OpenAI-compatible engine inside the TEE unchanged (except `model`, which
 * the engine forces). Only the fields this facade reads are named; the rest ride along.
 */
import type { Operation } from '../../inference/types.js';

/** What the facade needs from the core SDK: its generic sealed request. */
export interface SealedRequester {
  request(request: SealedRequestInput): AsyncIterable<unknown>;
  /** The models of the verified key config (CloisterClient.models()). */
  models?(): readonly { readonly name: string; readonly task: string }[];
}

/** Shaped like the core SDK's OpenAIRequestOptions (src/client/client.ts), so a CloisterClient fits. */
export interface SealedRequestInput {
  readonly op: Operation;
  readonly model: string;
  /** A JSON-like value (the OpenAI body); it travels as CBOR inside the sealed request. */
  readonly input: unknown;
  readonly params?: Readonly<Record<string, unknown>>;
  readonly stream?: boolean;
  readonly signal?: AbortSignal;
  /** The server's signed report (output guard, retrieval facts), when it sends one. */
  readonly onReport?: (report: unknown) => void;
}

export interface OpenAIRequestOptions {
  /** Cancels the sealed request (and, inside the TEE, the engine's work on it). */
  readonly signal?: AbortSignal;
}

interface ChatMessage {
  readonly role: string;
  readonly content?: unknown;
  readonly [key: string]: unknown;
}

export interface ChatCompletionCreateParams {
  /** Model name from the server's key config; defaults to the client's `model` option. */
  readonly model?: string;
  readonly messages: readonly ChatMessage[];
  readonly stream?: boolean | null;
  readonly [key: string]: unknown;
}

export interface CompletionCreateParams {
  readonly model?: string;
  readonly prompt: unknown;
  readonly stream?: boolean | null;
  readonly [key: string]: unknown;
}

export interface EmbeddingCreateParams {
  readonly model?: string;
  readonly input: unknown;
  readonly [key: string]: unknown;
}

export interface ChatCompletion {
  readonly id: string;
  readonly object: 'chat.completion';
  readonly created: number;
  readonly model: string;
  readonly choices: readonly {
    readonly index: number;
    readonly message: { readonly role: string; readonly content: string | null; readonly [key: string]: unknown };
    readonly finish_reason: string | null;
    readonly [key: string]: unknown;
  }[];
  readonly usage?: Readonly<Record<string, unknown>>;
  readonly [key: string]: unknown;
}

export interface ChatCompletionChunk {
  readonly id: string;
  readonly object: 'chat.completion.chunk';
  readonly created: number;
  readonly model: string;
  readonly choices: readonly {
    readonly index: number;
    readonly delta: { readonly role?: string; readonly content?: string | null; readonly [key: string]: unknown };
    readonly finish_reason: string | null;
    readonly [key: string]: unknown;
  }[];
  readonly [key: string]: unknown;
}

export interface Completion {
  readonly id: string;
  readonly object: 'text_completion';
  readonly created: number;
  readonly model: string;
  readonly choices: readonly {
    readonly index: number;
    readonly text: string;
    readonly finish_reason: string | null;
    readonly [key: string]: unknown;
  }[];
  readonly [key: string]: unknown;
}

export interface CreateEmbeddingResponse {
  readonly object: 'list';
  readonly model: string;
  readonly data: readonly { readonly object: 'embedding'; readonly index: number; readonly embedding: readonly number[] | string }[];
  readonly usage?: Readonly<Record<string, unknown>>;
  readonly [key: string]: unknown;
}

export interface ModelList {
  readonly object: 'list';
  readonly data: readonly { readonly id: string; readonly object: 'model'; readonly [key: string]: unknown }[];
}
