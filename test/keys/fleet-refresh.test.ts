/**
 * Periodic fleet key re-fetch (src/server/fleet-refresh.ts, KeyManager.updateFleet): a rotation
 * at a real key broker reaches a running replica's key manager on the next re-fetch, with the
 * previous version still usable (overlap); a failed re-fetch is reported and changes nothing.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createSimulatedAttester } from '../../src/attester/simulated/index.js';
import type { SimulatedAttester } from '../../src/attester/simulated/index.js';
import { AEAD_AES_128_GCM, KDF_HKDF_SHA256, KEM_DHKEM_X25519_HKDF_SHA256 } from '../../src/crypto/hpke/suite.js';
import { KeyBroker } from '../../src/keys/broker.js';
import { BrokerAdminClient } from '../../src/keys/client.js';
import { decodeKeyConfig } from '../../src/protocol/key-config.js';
import { DEFAULT_FLEET_REFRESH_MS, startFleetRefresh } from '../../src/server/fleet-refresh.js';
import type { FleetRefreshEvent } from '../../src/server/fleet-refresh.js';
import { KeyManager } from '../../src/server/keys.js';
import type { FleetKey } from '../../src/server/keys.js';
import { fetchFleetKeys } from '../../src/server/sealed-models.js';
import { until } from '../helpers/until.js';

const SUITE = { kemId: KEM_DHKEM_X25519_HKDF_SHA256, kdfId: KDF_HKDF_SHA256, aeadId: AEAD_AES_128_GCM };
const T0 = 1_800_000_000_000;
const DAY = 24 * 3600 * 1000;

function fleetKey(keyId: number, createdMs: number, validMs = 7 * DAY): FleetKey {
  return { keyId, hpkePrivateKey: new Uint8Array(randomBytes(32)), receiptSeed: new Uint8Array(randomBytes(32)), notBeforeMs: createdMs, expiresAtMs: createdMs + validMs };
}

function manager(fleet: readonly FleetKey[], now: () => number = Date.now): KeyManager {
  return new KeyManager({ platform: 'simulated', models: [], configDigest: new Uint8Array(32).fill(1), fleet, now });
}

const codeOf = (fn: () => unknown): unknown => {
  try {
    fn();
  } catch (err) {
    return (err as { code?: unknown }).code;
  }
  return undefined;
};

describe('KeyManager.updateFleet', () => {
  it('a new newest version becomes current, the one released next to it stays usable until it expires, others are retired', () => {
    let now = T0 + 1000;
    const k1 = fleetKey(1, T0);
    const m = manager([k1], () => now);
    const gen1 = m.current();
    expect(m.updateFleet([k1])).toBe(false);
    expect(m.current()).toBe(gen1);

    const k2 = fleetKey(2, T0 + 500, DAY);
    expect(m.updateFleet([k2, k1])).toBe(true);
    expect(m.current().keyId).toBe(2);
    expect(decodeKeyConfig(m.current().keyConfig).keyId).toBe(2);
    // The overlap: the generation already served goes on (same object: its receipt log continues).
    expect(m.lookup(1, SUITE)).toBe(gen1);

    const k3 = fleetKey(3, T0 + 600);
    expect(m.updateFleet([k3, k2])).toBe(true);
    expect(m.lookup(2, SUITE).keyId).toBe(2);
    expect(codeOf(() => m.lookup(1, SUITE))).toBe('KEY_STALE');
    now = T0 + 500 + DAY;
    expect(codeOf(() => m.lookup(2, SUITE))).toBe('KEY_STALE');
    expect(m.current().keyId).toBe(3);
  });

  it('refuses an expired newest version (KEY_STALE), a bad list, and a manager that serves its own keys', () => {
    const m = manager([fleetKey(1, T0)], () => T0 + 1000);
    expect(codeOf(() => m.updateFleet([fleetKey(2, T0 - 2 * DAY, DAY)]))).toBe('KEY_STALE');
    expect(m.current().keyId).toBe(1);
    expect(codeOf(() => m.updateFleet([]))).toBe('CONFIG_INVALID');
    expect(codeOf(() => m.updateFleet([fleetKey(2, T0), fleetKey(3, T0), fleetKey(4, T0)]))).toBe('CONFIG_INVALID');
    const own = new KeyManager({ platform: 'simulated', models: [], configDigest: new Uint8Array(32) });
    expect(codeOf(() => own.updateFleet([fleetKey(1, T0)]))).toBe('CONFIG_INVALID');
  });
});

describe('periodic re-fetch from a key broker', () => {
  let root: string;
  let tee: SimulatedAttester;
  const adminSecret = new Uint8Array(randomBytes(32));
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'cloister-fleet-refresh-'));
    tee = await createSimulatedAttester({ measurements: { codeDigest: new Uint8Array(32).fill(7) } });
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('a rotation at the broker reaches the running key manager; the old key config keeps working; a broker outage is reported and changes nothing', async () => {
    const broker = await KeyBroker.open({ storeDir: join(root, 'store'), storeKey: new Uint8Array(randomBytes(32)), adminSecret });
    const { url } = await broker.listen('127.0.0.1', 0);
    let closed = false;
    const events: FleetRefreshEvent[] = [];
    let refresh: ReturnType<typeof startFleetRefresh> | undefined;
    try {
      const admin = new BrokerAdminClient(url, adminSecret);
      const s = tee.policySection();
      await admin.register('fleet', 'fleet', { version: 1, platforms: { simulated: { pcrs: { '0': s.pcrs['0'] }, rootSha256: s.rootSha256 } } });
      const fetch = (): Promise<FleetKey[]> => fetchFleetKeys('fleet', { keyBroker: url, attester: tee });
      const keys = manager(await fetch());
      const first = keys.current();
      refresh = startFleetRefresh({ intervalMs: 50, fetch, apply: (k) => keys.updateFleet(k), onEvent: (e) => events.push(e) });
      await until(() => events.length >= 1, 500, 10, 'a first re-fetch');
      expect(events[0]).toEqual({ type: 'fleet-refreshed', changed: false, keyId: first.keyId });

      await admin.rotate('fleet');
      await until(() => keys.current().keyId !== first.keyId, 500, 10, 'the rotated fleet key');
      expect(keys.current().keyId).toBe((first.keyId + 1) % 256);
      expect(events).toContainEqual({ type: 'fleet-refreshed', changed: true, keyId: keys.current().keyId });
      // Overlap: a client holding the old key config still gets its requests opened.
      expect(keys.lookup(first.keyId, SUITE)).toBe(first);

      await broker.close();
      closed = true;
      const before = events.length;
      await until(() => events.slice(before).some((e) => e.type === 'fleet-refresh-failed'), 500, 10, 'a failed re-fetch');
      expect(events.slice(before).find((e) => e.type === 'fleet-refresh-failed')).toEqual({ type: 'fleet-refresh-failed', code: 'CONNECTION_FAILED' });
      expect(keys.lookup(first.keyId, SUITE)).toBe(first);
    } finally {
      refresh?.stop();
      if (!closed) await broker.close();
    }
  });

  it('the interval is a named option with a default; stop() ends the schedule', async () => {
    expect(DEFAULT_FLEET_REFRESH_MS).toBe(600_000);
    expect(() => startFleetRefresh({ intervalMs: 0, fetch: () => Promise.resolve([]), apply: () => false })).toThrow(/intervalMs/);
    let calls = 0;
    const r = startFleetRefresh({ intervalMs: 20, fetch: () => Promise.resolve([fleetKey(1, T0)]), apply: () => (calls++, false) });
    await until(() => calls >= 2, 500, 10, 'two re-fetches');
    r.stop();
    const at = calls;
    await new Promise((done) => setTimeout(done, 100));
    expect(calls).toBe(at);
  });
});
