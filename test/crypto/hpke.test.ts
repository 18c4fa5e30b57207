import { describe, expect, it } from 'vitest';
import {
  generateX25519KeyPair,
  HpkeRecipientKey,
  setupBaseRecipient,
  setupBaseSender,
  suiteFromIds,
  timingSafeEqualBytes,
} from '../../src/crypto/index.js';
import { HpkeRecipientContext, HpkeSenderContext, MAX_SEQUENCE, xorNonce } from '../../src/crypto/hpke/context.js';
import { deriveX25519PrivateKey } from '../../src/crypto/hpke/kem.js';
import { setupBaseSenderDetailed } from '../../src/crypto/hpke/setup.js';
import { suiteParams } from '../../src/crypto/hpke/suite.js';
import { hex, toHex } from '../helpers/bytes.js';
import { codeOf } from '../helpers/errors.js';
import { describeWithVectors, hasVectors, readVectorText } from '../helpers/vectors.js';
import { parseRfc9180 } from './rfc9180.js';
import { AES, CHACHA } from './suites.js';

const RFC9180 = 'hpke/rfc9180-A1-A2.txt';


describeWithVectors(RFC9180, 'RFC 9180 Appendix A.1 / A.2 vectors', () => {
  const vectors = hasVectors(RFC9180) ? parseRfc9180(readVectorText(RFC9180)) : [];

  it('parses all four modes of both suites', () => {
    expect(vectors).toHaveLength(8);
    const modes = vectors.map((v) => v.setup.get('mode'));
    expect(modes).toEqual(['0', '1', '2', '3', '0', '1', '2', '3']);
    for (const v of vectors) {
      expect(v.setup.get('kem_id')).toBe('32');
      expect(v.setup.get('kdf_id')).toBe('1');
      expect(['1', '3']).toContain(v.setup.get('aead_id'));
      expect(v.encryptions.length).toBeGreaterThanOrEqual(6);
      expect(v.exports).toHaveLength(3);
      for (const e of v.encryptions) for (const k of ['sequence number', 'pt', 'aad', 'nonce', 'ct']) expect(e.has(k)).toBe(true);
    }
  });

  // Only base mode (0) is implemented: Cloister never uses PSK or Auth modes (docs/PROTOCOL.md
  // section 3), so modes 1-3 are parsed above but not executed.
  const base = vectors.filter((v) => v.setup.get('mode') === '0');

  it('has exactly one base-mode vector per suite (A.1.1 and A.2.1)', () => {
    expect(base.map((v) => v.setup.get('aead_id'))).toEqual(['1', '3']);
  });

  for (const v of base) {
    const s = (k: string): string => {
      const val = v.setup.get(k);
      if (val === undefined) throw new Error(`missing ${k}`);
      return val;
    };
    const suite = suiteFromIds(Number(s('kem_id')), Number(s('kdf_id')), Number(s('aead_id')));

    describe(v.suiteTitle, () => {
      it('DeriveKeyPair reproduces skEm and skRm; the recipient key yields pkRm', () => {
        expect(toHex(deriveX25519PrivateKey(hex(s('ikmE'))))).toBe(s('skEm'));
        expect(toHex(deriveX25519PrivateKey(hex(s('ikmR'))))).toBe(s('skRm'));
        expect(toHex(HpkeRecipientKey.fromPrivateKey(hex(s('skRm'))).publicKey)).toBe(s('pkRm'));
      });

      it('sender key schedule matches (enc, shared_secret, context, secret, key, base_nonce, exporter_secret)', () => {
        const r = setupBaseSenderDetailed(suite, hex(s('pkRm')), hex(s('info')), { ikmE: hex(s('ikmE')) });
        expect(toHex(r.enc)).toBe(s('enc'));
        expect(toHex(r.enc)).toBe(s('pkEm'));
        expect(toHex(r.sharedSecret)).toBe(s('shared_secret'));
        expect(toHex(r.schedule.keyScheduleContext)).toBe(s('key_schedule_context'));
        expect(toHex(r.schedule.secret)).toBe(s('secret'));
        expect(toHex(r.schedule.key)).toBe(s('key'));
        expect(toHex(r.schedule.baseNonce)).toBe(s('base_nonce'));
        expect(toHex(r.schedule.exporterSecret)).toBe(s('exporter_secret'));
        // Pinning skE directly gives the same result as deriving it from ikmE.
        const pinned = setupBaseSender(suite, hex(s('pkRm')), hex(s('info')), { ephemeralPrivateKey: hex(s('skEm')) });
        expect(toHex(pinned.enc)).toBe(s('enc'));
      });

      it('every listed sequence number seals to ct and opens back, in lock-step', () => {
        const { context: sender } = setupBaseSender(suite, hex(s('pkRm')), hex(s('info')), { ikmE: hex(s('ikmE')) });
        const recipient = setupBaseRecipient(suite, hex(s('enc')), HpkeRecipientKey.fromPrivateKey(hex(s('skRm'))), hex(s('info')));
        const base = hex(s('base_nonce'));
        let checked = 0;
        for (const e of v.encryptions) {
          const seq = Number(e.get('sequence number'));
          // Advance both contexts over the unlisted sequence numbers.
          while (sender.sequenceNumber < seq) recipient.open(sender.seal(new Uint8Array(0)));
          expect(toHex(xorNonce(base, seq))).toBe(e.get('nonce'));
          const ct = sender.seal(hex(e.get('pt') ?? ''), hex(e.get('aad') ?? ''));
          expect(toHex(ct)).toBe(e.get('ct'));
          expect(toHex(recipient.open(ct, hex(e.get('aad') ?? '')))).toBe(e.get('pt'));
          checked++;
        }
        expect(checked).toBe(v.encryptions.length);
        expect(sender.sequenceNumber).toBe(257);
      });

      it('every export matches on both sides', () => {
        const { context: sender } = setupBaseSender(suite, hex(s('pkRm')), hex(s('info')), { ikmE: hex(s('ikmE')) });
        const recipient = setupBaseRecipient(suite, hex(s('enc')), HpkeRecipientKey.fromPrivateKey(hex(s('skRm'))), hex(s('info')));
        for (const e of v.exports) {
          const ctx = hex(e.get('exporter_context') ?? '');
          const len = Number(e.get('L'));
          expect(toHex(sender.export(ctx, len))).toBe(e.get('exported_value'));
          expect(toHex(recipient.export(ctx, len))).toBe(e.get('exported_value'));
        }
      });
    });
  }
});

