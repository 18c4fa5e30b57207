/**
 * The JSON relay of streamed upstream answers (PROTOCOL.md section 4, `json` chunks): the
 * upstream engine hands the server each read's SSE events as JsonResults (their JSON text),
 * the server seals them as one `json` chunk, and the client parses each text, so the SDK
 * returns the same objects as before. Checks the codec's strictness, the engine's batching
 * and its fast path (which parses only what it must look into), and the whole path through
 * a real server and client, including the failures that must stay failures.
 */
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSimulatedAttester } from '../../src/attester/simulated/attester.js';
import { connect } from '../../src/client/client.js';
import type { CloisterClient } from '../../src/client/client.js';
import { developmentPolicy } from '../../src/client/dev-policy.js';
import { CloisterError } from '../../src/errors.js';
import { UpstreamEngine } from '../../src/inference/upstream/index.js';
import { MAX_BATCH_EVENTS, MAX_BATCH_TEXT_CHARS, looksLikePlainObject } from '../../src/inference/upstream/engine.js';
import { encodeCbor } from '../../src/core/cbor.js';
import { JsonResults, decodeResponseChunk, encodeResponseChunk, encodeResultsChunk } from '../../src/protocol/messages.js';
import { CloisterServer } from '../../src/server/server.js';
import { codeOf, rejectionOf } from '../helpers/errors.js';

const failure = rejectionOf;

describe('json response chunks', () => {
  it('round-trip as a list of JSON texts', () => {
    const items = ['{"a":1}', '{"b":"x"}', '[1,2]'];
    expect(decodeResponseChunk(encodeResponseChunk({ t: 'json', items }))).toEqual({ t: 'json', items });
  });

  it('are strict: a non-empty array of text, no other key', () => {
    expect(codeOf(() => decodeResponseChunk(encodeCbor({ t: 'json', items: [] })))).toBe('MALFORMED');
    expect(codeOf(() => decodeResponseChunk(encodeCbor({ t: 'json', items: '{"a":1}' })))).toBe('MALFORMED');
    expect(codeOf(() => decodeResponseChunk(encodeCbor({ t: 'json', items: ['{}', 1] })))).toBe('MALFORMED');
    expect(codeOf(() => decodeResponseChunk(encodeCbor({ t: 'json', items: [new Uint8Array([0x7b, 0x7d])] })))).toBe('MALFORMED');
    expect(codeOf(() => decodeResponseChunk(encodeCbor({ t: 'json' })))).toBe('MALFORMED');
    expect(codeOf(() => decodeResponseChunk(encodeCbor({ t: 'json', items: ['{}'], data: 1 })))).toBe('MALFORMED');
    const good = encodeResponseChunk({ t: 'json', items: ['{}'] });
    expect(codeOf(() => decodeResponseChunk(Uint8Array.of(...good, 0)))).toBe('MALFORMED');
    expect(codeOf(() => encodeResponseChunk({ t: 'json', items: [] }))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => encodeResponseChunk({ t: 'json', items: [1 as unknown as string] }))).toBe('INVALID_ARGUMENT');
  });

  it('encodeResultsChunk: JsonResults as one json chunk, plain results as data or items', () => {
    const json = encodeResultsChunk([new JsonResults(['{"a":1}']), new JsonResults(['{"b":2}', '{"c":3}'])]);
    expect(decodeResponseChunk(json)).toEqual({ t: 'json', items: ['{"a":1}', '{"b":2}', '{"c":3}'] });
    expect(decodeResponseChunk(encodeResultsChunk([{ a: 1 }]))).toEqual({ t: 'data', data: { a: 1 } });
    expect(decodeResponseChunk(encodeResultsChunk([{ a: 1 }, new JsonResults(['{"b":2}'])]))).toEqual({ t: 'items', items: [{ a: 1 }, { b: 2 }] });
    // Mixed with a text that is not JSON: ENGINE_FAILED, and the error does not carry the text.
    let err: unknown;
    try {
      encodeResultsChunk([{ a: 1 }, new JsonResults(['{"secret": patient'])]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CloisterError);
    expect((err as CloisterError).code).toBe('ENGINE_FAILED');
    expect(JSON.stringify(err) + String((err as Error).message) + String((err as Error).cause)).not.toContain('patient');
    expect(() => new JsonResults([])).toThrow(CloisterError);
  });
});

