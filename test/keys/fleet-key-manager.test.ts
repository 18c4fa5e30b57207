import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';

import { CloisterError } from '../../src/errors.js';
import { AEAD_AES_128_GCM, KDF_HKDF_SHA256, KEM_DHKEM_X25519_HKDF_SHA256 } from '../../src/crypto/hpke/suite.js';
import { decodeKeyConfig } from '../../src/protocol/key-config.js';
import { verifyReceipt } from '../../src/protocol/messages.js';
import { replicaReceiptKey } from '../../src/protocol/replica.js';
import { KeyManager } from '../../src/server/keys.js';
import type { FleetKey } from '../../src/server/keys.js';

const SUITE = { kemId: KEM_DHKEM_X25519_HKDF_SHA256, kdfId: KDF_HKDF_SHA256, aeadId: AEAD_AES_128_GCM };
const T0 = 1_800_000_000_000;

function fleetKey(keyId: number, createdMs: number, validMs = 7 * 24 * 3600 * 1000): FleetKey {
  return { keyId, hpkePrivateKey: new Uint8Array(randomBytes(32)), receiptSeed: new Uint8Array(randomBytes(32)), notBeforeMs: createdMs, expiresAtMs: createdMs + validMs };
}

function manager(fleet: readonly FleetKey[], now: () => number): KeyManager {
  return new KeyManager({ platform: 'simulated', models: [], configDigest: new Uint8Array(32).fill(1), fleet, now });
}

describe('KeyManager with fleet keys', () => {
  it('two replicas given the same fleet key publish byte-identical key configs; each signs with its own key, bound by its replica key config', () => {
    const k = fleetKey(7, T0);
    const a = manager([k], () => T0 + 5000);
    const b = manager([k], () => T0 + 90_000);
    expect(Buffer.from(a.current().keyConfig).equals(Buffer.from(b.current().keyConfig))).toBe(true);
    const kc = decodeKeyConfig(a.current().keyConfig);
    expect(kc.keyId).toBe(7);
    expect(kc.notBefore).toBe(T0 / 1000);
    expect(kc.replicaReceipts).toBe(true);
    const msg = new Uint8Array([1, 2, 3]);
    const ra = a.current().replica;
    const rb = b.current().replica;
    if (ra === undefined || rb === undefined) throw new Error('fleet generations carry a replica key');
    // The fleet key config's receipt key signs nothing; each replica's own key does.
    expect(verifyReceipt(kc.receiptPublicKey, msg, b.current().signReceipt(msg))).toBe(false);
    expect(verifyReceipt(rb.receiptPublicKey, msg, b.current().signReceipt(msg))).toBe(true);
    expect(verifyReceipt(ra.receiptPublicKey, msg, b.current().signReceipt(msg))).toBe(false);
    expect(Buffer.from(ra.receiptPublicKey).equals(Buffer.from(rb.receiptPublicKey))).toBe(false);
    // Each replica key config binds that replica's key to this fleet key config.
    expect(replicaReceiptKey(kc, ra.keyConfig)).toEqual(ra.receiptPublicKey);
    expect(replicaReceiptKey(kc, rb.keyConfig)).toEqual(rb.receiptPublicKey);
    // A stand-alone server's key config has no replica part.
    const solo = new KeyManager({ platform: 'simulated', models: [], configDigest: new Uint8Array(32).fill(1), now: () => T0 });
    expect(solo.current().replica).toBeUndefined();
    expect(decodeKeyConfig(solo.current().keyConfig).replicaReceipts).toBeUndefined();
  });

  it('serves the newest as current, the older until it expires, and never rotates locally', () => {
    let now = T0 + 1000;
    const older = fleetKey(3, T0 - 1000, 10_000);
    const newest = fleetKey(4, T0);
    const m = manager([newest, older], () => now);
    expect(m.lookup(4, SUITE).keyId).toBe(4);
    expect(m.lookup(3, SUITE).keyId).toBe(3);
    now = T0 + 10_000;
    expect(() => m.lookup(3, SUITE)).toThrow(expect.objectContaining({ code: 'KEY_STALE' }) as unknown as Error);
    now = T0 + 3 * 3600 * 1000; // past the local rotation interval: still the fleet key
    expect(m.current().keyId).toBe(4);
    expect(() => m.rotate()).toThrow(CloisterError);
  });

  it('refuses an expired fleet key (KEY_STALE) and more than two versions', () => {
    const k = fleetKey(1, T0, 1000);
    expect(() => manager([k], () => T0 + 1000)).toThrow(expect.objectContaining({ code: 'KEY_STALE' }) as unknown as Error);
    expect(() => manager([fleetKey(1, T0), fleetKey(2, T0), fleetKey(3, T0)], () => T0)).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }) as unknown as Error);
  });
});
