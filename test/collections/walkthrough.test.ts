/**
 * The "Done when" walkthrough of issue 16, as docs/COLLECTIONS.md ("Walkthrough") gives it:
 * `cloister serve` with the stand-in engine, the demo embedder and --collections; `cloister
 * gateway`; create a collection, add the 660 demo notes, ask through the gateway with the
 * collection and get citations; delete a note and show it is no longer retrieved; restart the
 * server and find the collection intact; an answer with a synthetic SSN redacted by default
 * and blocked under the strict policy. Both commands run in this process (their `run` /
 * `startFromArgs`), as the other CLI tests do.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startFromArgs } from '../../src/cli/commands/gateway.js';
import { run as serve } from '../../src/cli/commands/serve.js';
import { startStandin } from '../fixtures/standin-engine/index.js';
import type { Standin } from '../fixtures/standin-engine/index.js';
import { demoEmbedderDir } from './helpers.js';

let dir: string;
let standin: Standin;
let embedder: string;
let port: number;

function freePort(): Promise<number> {
  return new Promise((done) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => done(p));
    });
  });
}

async function startServe(extra: string[] = []): Promise<{ exit: Promise<number>; output: string }> {
  const lines: string[] = [];
  const spy = vi.spyOn(console, 'log').mockImplementation((s: unknown) => void lines.push(String(s)));
  const exit = serve([
    '--embedder', `embedder=${embedder}`,
    '--upstream', standin.baseUrl, '--upstream-model', 'standin-model', '--upstream-name', 'llm', '--upstream-kind', 'openai',
    '--collections', join(dir, 'collections'), '--collections-key-file', join(dir, 'collections.key'),
    '--listen', `127.0.0.1:${port}`, '--platform', 'simulated', '--state-dir', join(dir, 'state'), '--log-level', 'error', ...extra,
  ]);
  let failed = false;
  exit.catch(() => {
    failed = true;
  });
  try {
    for (let i = 0; i < 1000 && !failed && !lines.some((l) => /websocket:/.test(l)); i++) await new Promise((r) => setTimeout(r, 10));
  } finally {
    spy.mockRestore();
  }
  return { exit, output: lines.join('\n') };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cloister-walkthrough-'));
  standin = await startStandin();
  embedder = await demoEmbedderDir();
  port = await freePort();
  await writeFile(join(dir, 'collections.key'), `${'5a'.repeat(32)}\n`, { mode: 0o600 });
}, 120_000);

afterAll(async () => {
  await standin.close();
  await rm(dir, { recursive: true, force: true });
});

describe('issue 16 walkthrough', () => {
  it('collection, 660 notes, rag with citations, delete, restart, guard redact and block', async () => {
    let served = await startServe();
    expect(served.output).toContain('WARNING: collections are sealed under a storage key read from an operator file');
    expect(served.output).toContain('collections (retrieval)');
    const gw = await startFromArgs(['--url', `ws://127.0.0.1:${port}/`, '--policy', join(dir, 'state', 'policy.json'), '--listen', '127.0.0.1:0'], {}, () => undefined);
    const url = gw.gateway.url;
    const post = async (path: string, body: unknown, cap?: string, method = 'POST'): Promise<{ status: number; json: Record<string, unknown> }> => {
      const res = await fetch(`${url}${path}`, {
        method,
        headers: { 'content-type': 'application/json', ...(cap === undefined ? {} : { 'x-cloister-capability': cap }) },
        ...(method === 'POST' ? { body: JSON.stringify(body) } : {}),
      });
      return { status: res.status, json: (await res.json()) as Record<string, unknown> };
    };
    try {
      // Create, then add the 660 notes (what examples/collection-add-notes.mjs does).
      const created = await post('/v1/collections', {});
      const id = created.json['collection'] as string;
      const cap = created.json['capability'] as string;
      const notes = (await readFile('data/clinical-notes.jsonl', 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { id: string; text: string; department: string });
      expect(notes).toHaveLength(660);
      for (let i = 0; i < notes.length; i += 220) {
        const r = await post(`/v1/collections/${id}/documents`, { documents: notes.slice(i, i + 220).map((n) => ({ id: n.id, text: n.text, metadata: { department: n.department } })) }, cap);
        expect(r.status).toBe(200);
      }

      // Ask with the collection: an answer with citations.
      const target = notes.find((n) => n.text.includes('systolic murmur')) ?? notes[0];
      const ask = await post('/v1/chat/completions', { model: 'llm', messages: [{ role: 'user', content: target?.text ?? '' }], collection: { id, capability: cap } });
      expect(ask.status).toBe(200);
      const citations = ask.json['citations'] as { document: string; start: number; end: number }[];
      expect(citations.length).toBe(4);
      expect(citations[0]?.document).toBe(target?.id);

      // Delete that note: no longer retrieved.
      const del = await post(`/v1/collections/${id}/documents/${target?.id ?? ''}`, undefined, cap, 'DELETE');
      expect(del.json).toMatchObject({ deleted: [target?.id], erased: true });
      const q = await post(`/v1/collections/${id}/query`, { query: target?.text, top_k: 50 }, cap);
      expect((q.json['chunks'] as { document: string }[]).map((c) => c.document)).not.toContain(target?.id);
      const version = q.json['version'];

      // Restart the server (SIGTERM, then the same command): the collection is intact.
      process.emit('SIGTERM');
      expect(await served.exit).toBe(0);
      served = await startServe();
      let listed: { status: number; json: Record<string, unknown> } | undefined;
      for (let i = 0; i < 100; i++) {
        listed = await post(`/v1/collections/${id}/documents`, undefined, cap, 'GET');
        if (listed.status === 200) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(listed?.status).toBe(200);
      expect((listed?.json['documents'] as unknown[]).length).toBe(659);
      expect(listed?.json['version']).toBe(version);

      // A generated answer with a synthetic SSN: redacted by default, blocked when strict.
      standin.reset({ tokens: "The patient's SSN is 123-45-6789.".split(/(?=\s)/) });
      const redacted = await post('/v1/chat/completions', { model: 'llm', messages: [{ role: 'user', content: 'SSN?' }], collection: { id, capability: cap } });
      expect((redacted.json['choices'] as { message: { content: string } }[])[0]?.message.content).toBe("The patient's SSN is [SSN].");
      const blocked = await post('/v1/chat/completions', { model: 'llm', messages: [{ role: 'user', content: 'SSN?' }], collection: { id, capability: cap }, guard: 'block' });
      expect(blocked.status).toBe(422);
      expect((blocked.json['error'] as { code: string }).code).toBe('OUTPUT_BLOCKED');
    } finally {
      standin.reset();
      await gw.close();
      process.emit('SIGTERM');
      await served.exit.catch(() => 1);
    }
  }, 240_000);
});