describe('looksLikePlainObject (the fast path screen)', () => {
  it('passes braced text that cannot name an error member', () => {
    expect(looksLikePlainObject('{"id":"x","choices":[{"delta":{"content":"hi"}}]}')).toBe(true);
    expect(looksLikePlainObject(' \r\n\t{}\n ')).toBe(true);
  });

  it('sends everything else to the parser', () => {
    for (const text of ['', '{', '}', '[{}]', '"{}"', 'null', '{"error":{}}', '{"\\u0065rror":{}}', '{"a":"no errors"}', 'x{}', '{}x']) {
      expect(looksLikePlainObject(text)).toBe(false);
    }
  });
});

/** A raw SSE engine: answers every chat stream with the body the test set. */
interface RawEngine {
  readonly baseUrl: string;
  body: string;
  close(): Promise<void>;
}

async function startRawEngine(): Promise<RawEngine> {
  const state = { body: '' };
  const server: Server = createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/v1/models') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ object: 'list', data: [{ id: 'raw-model', object: 'model' }] }));
      return;
    }
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      // One write: every event arrives in one read.
      res.end(state.body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    get body() {
      return state.body;
    },
    set body(b: string) {
      state.body = b;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function token(i: number, model = 'raw-model'): string {
  return JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 0, model, choices: [{ index: 0, delta: { content: `t${i}` }, finish_reason: null }] });
}

function sse(events: readonly string[], done = true): string {
  return events.map((e) => `data: ${e}\n\n`).join('') + (done ? 'data: [DONE]\n\n' : '');
}

const CHAT = { op: 'chat' as const, model: 'raw-model', input: { messages: [{ role: 'user', content: 'hi' }] }, params: {}, stream: true };

describe('UpstreamEngine relays JSON text', () => {
  let raw: RawEngine;
  let engine: UpstreamEngine;
  beforeAll(async () => {
    raw = await startRawEngine();
    engine = new UpstreamEngine({ baseUrl: raw.baseUrl, model: 'raw-model' });
    await engine.start();
  });
  afterAll(async () => {
    await engine.close();
    await raw.close();
  });

  async function steps(e: UpstreamEngine, model = 'raw-model'): Promise<unknown[]> {
    const out: unknown[] = [];
    for await (const s of e.run({ ...CHAT, model }, { signal: new AbortController().signal })) out.push(s);
    return out;
  }

  it('the first event alone, then batches of at most MAX_BATCH_EVENTS, texts verbatim', async () => {
    const events = Array.from({ length: 2 * MAX_BATCH_EVENTS + 5 }, (_, i) => token(i));
    raw.body = sse(events);
    const out = await steps(engine);
    expect(out.every((s) => s instanceof JsonResults)).toBe(true);
    const batches = out as JsonResults[];
    expect(batches[0]?.texts).toEqual([events[0]]);
    expect(batches.every((b) => b.texts.length <= MAX_BATCH_EVENTS)).toBe(true);
    expect(batches.flatMap((b) => b.texts)).toEqual(events);
  });

  it('a batch is cut once its texts reach MAX_BATCH_TEXT_CHARS', async () => {
    const big = (i: number): string => JSON.stringify({ id: `c${i}`, pad: 'x'.repeat(Math.floor(MAX_BATCH_TEXT_CHARS / 3)) });
    const events = Array.from({ length: 8 }, (_, i) => big(i));
    raw.body = sse(events);
    const batches = (await steps(engine)) as JsonResults[];
    expect(batches.flatMap((b) => b.texts)).toEqual(events);
    for (const b of batches) {
      // Cut at the first event that reaches the bound: never more than one event past it.
      const chars = b.texts.reduce((n, t) => n + t.length, 0);
      expect(chars - (b.texts.at(-1)?.length ?? 0)).toBeLessThan(MAX_BATCH_TEXT_CHARS);
    }
    expect(batches.length).toBeGreaterThanOrEqual(3);
  });

  it('an error object is ENGINE_FAILED on the fast path too, escaped key included', async () => {
    for (const bad of ['{"error":{"message":"x"}}', '{"\\u0065rror":{"message":"x"}}', '{"id":"c","error":"overloaded"}']) {
      raw.body = sse([token(0), bad, token(1)]);
      expect((await failure(steps(engine))).code).toBe('ENGINE_FAILED');
    }
  });

  it('events that are not JSON objects are ENGINE_FAILED when the screen sends them to the parser', async () => {
    for (const bad of ['[1]', '"text"', 'nope', '{"a":"\\u00e9",']) {
      raw.body = sse([token(0), bad]);
      expect((await failure(steps(engine))).code).toBe('ENGINE_FAILED');
    }
  });

  it('a stream cut without [DONE] is ENGINE_FAILED', async () => {
    raw.body = sse([token(0), token(1)], false);
    expect((await failure(steps(engine))).code).toBe('ENGINE_FAILED');
  });

  it('an event over maxEventBytes is LIMIT_EXCEEDED', async () => {
    const small = new UpstreamEngine({ baseUrl: raw.baseUrl, model: 'raw-model', maxEventBytes: 256 });
    await small.start();
    try {
      raw.body = sse([token(0), JSON.stringify({ id: 'c', pad: 'x'.repeat(300) })]);
      expect((await failure(steps(small))).code).toBe('LIMIT_EXCEEDED');
    } finally {
      await small.close();
    }
  });

  it('with a client-facing name, each event is parsed and its model renamed', async () => {
    const named = new UpstreamEngine({ baseUrl: raw.baseUrl, model: 'raw-model', name: 'public-name' });
    await named.start();
    try {
      raw.body = sse([token(0), token(1)]);
      const texts = (await steps(named, 'public-name')).flatMap((s) => (s as JsonResults).texts);
      expect(texts.map((t) => (JSON.parse(t) as { model: string }).model)).toEqual(['public-name', 'public-name']);
    } finally {
      await named.close();
    }
  });
});

