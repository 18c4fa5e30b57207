/** OpenAI-SDK-shaped client over the sealed channel. */
export { createOpenAIClient, SealedStream } from './client.js';
export type { OpenAIClient, OpenAIClientOptions } from './client.js';
export type { SealedRequest, SealedRequester } from './types.js';
