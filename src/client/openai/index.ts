/** OpenAI-SDK-shaped client over the sealed channel. */
export { createOpenAIClient, SealedStream } from './client.js';
export type { ChatCompletions, Completions, OpenAIClient, OpenAIClientOptions } from './client.js';
export type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionCreateParams,
  ChatMessage,
  Completion,
  CompletionCreateParams,
  CreateEmbeddingResponse,
  EmbeddingCreateParams,
  ModelList,
  RequestOptions,
  SealedRequest,
  SealedRequester,
} from './types.js';
