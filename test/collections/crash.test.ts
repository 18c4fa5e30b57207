/**
 * Crash safety (issue 16): `cloister serve --collections` in its own process, documents added
 * by four concurrent writers, the process killed with SIGKILL while adds are in flight; after a
 * restart on the same directory every acknowledged document is there with its text intact, the
 * collection opens (nothing corrupted) and takes new documents. Runs the built CLI (dist/).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import type { CloisterClient } from '../../src/client/client.js';
import type { CborInput } from '../../src/core/cbor.js';
import { until } from '../helpers/until.js';
import { demoEmbedderDir } from './helpers.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const cli = resolve(repoRoot, 'dist', 'cli', 'main.js');

interface Served {
  readonly child: ReturnType<typeof spawn>;
  readonly client: CloisterClient;
  readonly exited: Promise<unknown>;
}

async function startServe(dir: string, embedder: string): Promise<Served> {
  const child = spawn(process.execPath, [
    cli, 'serve', '--embedder', `embedder=${embedder}`, '--collections', join(dir, 'collections'), '--collections-key-file', join(dir, 'key.hex'),
    '--listen', '127.0.0.1:0', '--platform', 'simulated', '--state-dir', join(dir, 'state'), '--log-level', 'error',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise((r) => child.once('exit', r));
  await until(() => /http:\s+http:\/\/127\.0\.0\.1:\d+/.test(out) || child.exitCode !== null, 3000, 20);
  const port = Number(/http:\s+http:\/\/127\.0\.0\.1:(\d+)/.exec(out)?.[1]);
  if (!(port > 0)) throw new Error(`serve did not start: ${out}`);
  const client = await connect(`ws://127.0.0.1:${port}/`, { policy: await readFile(join(dir, 'state', 'policy.json'), 'utf8') });
  return { child, client, exited };
}

async function one(client: CloisterClient, input: { readonly [k: string]: CborInput }): Promise<Record<string, unknown>> {
  const out: unknown[] = [];
  for await (const r of client.request({ op: 'collection', model: 'collections', input })) out.push(r);
  return out[0] as Record<string, unknown>;
}

describe.skipIf(!existsSync(cli))('collections survive a killed server', () => {
  it('every acknowledged document is there after SIGKILL during ingestion, nothing corrupted', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cloister-crash-'));
    const embedder = await demoEmbedderDir();
    await writeFile(join(dir, 'key.hex'), `${'ab'.repeat(32)}\n`);
    const notes = (await readFile(resolve(repoRoot, 'data', 'clinical-notes.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { id: string; text: string });
    let first: Served | undefined = await startServe(dir, embedder);
    try {
      const created = await one(first.client, { action: 'create' });
      const id = created['collection'] as string;
      const capability = created['capability'] as string;
      const acked = new Map<string, string>();
      let next = 0;
      let stop = false;
      const writer = async (client: CloisterClient): Promise<void> => {
        while (!stop && next < notes.length) {
          const batch = notes.slice(next, next + 3);
          next += 3;
          try {
            await one(client, { action: 'add', collection: id, capability, documents: batch.map((n) => ({ id: n.id, text: n.text })) });
            for (const n of batch) acked.set(n.id, n.text);
          } catch {
            return; // the server died under this request: not acknowledged
          }
        }
      };
      const served = first;
      const writers = [writer(served.client), writer(served.client), writer(served.client), writer(served.client)];
      await until(() => acked.size >= 60, 3000, 5);
      served.child.kill('SIGKILL');
      stop = true;
      await served.exited;
      await Promise.all(writers);
      await served.client.close().catch(() => undefined);
      first = undefined;
      expect(acked.size).toBeGreaterThanOrEqual(60);

      const second = await startServe(dir, embedder);
      try {
        const listed = await one(second.client, { action: 'list', collection: id, capability });
        const docs = new Map((listed['documents'] as { id: string; chars: number }[]).map((d) => [d.id, d.chars]));
        for (const [docId, text] of acked) expect(docs.get(docId)).toBe(text.length);
        // Exactly what reached the disk: the acknowledged documents, plus at most the batches in
        // flight at the kill (written, not yet acknowledged): never a partial batch.
        expect(docs.size - acked.size).toBeLessThanOrEqual(4 * 3);
        expect(docs.size % 3).toBe(0);
        for (const [docId] of acked) {
          const got = await one(second.client, { action: 'retrieve', collection: id, capability, query: acked.get(docId) ?? '', top_k: 1 });
          expect((got['chunks'] as { text: string }[])[0]?.text).toBe(acked.get(docId));
          break;
        }
        const more = await one(second.client, { action: 'add', collection: id, capability, documents: [{ id: 'after-restart', text: 'a note written after the restart' }] });
        expect(more['version']).toBe((listed['version'] as number) + 1);
      } finally {
        await second.client.close();
        second.child.kill('SIGTERM');
        await second.exited;
      }
    } finally {
      if (first !== undefined) {
        first.child.kill('SIGKILL');
        await first.exited;
      }
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
