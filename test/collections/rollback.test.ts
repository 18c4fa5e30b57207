/**
 * The collections' storage key from the key broker, and rollback protection by the broker's
 * monotonic counters (docs/COLLECTIONS.md "Keys" and "Rollback"; src/keys/counters.ts).
 * A real broker on loopback, real evidence from the simulated attester; embeddings from a
 * deterministic test embedder (the store is under test, not the model).
 */
import { randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createSimulatedAttester } from '../../src/attester/simulated/index.js';
import type { SimulatedAttester } from '../../src/attester/simulated/index.js';
import { loadSimulatedRoot } from '../../src/attester/simulated/root-store.js';
import { BrokerStorageKeys } from '../../src/collections/broker-keys.js';
import type { StorageKeySource } from '../../src/collections/keys.js';
import { CollectionStore } from '../../src/collections/store.js';
import { KeyBroker } from '../../src/keys/broker.js';
import { BrokerAdminClient, BrokerCounters } from '../../src/keys/client.js';
import { codeOf, codeOfAsync } from '../helpers/errors.js';

const DIMS = 8;
function embed(texts: readonly string[]): Promise<Float32Array[]> {
  return Promise.resolve(
    texts.map((t) => {
      const v = new Float32Array(DIMS);
      for (let i = 0; i < t.length; i++) v[t.charCodeAt(i) % DIMS] = (v[t.charCodeAt(i) % DIMS] ?? 0) + 1;
      const n = Math.hypot(...v) || 1;
      return v.map((x) => x / n);
    }),
  );
}

const signal = new AbortController().signal;
const adminSecret = new Uint8Array(randomBytes(32));
const storeKey = new Uint8Array(randomBytes(32));
let root: string;
let tee: SimulatedAttester;
let other: SimulatedAttester;
let broker: KeyBroker;
let url: string;
let dir: string;

function policyFor(a: SimulatedAttester): unknown {
  const s = a.policySection();
  return { version: 1, platforms: { simulated: { pcrs: { '0': s.pcrs['0'] }, rootSha256: s.rootSha256 } } };
}

