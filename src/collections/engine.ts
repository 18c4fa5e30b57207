/**
 * The collections engine (docs/COLLECTIONS.md): serves the model `collections` with two
 * operations.
 *
 * - `collection`: input { action, ... } with action create | add | delete | list | retrieve
 *   (PROTOCOL.md section 4, "Collections"); one result per request.
 * - `rag`: the request's `model` names the generative model that answers; input is an OpenAI
 *   chat body plus `collection: { id, capability, top_k? }`. The engine retrieves the top-k
 *   chunks for the last user message, builds the prompt inside the TEE (prompt.ts), calls the
 *   generation engine (today the upstream engine; any engine offering `chat` plugs in) and
 *   relays its answer. First result (streamed) or fields of the answer (not streamed):
 *   `citations` (document id, chunk offsets, score) and `retrieval` (collection version, chain
 *   head, the SHA-256 of every chunk used). The same facts go to the signed `report` chunk.
 *
 * Embeddings come from the in-TEE embedder (an ONNX feature-extraction model on this server),
 * called in-process: they never leave the TEE (docs/COLLECTIONS.md, "Embedding inversion").
 */
import { createHash } from 'node:crypto';
import { CloisterError } from '../errors.js';
import { isRecord } from '../core/validate.js';
import { toHex } from '../core/hex.js';
import type { Engine, EngineRequest, ModelInfo, RunOptions } from '../inference/types.js';
import { EngineRouter } from '../server/router.js';
import { JsonResults } from '../protocol/messages.js';
import { ReportFacts } from '../guard/output.js';
import type { ChunkingOptions } from './chunking.js';
import { DEFAULT_CHUNKING } from './chunking.js';
import type { StorageKeySource } from './keys.js';
import { RAG_SYSTEM_PROMPT_VERSION, buildRagMessages, ragSystemPrompt, sanitizeChunk } from './prompt.js';
import type { ChatMessage } from './prompt.js';
import { CollectionStore } from './store.js';
import type { AnnOptions } from './vector-index.js';
import type { CollectionLimits, LoadReport, NewDocument } from './store.js';

export const COLLECTIONS_MODEL = 'collections';
/** Chunks a rag request retrieves when it names no top_k. */
export const DEFAULT_RAG_TOP_K = 4;
/** Fields a rag request may not carry: the answer must not be able to trigger a call. */
const REFUSED_RAG_FIELDS = ['tools', 'tool_choice', 'functions', 'function_call'];

export interface CollectionsEngineOptions {
  /** Directory for the sealed collection files on the host's disk. */
  readonly dir: string;
  readonly keys: StorageKeySource;
  /** Name of the in-TEE embedder model (an ONNX feature-extraction model of `engines`). */
  readonly embedder: string;
  /** The other engines of this server (embedder, generation), started before this one. */
  readonly engines: readonly Engine[];
  readonly limits?: Partial<CollectionLimits>;
  readonly ann?: AnnOptions;
  /** Called once at start with what was loaded (counts and file names only). */
  readonly onLoad?: (report: LoadReport) => void;
}


function invalid(message: string): CloisterError {
  return new CloisterError('INVALID_ARGUMENT', message, { detail: { public: true } });
}

function textOf(content: unknown): string | undefined {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    const parts = content.map((p) => (isRecord(p) && p['type'] === 'text' && typeof p['text'] === 'string' ? p['text'] : undefined));
    if (parts.every((p) => p !== undefined)) return parts.join('\n');
  }
  return undefined;
}

export class CollectionsEngine implements Engine {
  readonly kind = 'collections';
  readonly #opts: CollectionsEngineOptions;
  #store: CollectionStore | undefined;
  #router: EngineRouter | undefined;
  #info: ModelInfo | undefined;

  constructor(options: CollectionsEngineOptions) {
    if (typeof options.dir !== 'string' || options.dir.length === 0) throw new CloisterError('CONFIG_INVALID', 'collections need a directory');
    if (typeof options.embedder !== 'string' || options.embedder.length === 0) throw new CloisterError('CONFIG_INVALID', 'collections need an embedder model name');
    this.#opts = options;
  }