describe('json relay end to end (engine, server, sealed client)', () => {
  let raw: RawEngine;
  let engine: UpstreamEngine;
  let server: CloisterServer;
  let client: CloisterClient;
  beforeAll(async () => {
    raw = await startRawEngine();
    engine = new UpstreamEngine({ baseUrl: raw.baseUrl, model: 'raw-model' });
    await engine.start();
    const attester = await createSimulatedAttester();
    // guardPolicy allow: the relay's JSON text must reach the client as sent (the default redact rewrites events, docs/GUARD.md).
    server = new CloisterServer({ engines: [engine], attester, guardPolicy: 'allow' });
    const address = await server.listen({ host: '127.0.0.1', port: 0 });
    const policy = developmentPolicy({ pcrs: attester.pcrs, rootSha256Hex: attester.rootSha256Hex, models: engine.models() });
    client = await connect(address.wsUrl, { policy: JSON.stringify(policy), trustedRoots: { simulated: [attester.rootPem] } });
  });
  afterAll(async () => {
    await client.close();
    await server.close();
    await engine.close();
    await raw.close();
  });

  async function collect(): Promise<unknown[]> {
    const out: unknown[] = [];
    for await (const c of client.request({ op: 'chat', model: 'raw-model', input: CHAT.input, stream: true })) out.push(c);
    return out;
  }

  it('the SDK yields the engine objects, one per event, in order', async () => {
    const events = Array.from({ length: 150 }, (_, i) => token(i));
    raw.body = sse(events);
    expect(await collect()).toEqual(events.map((e) => JSON.parse(e) as unknown));
  });

  it('a braced event that is not JSON fails the stream on the client (MALFORMED), never yields it', async () => {
    raw.body = sse([token(0), '{"content": oops}']);
    const seen: unknown[] = [];
    const err = await failure((async () => {
      for await (const c of client.request({ op: 'chat', model: 'raw-model', input: CHAT.input, stream: true })) seen.push(c);
    })());
    expect(err.code).toBe('MALFORMED');
    expect(seen).toEqual([JSON.parse(token(0)) as unknown]);
  });

  it('an error object and a cut stream are ENGINE_FAILED from the server', async () => {
    for (const body of [sse([token(0), '{"error":{"message":"x"}}']), sse([token(0)], false)]) {
      raw.body = body;
      const err = await failure(collect());
      expect(err.code).toBe('ENGINE_FAILED');
      expect(err.detail?.['origin']).toBe('server');
    }
  });
});
