/**
 * The collections' storage key from the key broker, as a user runs it (compiled dist/, child
 * processes): `keys serve`, `keys register NAME --kind storage`, `serve --collections DIR
 * --collections-key NAME --key-broker URL`. A broker whose policy pins another measurement
 * makes serve exit 1 with POLICY_MISMATCH before anything listens; the allowed path stores a
 * collection, and a restarted server (the key released again) finds it intact.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePolicy } from '../../src/verifier/policy.js';
import { connect } from '../../src/client/client.js';
import { runCollectionCall } from '../../src/client/gateway/collections.js';
import { demoEmbedderDir } from '../collections/helpers.js';
import { until } from '../helpers/until.js';
import { HAVE_DIST, startCli, stopCli } from '../helpers/cli-process.js';
import type { CliProc } from '../helpers/cli-process.js';

const haveDist = HAVE_DIST;
if (!haveDist) console.warn('test/e2e/collections-broker-cli.test.ts skipped: dist/cli/main.js missing (run `npm run build`)');

type Proc = CliProc;
const start = startCli;

const stop = stopCli;

async function runCli(args: string[]): Promise<{ code: number; out: string }> {
  const p = start(args);
  const code = await new Promise<number>((r) => p.child.once('exit', (c) => r(c ?? 1)));
  return { code, out: p.out() };
}

const httpUrl = (p: Proc): string | undefined => /http:\s+(http:\/\/\S+)/.exec(p.out())?.[1];

describe.skipIf(!haveDist)('serve --collections-key: the storage key from the key broker (child processes)', () => {
  let dir: string;
  let broker: Proc;
  let brokerUrl: string;
  let server: Proc | undefined;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cloister-col-broker-'));
    broker = start(['keys', 'serve', '--listen', '127.0.0.1:0', '--store', join(dir, 'store')]);
    await until(() => /key broker: (http:\/\/\S+)/.test(broker.out()), 5000);
    brokerUrl = /key broker: (http:\/\/\S+)/.exec(broker.out())?.[1] ?? '';
  });
  afterAll(async () => {
    await stop(server);
    await stop(broker);
    await rm(dir, { recursive: true, force: true });
  });

  it('refused under another measurement (exit 1, POLICY_MISMATCH); allowed: stores a collection that a restarted server finds intact', async () => {
    const state = join(dir, 'state');
    const admin = join(dir, 'store', 'admin.key');
    const embedder = await demoEmbedderDir();
    const pol = await runCli(['keys', 'dev-policy', '--state-dir', state]);
    expect(pol.code).toBe(0);
    const policyJson = pol.out.slice(pol.out.indexOf('{'), pol.out.lastIndexOf('}') + 1);
    await writeFile(join(dir, 'policy.json'), policyJson);
    const other = policyJson.replace(/"0": "([0-9a-f])/, (_m, c: string) => `"0": "${c === '0' ? '1' : '0'}`);
    expect(other).not.toBe(policyJson);
    await writeFile(join(dir, 'other.json'), other);
    for (const [name, file] of [['collections', 'policy.json'], ['pinned', 'other.json']] as const) {
      const reg = await runCli(['keys', 'register', name, '--kind', 'storage', '--policy', join(dir, file), '--broker', brokerUrl, '--admin-key-file', admin]);
      expect(reg.code).toBe(0);
    }
    const serveArgs = (key: string): string[] => [
      'serve', '--embedder', `embedder=${embedder}`, '--collections', join(dir, 'collections'), '--collections-key', key, '--key-broker', brokerUrl,
      '--platform', 'simulated', '--state-dir', state, '--listen', '127.0.0.1:0',
    ];

    const refused = await runCli(serveArgs('pinned'));
    expect(refused.code).toBe(1);
    expect(refused.out).toContain('POLICY_MISMATCH');
    expect(refused.out).not.toContain('websocket:');

    server = start(serveArgs('collections'));
    await until(() => httpUrl(server as Proc) !== undefined || server?.child.exitCode !== null, 30_000);
    expect(server.out()).toContain('collections: storage key collections released by');
    expect(server.out()).not.toContain('read from an operator file');
    const policy = parsePolicy(await readFile(join(state, 'policy.json')));
    let client = await connect(httpUrl(server) ?? '', { policy });
    const signal = new AbortController().signal;
    const created = await runCollectionCall(client, { action: 'create' }, signal);
    const id = created['collection'] as string;
    const capability = created['capability'] as string;
    const added = await runCollectionCall(client, { action: 'add', collection: id, capability, documents: [{ id: 'note-1', text: 'Systolic murmur heard at the left sternal border.' }] }, signal);
    expect(added['version']).toBe(1);
    await client.close();
    await stop(server);

    server = start(serveArgs('collections'));
    await until(() => httpUrl(server as Proc) !== undefined || server?.child.exitCode !== null, 30_000);
    client = await connect(httpUrl(server) ?? '', { policy });
    const listed = await runCollectionCall(client, { action: 'list', collection: id, capability }, signal);
    expect((listed['documents'] as { id: string }[]).map((d) => d.id)).toEqual(['note-1']);
    expect(listed['version']).toBe(1);
    await client.close();
    await stop(server);

    // The broker's audit shows the refusal and the two releases.
    const audit = await runCli(['keys', 'audit', '--broker', brokerUrl, '--admin-key-file', admin]);
    const releases = audit.out
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((r) => r['event'] === 'release')
      .map((r) => [r['key'], r['allowed'], r['code']]);
    expect(releases).toEqual([
      ['pinned', false, 'POLICY_MISMATCH'],
      ['collections', true, undefined],
      ['collections', true, undefined],
    ]);
  }, 180_000);
});
