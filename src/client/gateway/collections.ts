/**
 * The gateway's collection endpoints (docs/COLLECTIONS.md, "Gateway"): plain HTTP on the
 * client's machine, each call one sealed `collection` request to the model `collections`.
 * The capability travels in the `X-Cloister-Capability` header (never in a URL, so it stays
 * out of access logs and shell history of URLs).
 *
 *   POST   /v1/collections                        { chunking?, policy? }     -> create
 *   POST   /v1/collections/{id}/documents          { documents: [{id, text, metadata?}] } -> add
 *   GET    /v1/collections/{id}/documents                                     -> list
 *   DELETE /v1/collections/{id}/documents/{docId}                             -> delete one
 *   POST   /v1/collections/{id}/delete              { ids: [...] }            -> delete several
 *   POST   /v1/collections/{id}/query               { query, top_k? }         -> retrieve
 *
 * Answers are the sealed result, plus `report` (the signed report: versions, erasure).
 */
import type { IncomingMessage } from 'node:http';
import { CloisterError } from '../../errors.js';
import type { SealedRequester } from '../openai/types.js';

export const COLLECTIONS_PREFIX = '/v1/collections';
export const CAPABILITY_HEADER = 'x-cloister-capability';
const COLLECTIONS_MODEL = 'collections';

export interface CollectionCall {
  readonly input: Record<string, unknown>;
}

function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new CloisterError('INVALID_ARGUMENT', 'a path segment is not valid percent-encoding');
  }
}

/** The sealed `collection` input for a request to `path` (already known to start with the prefix). */
export function collectionInput(method: string, path: string, headers: IncomingMessage['headers'], body: Record<string, unknown>): Record<string, unknown> {
  const rest = path.slice(COLLECTIONS_PREFIX.length).split('/').filter((s) => s.length > 0).map(decodeSegment);
  const capHeader = headers[CAPABILITY_HEADER];
  const capability = typeof capHeader === 'string' ? capHeader : undefined;
  const need = (): { collection: string; capability: string } => {
    if (capability === undefined) throw new CloisterError('CAPABILITY_INVALID', `the ${CAPABILITY_HEADER} header is required`);
    return { collection: rest[0] as string, capability };
  };
  if (rest.length === 0 && method === 'POST') return { action: 'create', ...(body['chunking'] === undefined ? {} : { chunking: body['chunking'] }), ...(body['policy'] === undefined ? {} : { policy: body['policy'] }) };
  if (rest.length === 2 && rest[1] === 'documents' && method === 'POST') return { action: 'add', ...need(), documents: body['documents'] };
  if (rest.length === 2 && rest[1] === 'documents' && method === 'GET') return { action: 'list', ...need() };
  if (rest.length === 3 && rest[1] === 'documents' && method === 'DELETE') return { action: 'delete', ...need(), ids: [rest[2]] };
  if (rest.length === 2 && rest[1] === 'delete' && method === 'POST') return { action: 'delete', ...need(), ids: body['ids'] };
  if (rest.length === 2 && rest[1] === 'query' && method === 'POST') return { action: 'retrieve', ...need(), query: body['query'], ...(body['top_k'] === undefined ? {} : { top_k: body['top_k'] }) };
  throw new CloisterError('NOT_FOUND', 'no such collection endpoint (see docs/COLLECTIONS.md, "Gateway")');
}

/** Runs one sealed collection call: its single result with the signed report attached. */
export async function runCollectionCall(client: SealedRequester, input: Record<string, unknown>, signal: AbortSignal): Promise<Record<string, unknown>> {
  let report: unknown;
  let result: unknown;
  let n = 0;
  for await (const r of client.request({ op: 'collection', model: COLLECTIONS_MODEL, input, signal, onReport: (x) => { report = x; } })) {
    result = r;
    n++;
  }
  if (n !== 1 || typeof result !== 'object' || result === null) throw new CloisterError('PROTOCOL_VIOLATION', 'a collection call must answer exactly one result');
  return { ...(result as Record<string, unknown>), ...(report === undefined ? {} : { report }) };
}
