/**
 * An OpenAI-SDK-shaped facade over the sealed channel: `client.chat.completions.create`,
 * `client.completions.create`, `client.embeddings.create`, `client.models.list`. Every call
 * is one sealed request (op chat / completion / embeddings / models) to the attested server;
 * nothing travels in plaintext.
 *
 * With `stream: true` the promise resolves once the first chunk has been opened (so an early
 * failure rejects `create`, as an HTTP error does in the OpenAI SDK) to a `SealedStream`:
 * an async iterable of chunk objects that ends only after the server's authenticated final
 * chunk. A truncated stream throws (STREAM_TRUNCATED from the core SDK), never ends quietly.
 */
import { CloisterError } from '../../errors.js';
import { embedWithOnnx, isOnnxEmbedder } from './onnx-embeddings.js';
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionCreateParams,
  Completion,
  CompletionCreateParams,
  CreateEmbeddingResponse,
  EmbeddingCreateParams,
  ModelList,
  RequestOptions,
  SealedRequest,
  SealedRequester,
} from './types.js';

export interface OpenAIClientOptions {
  /** Model used when a request body names none (and for models.list()). */
  readonly model?: string;
}

type Streaming<T> = T & { readonly stream: true };
type NonStreaming<T> = T & { readonly stream?: false | null };

interface ChatCompletions {
  create(body: Streaming<ChatCompletionCreateParams>, options?: RequestOptions): Promise<SealedStream<ChatCompletionChunk>>;
  create(body: NonStreaming<ChatCompletionCreateParams>, options?: RequestOptions): Promise<ChatCompletion>;
  create(body: ChatCompletionCreateParams, options?: RequestOptions): Promise<ChatCompletion | SealedStream<ChatCompletionChunk>>;
}

interface Completions {
  create(body: Streaming<CompletionCreateParams>, options?: RequestOptions): Promise<SealedStream<Completion>>;
  create(body: NonStreaming<CompletionCreateParams>, options?: RequestOptions): Promise<Completion>;
  create(body: CompletionCreateParams, options?: RequestOptions): Promise<Completion | SealedStream<Completion>>;
}

export interface OpenAIClient {
  readonly chat: { readonly completions: ChatCompletions };
  readonly completions: Completions;
  readonly embeddings: { create(body: EmbeddingCreateParams, options?: RequestOptions): Promise<CreateEmbeddingResponse> };
  readonly models: { list(options?: RequestOptions): Promise<ModelList> };
}

/**
 * A stream of decrypted chunk objects, consumable once. Breaking out of the loop, or
 * `controller.abort()`, cancels the sealed request.
 */
export class SealedStream<T> implements AsyncIterable<T> {
  /** Aborting it cancels the request, as with the OpenAI SDK's `Stream.controller`. */
  readonly controller: AbortController;
  readonly #iterator: AsyncIterator<unknown>;
  #first: IteratorResult<unknown> | undefined;
  #consumed = false;

  /** @internal built by the facade; use `create({ stream: true })`. */
  constructor(iterator: AsyncIterator<unknown>, first: IteratorResult<unknown>, controller: AbortController) {
    this.#iterator = iterator;
    this.#first = first;
    this.controller = controller;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.#consumed) throw new CloisterError('INVALID_ARGUMENT', 'a SealedStream can be iterated only once');
    this.#consumed = true;
    let finished = false;
    try {
      let step = this.#first ?? (await this.#iterator.next());
      this.#first = undefined;
      while (step.done !== true) {
        yield asObject(step.value) as T;
        step = await this.#iterator.next();
      }
      finished = true;
    } finally {
      if (!finished) {
        this.controller.abort();
        await this.#iterator.return?.().catch(() => undefined);
      }
    }
  }
}

export function createOpenAIClient(sealed: SealedRequester, options: OpenAIClientOptions = {}): OpenAIClient {
  const modelOf = (body: { readonly model?: unknown }): string => {
    const model = body.model ?? options.model;
    if (typeof model !== 'string' || model === '') {
      throw new CloisterError('INVALID_ARGUMENT', 'a model name is required (in the body or the client options)');
    }
    return model;
  };

  const call = async (
    op: 'chat' | 'completion' | 'embeddings' | 'models',
    body: Readonly<Record<string, unknown>>,
    stream: boolean,
    requestOptions: RequestOptions | undefined,
  ): Promise<unknown> => {
    const model = modelOf(body);
    if (!stream) return single(sealed, { op, model, input: body, stream: false, ...signalOf(requestOptions) });
    const controller = new AbortController();
    const signal = requestOptions?.signal === undefined ? controller.signal : AbortSignal.any([requestOptions.signal, controller.signal]);
    const iterator = sealed.request({ op, model, input: body, stream: true, signal })[Symbol.asyncIterator]();
    let first: IteratorResult<unknown>;
    try {
      first = await iterator.next();
    } catch (err) {
      controller.abort();
      throw err;
    }
    return new SealedStream(iterator, first, controller);
  };

  const chatCreate = (body: ChatCompletionCreateParams, requestOptions?: RequestOptions): Promise<unknown> =>
    call('chat', body, body.stream === true, requestOptions);
  const completionCreate = (body: CompletionCreateParams, requestOptions?: RequestOptions): Promise<unknown> =>
    call('completion', body, body.stream === true, requestOptions);

  return {
    chat: { completions: { create: chatCreate as ChatCompletions['create'] } },
    completions: { create: completionCreate as Completions['create'] },
    embeddings: {
      create: async (body, requestOptions) => {
        // An ONNX feature-extraction model (task in the verified key config) answers through its `embed` operation.
        const model = modelOf(body);
        if (isOnnxEmbedder(sealed, model)) return embedWithOnnx(sealed, model, body, requestOptions?.signal);
        return (await call('embeddings', body, false, requestOptions)) as CreateEmbeddingResponse;
      },
    },
    models: {
      list: async (requestOptions) => (await call('models', {}, false, requestOptions)) as ModelList,
    },
  };
}

function signalOf(options: RequestOptions | undefined): { signal?: AbortSignal } {
  return options?.signal === undefined ? {} : { signal: options.signal };
}

/** A non-streamed answer is exactly one object. */
async function single(sealed: SealedRequester, request: SealedRequest): Promise<unknown> {
  const items: unknown[] = [];
  for await (const item of sealed.request(request)) {
    items.push(item);
    if (items.length > 1) break;
  }
  if (items.length !== 1) {
    throw new CloisterError('PROTOCOL_VIOLATION', 'a non-streamed answer must be exactly one result', { detail: { results: items.length } });
  }
  return asObject(items[0]);
}

function asObject(value: unknown): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || value instanceof Uint8Array) {
    throw new CloisterError('PROTOCOL_VIOLATION', 'the server answered with a result that is not an object');
  }
  return value as Record<string, unknown>;
}