describe('HPKE base mode (node:crypto)', () => {
  for (const suite of [AES, CHACHA]) {
    it(`round-trips many messages with aad, aead ${suite.aeadId}`, () => {
      const kp = generateX25519KeyPair();
      const key = HpkeRecipientKey.fromPrivateKey(kp.privateKey);
      expect(toHex(key.publicKey)).toBe(toHex(kp.publicKey));
      const info = Uint8Array.of(1, 2, 3);
      const { enc, context } = setupBaseSender(suite, kp.publicKey, info);
      const r = setupBaseRecipient(suite, enc, key, info);
      for (let i = 0; i < 5; i++) {
        const pt = Uint8Array.from({ length: i * 7 }, (_, j) => j);
        const aad = Uint8Array.of(i);
        expect(toHex(r.open(context.seal(pt, aad), aad))).toBe(toHex(pt));
      }
      expect(toHex(context.export(Uint8Array.of(9), 48))).toBe(toHex(r.export(Uint8Array.of(9), 48)));
    });
  }

  it('rejects unsupported suites', () => {
    expect(codeOf(() => suiteFromIds(0x0010, 1, 1))).toBe('UNSUPPORTED_SUITE');
    expect(codeOf(() => suiteFromIds(0x0020, 2, 1))).toBe('UNSUPPORTED_SUITE');
    expect(codeOf(() => suiteFromIds(0x0020, 1, 2))).toBe('UNSUPPORTED_SUITE');
    expect(codeOf(() => suiteFromIds(0x0020, 1, 0xffff))).toBe('UNSUPPORTED_SUITE');
    expect(suiteFromIds(0x0020, 1, 3)).toEqual(CHACHA);
  });

  it('checks exact lengths before any crypto', () => {
    const kp = generateX25519KeyPair();
    const key = HpkeRecipientKey.fromPrivateKey(kp.privateKey);
    const { enc } = setupBaseSender(AES, kp.publicKey, new Uint8Array(0));
    expect(codeOf(() => setupBaseRecipient(AES, enc.subarray(0, 31), key, new Uint8Array(0)))).toBe('HPKE_DECAP_FAILED');
    expect(codeOf(() => setupBaseRecipient(AES, new Uint8Array(33), key, new Uint8Array(0)))).toBe('HPKE_DECAP_FAILED');
    expect(codeOf(() => setupBaseRecipient(AES, new Uint8Array(0), key, new Uint8Array(0)))).toBe('HPKE_DECAP_FAILED');
    expect(codeOf(() => setupBaseSender(AES, kp.publicKey.subarray(1), new Uint8Array(0)))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => HpkeRecipientKey.fromPrivateKey(new Uint8Array(31)))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => setupBaseSender(AES, kp.publicKey, new Uint8Array(0), { ikmE: new Uint8Array(31) }))).toBe('INVALID_ARGUMENT');
  });

  it('rejects a small-order enc (all-zero X25519 output)', () => {
    const key = HpkeRecipientKey.generate();
    // u = 0 and u = 1 are small-order points: the DH output is all zero (RFC 9180 section 7.1.4).
    const zero = new Uint8Array(32);
    const one = new Uint8Array(32);
    one[0] = 1;
    expect(codeOf(() => setupBaseRecipient(AES, zero, key, new Uint8Array(0)))).toBe('HPKE_DECAP_FAILED');
    expect(codeOf(() => setupBaseRecipient(AES, one, key, new Uint8Array(0)))).toBe('HPKE_DECAP_FAILED');
  });

  it('fails to open with a wrong key, wrong info, wrong aad, truncated or flipped ciphertext; seq does not advance', () => {
    const kp = generateX25519KeyPair();
    const key = HpkeRecipientKey.fromPrivateKey(kp.privateKey);
    const info = Uint8Array.of(7);
    const { enc, context } = setupBaseSender(AES, kp.publicKey, info);
    const ct = context.seal(Uint8Array.of(1, 2, 3), Uint8Array.of(4));
    const mk = (): HpkeRecipientContext => setupBaseRecipient(AES, enc, key, info);
    expect(codeOf(() => setupBaseRecipient(AES, enc, HpkeRecipientKey.generate(), info).open(ct, Uint8Array.of(4)))).toBe('HPKE_OPEN_FAILED');
    expect(codeOf(() => setupBaseRecipient(AES, enc, key, Uint8Array.of(8)).open(ct, Uint8Array.of(4)))).toBe('HPKE_OPEN_FAILED');
    expect(codeOf(() => mk().open(ct, Uint8Array.of(5)))).toBe('HPKE_OPEN_FAILED');
    expect(codeOf(() => mk().open(ct))).toBe('HPKE_OPEN_FAILED');
    expect(codeOf(() => mk().open(ct.subarray(0, 15), Uint8Array.of(4)))).toBe('HPKE_OPEN_FAILED');
    for (let i = 0; i < ct.length; i++) {
      const bad = Uint8Array.from(ct);
      bad[i] = (bad[i] ?? 0) ^ 0x01;
      expect(codeOf(() => mk().open(bad, Uint8Array.of(4)))).toBe('HPKE_OPEN_FAILED');
    }
    const r = mk();
    expect(codeOf(() => r.open(Uint8Array.from(ct).fill(0), Uint8Array.of(4)))).toBe('HPKE_OPEN_FAILED');
    expect(r.sequenceNumber).toBe(0);
    expect(toHex(r.open(ct, Uint8Array.of(4)))).toBe('010203');
    expect(r.sequenceNumber).toBe(1);
    // Replaying the same ciphertext at the next sequence number fails.
    expect(codeOf(() => r.open(ct, Uint8Array.of(4)))).toBe('HPKE_OPEN_FAILED');
  });

  it('refuses to seal or open past the message limit', () => {
    const p = suiteParams(AES);
    const key = new Uint8Array(16);
    const nonce = new Uint8Array(12);
    const s = new HpkeSenderContext(p, key, nonce, new Uint8Array(32), MAX_SEQUENCE - 1);
    const last = s.seal(new Uint8Array(0));
    expect(codeOf(() => s.seal(new Uint8Array(0)))).toBe('HPKE_MESSAGE_LIMIT');
    const r = new HpkeRecipientContext(p, key, nonce, new Uint8Array(32), MAX_SEQUENCE - 1);
    expect(r.open(last)).toHaveLength(0);
    expect(codeOf(() => r.open(last))).toBe('HPKE_MESSAGE_LIMIT');
  });

  it('never mutates or aliases caller buffers (pooled Buffer subarrays)', () => {
    const kp = generateX25519KeyPair();
    // Buffer.from(string) slices Node's shared pool: overwrite the pool slice after use.
    const pk = Buffer.from(toHex(kp.publicKey), 'hex');
    const info = Buffer.from('0a0b0c', 'hex');
    const pt = Buffer.from('68656c6c6f', 'hex');
    const aad = Buffer.from('aa', 'hex');
    const snapshot = [pk, info, pt, aad].map((b) => toHex(b));
    const { enc, context } = setupBaseSender(AES, pk, info);
    const ct = context.seal(pt, aad);
    expect([pk, info, pt, aad].map((b) => toHex(b))).toEqual(snapshot);
    const encCopy = toHex(enc);
    const ctCopy = toHex(ct);
    const key = HpkeRecipientKey.fromPrivateKey(Buffer.from(toHex(kp.privateKey), 'hex'));
    const pub1 = key.publicKey;
    pub1.fill(0);
    expect(toHex(key.publicKey)).toBe(toHex(kp.publicKey));
    pk.fill(0xee);
    info.fill(0xee);
    pt.fill(0xee);
    aad.fill(0xee);
    expect(toHex(enc)).toBe(encCopy);
    expect(toHex(ct)).toBe(ctCopy);
    const encBuf = Buffer.from(encCopy, 'hex');
    const ctBuf = Buffer.from(ctCopy, 'hex');
    const r = setupBaseRecipient(AES, encBuf, key, Buffer.from('0a0b0c', 'hex'));
    const out = r.open(ctBuf, Buffer.from('aa', 'hex'));
    expect(toHex(ctBuf)).toBe(ctCopy);
    encBuf.fill(0);
    ctBuf.fill(0);
    expect(toHex(out)).toBe('68656c6c6f');
    // Outputs are standalone arrays, not views into a shared pool.
    expect(out.byteOffset).toBe(0);
    expect(out.buffer.byteLength).toBe(out.byteLength);
    expect(ct.buffer.byteLength).toBe(ct.byteLength);
  });
});

describe('timingSafeEqualBytes', () => {
  it('compares by content and length', () => {
    expect(timingSafeEqualBytes(Uint8Array.of(1, 2), Uint8Array.of(1, 2))).toBe(true);
    expect(timingSafeEqualBytes(Uint8Array.of(1, 2), Uint8Array.of(1, 3))).toBe(false);
    expect(timingSafeEqualBytes(Uint8Array.of(1, 2), Uint8Array.of(1, 2, 3))).toBe(false);
    expect(timingSafeEqualBytes(new Uint8Array(0), new Uint8Array(0))).toBe(true);
  });
});