  get store(): CollectionStore {
    if (this.#store === undefined) throw new CloisterError('ENGINE_UNAVAILABLE', 'the collections engine is not started');
    return this.#store;
  }

  models(): readonly ModelInfo[] {
    return this.#info === undefined ? [] : [this.#info];
  }

  async start(): Promise<void> {
    const router = new EngineRouter(this.#opts.engines);
    const embedderInfo = router.models().find((m) => m.name === this.#opts.embedder);
    if (embedderInfo === undefined || !embedderInfo.operations.includes('embed')) {
      throw new CloisterError('CONFIG_INVALID', `collections need an ONNX feature-extraction model named '${this.#opts.embedder}' (serve --embedder NAME=DIR)`);
    }
    this.#router = router;
    const probe = await this.#embed(['dimension probe'], new AbortController().signal);
    const dims = probe[0]?.length ?? 0;
    if (dims < 1) throw new CloisterError('ENGINE_UNAVAILABLE', 'the embedder returned no vector');
    const store = new CollectionStore({
      dir: this.#opts.dir,
      keys: this.#opts.keys,
      embed: (texts, signal) => this.#embed(texts, signal),
      dims,
      ...(this.#opts.limits === undefined ? {} : { limits: this.#opts.limits }),
      ...(this.#opts.ann === undefined ? {} : { ann: this.#opts.ann }),
    });
    const report = await store.load();
    this.#store = store;
    this.#opts.onLoad?.(report);
    // The model entry's digest measures what decides retrieval and the prompt: the embedder's
    // digest, the system prompt, the default chunking, the limits (ANN threshold included).
    const canonical = JSON.stringify({
      v: 1,
      embedder: { name: embedderInfo.name, digest: toHex(embedderInfo.digest) },
      dims,
      prompt: { version: RAG_SYSTEM_PROMPT_VERSION, text: ragSystemPrompt('N') },
      chunking: DEFAULT_CHUNKING,
      limits: store.limits,
      storage: this.#opts.keys.kind,
    });
    this.#info = {
      name: COLLECTIONS_MODEL,
      task: 'retrieval',
      operations: ['collection', 'rag'],
      digest: new Uint8Array(createHash('sha256').update(canonical).digest()),
    };
  }

  async close(): Promise<void> {
    await this.#store?.close();
  }

  async #embed(texts: readonly string[], signal: AbortSignal): Promise<Float32Array[]> {
    const router = this.#router;
    if (router === undefined) throw new CloisterError('ENGINE_UNAVAILABLE', 'the collections engine is not started');
    const engine = router.route('embed', this.#opts.embedder);
    for await (const out of engine.run({ op: 'embed', model: this.#opts.embedder, input: [...texts], params: {}, stream: false }, { signal })) {
      if (!Array.isArray(out) || out.length !== texts.length) break;
      return out.map((v: unknown) => {
        if (!Array.isArray(v) || !v.every((x) => typeof x === 'number')) throw new CloisterError('ENGINE_FAILED', 'the embedder returned a non-numeric vector');
        return Float32Array.from(v as number[]);
      });
    }
    throw new CloisterError('ENGINE_FAILED', 'the embedder returned no vectors for the texts');
  }

  run(request: EngineRequest, options: RunOptions): AsyncIterable<unknown> {
    if (request.op === 'collection') return this.#collection(request, options.signal);
    if (request.op === 'rag') return this.#rag(request, options.signal);
    throw new CloisterError('UNKNOWN_OPERATION', 'the collections engine offers collection and rag');
  }

  async *#collection(request: EngineRequest, signal: AbortSignal): AsyncGenerator<unknown> {
    const store = this.store;
    const input = request.input;
    if (!isRecord(input) || typeof input['action'] !== 'string') throw invalid('collection input must be a map with an action (create, add, delete, list, retrieve)');
    if (Object.keys(request.params).length > 0) throw invalid('collection operations take no params');
    const id = input['collection'];
    const cap = input['capability'];
    const facts = (action: string, state: { id: string; version: number; head: string }, extra: Record<string, unknown> = {}): ReportFacts =>
      new ReportFacts({ collection: { action, id: state.id, version: state.version, head: state.head, ...extra } });
    switch (input['action']) {
      case 'create': {
        const chunking = input['chunking'];
        if (chunking !== undefined && !isRecord(chunking)) throw invalid('chunking must be a map of maxChars and overlapChars');
        const created = await store.create({ ...(chunking === undefined ? {} : { chunking: chunking as Partial<ChunkingOptions> }), policy: input['policy'] });
        yield facts('create', created);
        yield { collection: created.id, capability: created.capability, version: created.version, head: created.head };
        return;
      }
      case 'add': {
        const docs = input['documents'];
        if (!Array.isArray(docs)) throw invalid('documents must be an array of { id, text, metadata? }');
        const parsed: NewDocument[] = docs.map((d: unknown) => {
          if (!isRecord(d)) throw invalid('documents must be an array of { id, text, metadata? }');
          return { id: d['id'] as string, text: d['text'] as string, ...(d['metadata'] === undefined ? {} : { metadata: d['metadata'] as NewDocument['metadata'] & object }) };
        });
        const added = await store.add(id, cap, parsed, signal);
        yield facts('add', added, { added: added.added });
        yield { collection: added.id, version: added.version, head: added.head, added: added.added, chunks: added.chunks };
        return;
      }
      case 'delete': {
        const ids = input['ids'];
        const deleted = await store.delete(id, cap, Array.isArray(ids) ? (ids as string[]) : []);
        // The right to erasure, in the signed report: which documents went, and whether the
        // file was rewritten without them.
        yield facts('delete', deleted, { erasure: { documents: [...deleted.deleted], erased: deleted.erased } });
        yield { collection: deleted.id, version: deleted.version, head: deleted.head, deleted: deleted.deleted, missing: deleted.missing, erased: deleted.erased };
        return;
      }
      case 'list': {
        const listed = store.list(id, cap);
        yield facts('list', listed);
        yield { collection: listed.id, version: listed.version, head: listed.head, documents: listed.documents };
        return;
      }
      case 'retrieve': {
        const k = input['top_k'] ?? DEFAULT_RAG_TOP_K;
        const got = await store.retrieve(id, cap, input['query'] as string, k as number, signal);
        yield facts('retrieve', got, { chunks: got.chunks.map((c) => ({ document: c.document, start: c.start, end: c.end, digest: toHex(c.digest) })) });
        yield {
          collection: got.id,
          version: got.version,
          head: got.head,
          mode: got.mode,
          chunks: got.chunks.map((c) => ({ document: c.document, start: c.start, end: c.end, score: c.score, text: c.text, metadata: c.metadata, digest: toHex(c.digest) })),
        };
        return;
      }
      default:
        throw invalid('unknown collection action; actions: create, add, delete, list, retrieve');
    }
  }

  async *#rag(request: EngineRequest, signal: AbortSignal): AsyncGenerator<unknown> {
    const store = this.store;
    const router = this.#router;
    if (router === undefined) throw new CloisterError('ENGINE_UNAVAILABLE', 'the collections engine is not started');
    const input = request.input;
    if (!isRecord(input)) throw invalid('rag input must be an OpenAI chat body with a collection');
    const ref = input['collection'];
    if (!isRecord(ref)) throw invalid('rag input needs collection: { id, capability, top_k? }');
    for (const f of REFUSED_RAG_FIELDS) if (input[f] !== undefined || request.params[f] !== undefined) throw invalid(`a rag request may not carry ${f}`);
    const messages = input['messages'];
    if (!Array.isArray(messages) || messages.length === 0) throw invalid('rag input needs messages');
    const history: ChatMessage[] = [];
    for (const m of messages) {
      const content = isRecord(m) ? textOf(m['content']) : undefined;
      if (!isRecord(m) || typeof m['role'] !== 'string' || content === undefined) throw invalid('every message needs a role and text content');
      history.push({ role: m['role'], content });
    }
    const last = history.pop();
    if (last === undefined || last.role !== 'user') throw invalid('the last message of a rag request must be the user\'s question');
    // Generation engine first: an unknown model fails before any retrieval work.
    const generator = router.route('chat', request.model);
    const policy = store.policyOf(ref['id'], ref['capability']);
    const got = await store.retrieve(ref['id'], ref['capability'], last.content, (ref['top_k'] ?? DEFAULT_RAG_TOP_K) as number, signal);
    const built = buildRagMessages(history, last.content, got.chunks.map((c) => ({ ...c, document: sanitizeChunk(c.document).text })));
    const citations = got.chunks.map((c, i) => ({ index: i + 1, document: c.document, start: c.start, end: c.end, score: c.score }));
    const retrieval = { collection: got.id, version: got.version, head: got.head, mode: got.mode, chunks: got.chunks.map((c) => ({ document: c.document, start: c.start, end: c.end, digest: toHex(c.digest) })) };
    yield new ReportFacts({
      retrieval,
      injection: { flagged: built.flagged },
    }, policy);
    const body: Record<string, unknown> = { ...input };
    delete body['collection'];
    const genRequest: EngineRequest = { op: 'chat', model: request.model, input: { ...body, model: request.model, messages: built.messages }, params: request.params, stream: request.stream };
    if (request.stream) {
      yield { object: 'chat.completion.chunk', choices: [], citations, retrieval };
      yield* generator.run(genRequest, { signal });
      return;
    }
    for await (const out of generator.run(genRequest, { signal })) {
      const value: unknown = out instanceof JsonResults ? JSON.parse(out.texts[0] ?? 'null') : out;
      if (!isRecord(value)) throw new CloisterError('ENGINE_FAILED', 'the generation engine answered with something other than a chat completion');
      yield { ...value, citations, retrieval };
      return;
    }
    throw new CloisterError('ENGINE_FAILED', 'the generation engine gave no answer');
  }
}
