import { describe, expect, it } from 'vitest';
import {
  AEAD_AES_128_GCM,
  generateX25519KeyPair,
  HpkeRecipientKey,
  setupBaseRecipient,
  setupBaseSender,
} from '../../src/crypto/index.js';
import { portableSetupBaseRecipient, portableSetupBaseSender } from '../helpers/hpke-portable.js';
import type { HpkeSuite } from '../../src/crypto/index.js';
import { toHex } from '../helpers/bytes.js';
import { codeOfAsync } from '../helpers/errors.js';
import { AES, CHACHA } from './suites.js';

const suites: readonly HpkeSuite[] = [AES, CHACHA];
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('cross-implementation: node:crypto <-> hpke library', () => {
  for (const suite of suites) {
    const name = suite.aeadId === AEAD_AES_128_GCM ? 'AES-128-GCM' : 'ChaCha20-Poly1305';

    it(`${name}: node:crypto sender -> library recipient (seal, open, export)`, async () => {
      const kp = generateX25519KeyPair();
      const info = enc('cross info');
      const { enc: e, context } = setupBaseSender(suite, kp.publicKey, info);
      const r = await portableSetupBaseRecipient(suite, e, kp.privateKey, info);
      for (let i = 0; i < 4; i++) {
        const pt = enc(`message ${i} `.repeat(i * 10));
        const aad = enc(`aad ${i}`);
        expect(toHex(await r.open(context.seal(pt, aad), aad))).toBe(toHex(pt));
      }
      for (const L of [1, 16, 32, 100]) {
        expect(toHex(await r.export(enc('ctx'), L))).toBe(toHex(context.export(enc('ctx'), L)));
      }
    });

    it(`${name}: library sender -> node:crypto recipient (seal, open, export)`, async () => {
      const kp = generateX25519KeyPair();
      const key = HpkeRecipientKey.fromPrivateKey(kp.privateKey);
      const info = enc('other info');
      const { enc: e, context } = await portableSetupBaseSender(suite, kp.publicKey, info);
      expect(e).toHaveLength(32);
      const r = setupBaseRecipient(suite, e, key, info);
      for (let i = 0; i < 4; i++) {
        const pt = enc(`m${i}`.repeat(i * 33));
        const aad = i % 2 === 0 ? new Uint8Array(0) : enc('a');
        expect(toHex(r.open(await context.seal(pt, aad), aad))).toBe(toHex(pt));
      }
      expect(toHex(r.export(new Uint8Array(0), 64))).toBe(toHex(await context.export(new Uint8Array(0), 64)));
    });

    it(`${name}: library recipient rejects tampering with opaque codes`, async () => {
      const kp = generateX25519KeyPair();
      const { enc: e, context } = setupBaseSender(suite, kp.publicKey, new Uint8Array(0));
      const ct = context.seal(enc('x'));
      const bad = Uint8Array.from(ct);
      bad[0] = (bad[0] ?? 0) ^ 1;
      const r = await portableSetupBaseRecipient(suite, e, kp.privateKey, new Uint8Array(0));
      expect(await codeOfAsync(r.open(bad))).toBe('HPKE_OPEN_FAILED');
      expect(await codeOfAsync(portableSetupBaseRecipient(suite, e.subarray(1), kp.privateKey, new Uint8Array(0)))).toBe(
        'HPKE_DECAP_FAILED',
      );
    });
  }

  it('library adapter rejects unsupported suites', async () => {
    const kp = generateX25519KeyPair();
    expect(await codeOfAsync(portableSetupBaseSender({ kemId: 0x20, kdfId: 1, aeadId: 2 }, kp.publicKey, new Uint8Array(0)))).toBe(
      'UNSUPPORTED_SUITE',
    );
  });
});