function store(keys: StorageKeySource): CollectionStore {
  return new CollectionStore({ dir, keys, embed, dims: DIMS });
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'cloister-rollback-'));
  tee = await createSimulatedAttester({ measurements: { codeDigest: new Uint8Array(32).fill(7) } });
  await tee.storeRoot(join(root, 'sim'));
  const simRoot = await loadSimulatedRoot(join(root, 'sim'));
  other = await createSimulatedAttester({ measurements: { codeDigest: new Uint8Array(32).fill(9) }, ...(simRoot === undefined ? {} : { root: simRoot }) });
  broker = await KeyBroker.open({ storeDir: join(root, 'broker'), storeKey, adminSecret });
  url = (await broker.listen('127.0.0.1', 0)).url;
  const admin = new BrokerAdminClient(url, adminSecret);
  await admin.register('collections', 'storage', policyFor(tee));
  await admin.register('pinned-other', 'storage', policyFor(other));
});
afterAll(async () => {
  await broker.close();
  await rm(root, { recursive: true, force: true });
});
beforeEach(async () => {
  dir = await mkdtemp(join(root, 'store-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('storage key from the key broker', () => {
  it('is released to matching evidence; the store reloads under it; a broker pinning another measurement refuses (POLICY_MISMATCH)', async () => {
    const keys = await BrokerStorageKeys.open({ brokerUrl: url, key: 'collections', attester: tee });
    expect(keys.kind).toBe('key-broker');
    expect(keys.hostReadable).toBe(false);
    const s = store(keys);
    await s.load();
    const c = await s.create();
    await s.add(c.id, c.capability, [{ id: 'd1', text: 'alpha beta gamma' }], signal);
    await s.close();
    // A second start: the key is released again (same key), the collection opens.
    const again = store(await BrokerStorageKeys.open({ brokerUrl: url, key: 'collections', attester: tee }));
    expect(await again.load()).toMatchObject({ collections: 1, documents: 1, corrupt: [], rolledBack: [], missing: [] });
    expect((await again.retrieve(c.id, c.capability, 'alpha', 1, signal)).chunks[0]?.document).toBe('d1');
    await again.close();

    expect(await codeOfAsync(BrokerStorageKeys.open({ brokerUrl: url, key: 'pinned-other', attester: tee }))).toBe('POLICY_MISMATCH');
    // A key of another kind is not a storage key.
    await new BrokerAdminClient(url, adminSecret).register('a-fleet', 'fleet', policyFor(tee));
    expect(await codeOfAsync(BrokerStorageKeys.open({ brokerUrl: url, key: 'a-fleet', attester: tee }))).toBe('CONFIG_INVALID');
    // A storage key is never rotated: what it sealed would be orphaned.
    expect(await codeOfAsync(new BrokerAdminClient(url, adminSecret).rotate('collections'))).toBe('INVALID_ARGUMENT');
  });
});

describe('rollback counters', () => {
  it('an older copy of a collection file put back is refused (STORAGE_ROLLBACK); the other collections are served', async () => {
    const keys = await BrokerStorageKeys.open({ brokerUrl: url, key: 'collections', attester: tee });
    const s = store(keys);
    await s.load();
    const a = await s.create();
    const b = await s.create();
    await s.add(a.id, a.capability, [{ id: 'd1', text: 'alpha beta gamma' }], signal);
    await s.add(b.id, b.capability, [{ id: 'x1', text: 'other collection' }], signal);
    // The host keeps a copy of a's file at version 1 ...
    await copyFile(join(dir, `${a.id}.col`), join(root, 'old.col'));
    await s.add(a.id, a.capability, [{ id: 'd2', text: 'delta epsilon' }], signal);
    // ... and the erasure of d1 is what it wants to undo.
    await s.delete(a.id, a.capability, ['d1']);
    await s.close();
    await copyFile(join(root, 'old.col'), join(dir, `${a.id}.col`));

    const again = store(keys);
    const report = await again.load();
    expect(report.rolledBack).toEqual([a.id]);
    expect(report.corrupt).toEqual([]);
    expect(report.collections).toBe(1);
    expect(codeOf(() => again.list(a.id, a.capability))).toBe('STORAGE_ROLLBACK');
    expect(await codeOfAsync(again.retrieve(a.id, a.capability, 'alpha', 1, signal))).toBe('STORAGE_ROLLBACK');
    expect(again.list(b.id, b.capability).documents.map((d) => d.id)).toEqual(['x1']);
    await again.close();
  });

  it('the same older copy loads without counters (key file fallback): what the counter adds', async () => {
    // Control: a store whose keys have no counters accepts the rolled-back file.
    const keys = await BrokerStorageKeys.open({ brokerUrl: url, key: 'collections', attester: tee });
    const s = store(keys);
    await s.load();
    const a = await s.create();
    await s.add(a.id, a.capability, [{ id: 'd1', text: 'alpha' }], signal);
    await copyFile(join(dir, `${a.id}.col`), join(root, 'old2.col'));
    await s.add(a.id, a.capability, [{ id: 'd2', text: 'beta' }], signal);
    await s.close();
    await copyFile(join(root, 'old2.col'), join(dir, `${a.id}.col`));
    const noCounters: StorageKeySource = { kind: 'test', hostReadable: true, collectionKey: (id) => keys.collectionKey(id) };
    const blind = store(noCounters);
    expect((await blind.load()).rolledBack).toEqual([]);
    expect(blind.list(a.id, a.capability).version).toBe(1);
    await blind.close();
  });

  it('a collection file the counter knows that is gone is reported missing (STORAGE_ROLLBACK)', async () => {
    const keys = await BrokerStorageKeys.open({ brokerUrl: url, key: 'collections', attester: tee });
    const s = store(keys);
    await s.load();
    const a = await s.create();
    await s.close();
    await rm(join(dir, `${a.id}.col`));
    const again = store(keys);
    // Counters of the other tests' collections (same broker key, other directories) are missing here too.
    expect((await again.load()).missing).toContain(a.id);
    expect(codeOf(() => again.list(a.id, a.capability))).toBe('STORAGE_ROLLBACK');
    await again.close();
  });

  it('a change written but not counted (broker unreachable) is not acknowledged (ROLLBACK_COUNTER_FAILED); the next start counts it', async () => {
    const keys = await BrokerStorageKeys.open({ brokerUrl: url, key: 'collections', attester: tee });
    let down = false;
    const flaky: StorageKeySource = {
      kind: keys.kind,
      hostReadable: false,
      collectionKey: (id) => keys.collectionKey(id),
      counters: {
        readAll: () => keys.counters.readAll(),
        advance: (c, v) => (down ? Promise.reject(new Error('broker unreachable')) : keys.counters.advance(c, v)),
      },
    };
    const s = store(flaky);
    await s.load();
    const a = await s.create();
    await s.add(a.id, a.capability, [{ id: 'd1', text: 'alpha' }], signal);
    down = true;
    expect(await codeOfAsync(s.add(a.id, a.capability, [{ id: 'd2', text: 'beta' }], signal))).toBe('ROLLBACK_COUNTER_FAILED');
    // Nothing more is written while the counter lags.
    expect(await codeOfAsync(s.add(a.id, a.capability, [{ id: 'd3', text: 'gamma' }], signal))).toBe('ROLLBACK_COUNTER_FAILED');
    await s.close();
    const counters = await keys.counters.readAll();
    expect(counters.get(a.id)).toBe(1);
    const again = store(keys);
    expect((await again.load()).rolledBack).toEqual([]);
    expect(again.list(a.id, a.capability).version).toBe(2);
    expect((await keys.counters.readAll()).get(a.id)).toBe(2);
    await again.close();
  });
});

describe('counter requests at the broker', () => {
  it('refuse a request without the storage key (UNAUTHORIZED), never go back, and a forged answer is refused by the TEE', async () => {
    const keys = await BrokerStorageKeys.open({ brokerUrl: url, key: 'collections', attester: tee });
    // Someone without the storage key: a MAC under another key.
    const outsider = new BrokerCounters(url, 'collections', new Uint8Array(32).fill(1));
    expect(await codeOfAsync(outsider.advance('ffffffffffffffffffffffffffffffff', 99))).toBe('UNAUTHORIZED');
    expect(await codeOfAsync(outsider.read())).toBe('UNAUTHORIZED');
    await keys.counters.advance('c1', 5);
    await keys.counters.advance('c1', 3);
    expect((await keys.counters.readAll()).get('c1')).toBe(5);

    // A host in the middle that answers a read itself (an empty list: "no counters").
    const server: Server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        const body = req.url?.endsWith('/read') ? { counters: [], mac: '00'.repeat(32) } : { value: 1_000_000, mac: '00'.repeat(32) };
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const mitm = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const viaHost = new BrokerCounters(mitm, 'collections', new Uint8Array(randomBytes(32)));
      expect(await codeOfAsync(viaHost.read())).toBe('KEY_RELEASE_REFUSED');
      expect(await codeOfAsync(viaHost.advance('c1', 6))).toBe('KEY_RELEASE_REFUSED');
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('counters survive a broker restart; maxCounters is enforced (LIMIT_EXCEEDED)', async () => {
    const bdir = join(root, 'broker-small');
    let b = await KeyBroker.open({ storeDir: bdir, storeKey, adminSecret, limits: { maxCounters: 2 } });
    let u = (await b.listen('127.0.0.1', 0)).url;
    await new BrokerAdminClient(u, adminSecret).register('s', 'storage', policyFor(tee));
    let keys = await BrokerStorageKeys.open({ brokerUrl: u, key: 's', attester: tee });
    await keys.counters.advance('a', 1);
    await keys.counters.advance('b', 7);
    expect(await codeOfAsync(keys.counters.advance('c', 1))).toBe('LIMIT_EXCEEDED');
    await b.close();
    b = await KeyBroker.open({ storeDir: bdir, storeKey, adminSecret, limits: { maxCounters: 2 } });
    u = (await b.listen('127.0.0.1', 0)).url;
    try {
      keys = await BrokerStorageKeys.open({ brokerUrl: u, key: 's', attester: tee });
      expect([...(await keys.counters.readAll())]).toEqual([
        ['a', 1],
        ['b', 7],
      ]);
    } finally {
      await b.close();
    }
  });
});
