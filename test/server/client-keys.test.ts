/**
 * Client API keys inside the sealed request and per-key quotas (issue 17 item 10):
 * `--client-keys FILE` of `id:sha256hex[:per-minute]`, UNAUTHORIZED without a valid key,
 * RATE_LIMITED over a key's quota, logs that name the key id and never the key, and old
 * clients (no `key` field) unaffected by a server that requires none.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import { decodeSealedRequest, encodeSealedRequest } from '../../src/protocol/messages.js';
import { decodeCbor, encodeCbor } from '../../src/core/cbor.js';
import { ClientKeyTable, clientKeyLine } from '../../src/server/client-keys.js';
import { createLogger } from '../../src/server/log.js';
import { parseServeConfig } from '../../src/cli/commands/serve.js';
import { codeOf, fakeClassify, startTestServer } from '../e2e/helpers.js';
import type { TestServer } from '../e2e/helpers.js';

const ALICE = 'sk-alice-0123456789abcdef';
const BOB = 'sk-bob-fedcba9876543210';

describe('keys file', () => {
  it('parses id:sha256hex[:per-minute] lines, comments and blank lines', () => {
    const t = ClientKeyTable.parse(`# keys\n\n${clientKeyLine('alice', ALICE, 5)}\n${clientKeyLine('bob', BOB)}\r\n`, 'keys.txt');
    expect(t.size).toBe(2);
    expect(t.authorize(ALICE)).toBe('alice');
    expect(t.authorize(BOB)).toBe('bob');
  });

  it('refuses malformed files by path and line, without echoing digests', () => {
    const bad = (text: string): string => {
      try {
        ClientKeyTable.parse(text, 'keys.txt');
        return 'accepted';
      } catch (err) {
        expect((err as { code: string }).code).toBe('CONFIG_INVALID');
        return (err as Error).message;
      }
    };
    expect(bad('alice:abc')).toMatch(/keys\.txt line 1/);
    expect(bad(`ok:${'a'.repeat(64)}\nalice:${'A'.repeat(64)}`)).toMatch(/keys\.txt line 2/);
    expect(bad(`alice:${'a'.repeat(64)}:0`)).toMatch(/requests-per-minute/);
    expect(bad(`alice:${'a'.repeat(64)}\nalice:${'b'.repeat(64)}`)).toMatch(/appears twice/);
    const dup = bad(`alice:${'a'.repeat(64)}\nbob:${'a'.repeat(64)}`);
    expect(dup).toMatch(/same key digest/);
    expect(dup).not.toContain('a'.repeat(64));
    expect(bad('# nothing\n')).toMatch(/no keys/);
    expect(bad(`${ALICE}`)).not.toContain(ALICE);
  });

  it('serve --client-keys / --client-key-requests-per-minute (and CLOISTER_CLIENT_KEYS)', () => {
    const cfg = parseServeConfig(['--upstream', 'http://127.0.0.1:9/v1', '--upstream-model', 'm', '--client-keys', 'k.txt', '--client-key-requests-per-minute', '7'], {});
    expect(cfg !== 'help' && cfg.clientKeys?.perMinute).toBe(7);
    const env = parseServeConfig(['--upstream', 'http://127.0.0.1:9/v1', '--upstream-model', 'm'], { CLOISTER_CLIENT_KEYS: 'k.txt' });
    expect(env !== 'help' && env.clientKeys?.perMinute).toBe(600);
    expect(() => parseServeConfig(['--upstream', 'http://127.0.0.1:9/v1', '--upstream-model', 'm', '--client-key-requests-per-minute', '7'], {})).toThrow(/needs --client-keys/);
  });

  it('ClientKeyTable.load: NOT_FOUND for a missing file', async () => {
    await expect(ClientKeyTable.load('/nonexistent/cloister-keys.txt')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('the key on the wire', () => {
  const base = { v: 1 as const, op: 'classify' as const, model: 'm', input: 'x', stream: false, ts: 1, id: new Uint8Array(16) };
  it('a request without a key has no key field (old clients, unchanged bytes); one with a key round-trips', () => {
    const plain = decodeCbor(encodeSealedRequest(base)) as Map<string, unknown>;
    expect(plain.has('key')).toBe(false);
    expect(decodeSealedRequest(encodeSealedRequest({ ...base, key: ALICE })).key).toBe(ALICE);
  });
  it('refuses an empty, non-ASCII, control-character or over-long key, both ways', () => {
    for (const key of ['', 'ключ', 'a b', 'a\nb', 'k'.repeat(257)]) {
      expect(() => encodeSealedRequest({ ...base, key })).toThrow();
      const m = decodeCbor(encodeSealedRequest(base)) as Map<string, unknown>;
      m.set('key', key);
      expect(() => decodeSealedRequest(encodeCbor(m as never))).toThrow(/key/);
    }
    expect(decodeSealedRequest(encodeSealedRequest({ ...base, key: 'k'.repeat(256) })).key).toHaveLength(256);
  });
});

describe('a server that requires client keys', () => {
  let t: TestServer;
  let plain: TestServer;
  const lines: string[] = [];
  beforeAll(async () => {
    const keys = ClientKeyTable.parse(`${clientKeyLine('alice', ALICE, 2)}\n${clientKeyLine('bob', BOB)}\n`, 'keys.txt');
    t = await startTestServer({ clientKeys: keys, logger: createLogger({ sink: (l) => lines.push(l) }) });
    plain = await startTestServer();
  });
  afterAll(async () => {
    await t.close();
    await plain.close();
  });

  it('no key or a wrong key: UNAUTHORIZED, sealed, over WebSocket and HTTP', async () => {
    for (const url of [t.wsUrl, t.httpUrl]) {
      const none = await connect(url, { policy: t.policy, trustedRoots: t.trustedRoots });
      const err = await none.classify('x', { model: 'fake-cls' }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'UNAUTHORIZED', detail: { origin: 'server' } });
      expect((err as Error).message).toMatch(/requires a client API key/);
      await none.close();
      const wrong = await connect(url, { policy: t.policy, trustedRoots: t.trustedRoots, apiKey: `${ALICE}x` });
      expect(await codeOf(wrong.classify('x', { model: 'fake-cls' }))).toBe('UNAUTHORIZED');
      await wrong.close();
    }
  });

  it('a valid key is served; a key over its quota is RATE_LIMITED while another key goes on', async () => {
    const alice = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots, apiKey: ALICE });
    const bob = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots, apiKey: BOB });
    try {
      expect(await alice.classify('one', { model: 'fake-cls' })).toEqual(fakeClassify('one'));
      expect(await alice.classify('two', { model: 'fake-cls' })).toEqual(fakeClassify('two'));
      const over = await alice.classify('three', { model: 'fake-cls' }).catch((e: unknown) => e);
      expect(over).toMatchObject({ code: 'RATE_LIMITED' });
      expect((over as Error).message).toMatch(/'alice' is over its quota of 2 requests per minute/);
      expect(await bob.classify('bob', { model: 'fake-cls' })).toEqual(fakeClassify('bob'));
    } finally {
      await alice.close();
      await bob.close();
    }
    // Logs name the key id, never the key (nor its digest).
    const log = lines.join('');
    expect(log).toMatch(/"clientKey":"alice"/);
    expect(log).toMatch(/"clientKey":"bob"/);
    for (const secret of [ALICE, BOB, clientKeyLine('a', ALICE).slice(2), clientKeyLine('b', BOB).slice(2)]) expect(log).not.toContain(secret);
  });

  it('a server without --client-keys serves clients without a key (old clients) and ignores a key', async () => {
    const old = await connect(plain.wsUrl, { policy: plain.policy, trustedRoots: plain.trustedRoots });
    const keyed = await connect(plain.wsUrl, { policy: plain.policy, trustedRoots: plain.trustedRoots, apiKey: ALICE });
    try {
      expect(await old.classify('x', { model: 'fake-cls' })).toEqual(fakeClassify('x'));
      expect(await keyed.classify('y', { model: 'fake-cls' })).toEqual(fakeClassify('y'));
    } finally {
      await old.close();
      await keyed.close();
    }
  });

  it('the SDK refuses an apiKey it cannot send', async () => {
    await expect(connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots, apiKey: 'has space' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});

describe('gateway --server-api-key-file', () => {
  it('the gateway sends the server key from its file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cloister-ck-'));
    const { startFromArgs } = await import('../../src/cli/commands/gateway.js');
    const t = await startTestServer({ clientKeys: ClientKeyTable.parse(clientKeyLine('gw', ALICE), 'keys.txt') });
    try {
      await writeFile(join(dir, 'policy.json'), JSON.stringify(t.policyJson));
      await writeFile(join(dir, 'server.key'), `${ALICE}\n`);
      const withKey = await startFromArgs(['--url', t.wsUrl, '--policy', join(dir, 'policy.json'), '--listen', '127.0.0.1:0', '--server-api-key-file', join(dir, 'server.key')], {}, () => undefined);
      const without = await startFromArgs(['--url', t.wsUrl, '--policy', join(dir, 'policy.json'), '--listen', '127.0.0.1:0'], {}, () => undefined);
      try {
        const body = JSON.stringify({ model: 'fake-emb', input: 'hello' });
        const ok = await fetch(`${withKey.gateway.url}/v1/embeddings`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
        expect(ok.status).toBe(200);
        const refused = await fetch(`${without.gateway.url}/v1/embeddings`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
        expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('UNAUTHORIZED');
        expect(refused.status).toBe(401);
      } finally {
        await withKey.close();
        await without.close();
      }
    } finally {
      await t.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
