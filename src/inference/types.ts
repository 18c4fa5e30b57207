/**
 * The one engine interface (DESIGN.md "Engines"): every engine, in-process ONNX or an
 * upstream OpenAI-compatible server, turns a decoded request into an async sequence of
 * result chunks. The server seals each chunk as it arrives.
 */

/** A task an engine can run; the sealed request's `op` names one. */
export type Operation =
  | 'classify'
  | 'embed'
  | 'token-classify'
  | 'generate'
  | 'chat'
  | 'completion'
  | 'embeddings'
  | 'models'
  /** Sealed document collections (src/collections/): create, add, delete, list, retrieve. */
  | 'collection'
  /** Retrieval-augmented generation over a collection (src/collections/engine.ts). */
  | 'rag';

export interface ModelInfo {
  /** Name a request uses to address this model. */
  readonly name: string;
  /** Hugging Face style task, e.g. text-classification, feature-extraction, chat. */
  readonly task: string;
  /** Operations this model answers. */
  readonly operations: readonly Operation[];
  /** SHA-256 over the model's files (see the engine for the exact construction); 32 bytes. */
  readonly digest: Uint8Array;
}

export interface EngineRequest {
  readonly op: Operation;
  readonly model: string;
  readonly input: unknown;
  readonly params: Readonly<Record<string, unknown>>;
  readonly stream: boolean;
}

export interface RunOptions {
  /** Aborted when the client cancels, disconnects or the request deadline passes. */
  readonly signal: AbortSignal;
}

/** An external engine's identity, for the key config's `engine` field (PROTOCOL.md section 1, key 13). */
interface EngineIdentity {
  readonly kind: string;
  readonly model: string;
  readonly imageDigest?: string;
}

export interface Engine {
  readonly kind: string;
  /** Present on engines that front an external server (upstream); goes into the key config. */
  identity?(): EngineIdentity;
  /** Models served, known after `start()` resolves. */
  models(): readonly ModelInfo[];
  /** Load models, run start-up checks; rejects (fail closed) when the engine is unusable. */
  start(): Promise<void>;
  /** Yields result chunks; a non-streaming request yields exactly one. Throws CloisterError. */
  run(request: EngineRequest, options: RunOptions): AsyncIterable<unknown>;
  close(): Promise<void>;
}
