import { describe, expect, it } from 'vitest';
import { CloisterError } from '../../src/errors.js';
import { HpkeRecipientKey, generateX25519KeyPair, suiteFromIds } from '../../src/crypto/index.js';
import { decapsulateRequest, decodeOhttpKeyConfig, encapsulateRequest, encodeOhttpKeyConfig } from '../helpers/ohttp-rfc9458.js';
import { hex, toHex } from '../helpers/bytes.js';
import { codeOf } from '../helpers/errors.js';
import { describeWithVectors, hasVectors, readVectorJson } from '../helpers/vectors.js';

/**
 * RFC 9458 Appendix A, as published in the RFC text (the encapsulated request/response and
 * the pinned skE/response nonce). The shared rfc9458.json carries the key config, keys and
 * messages but not these outputs, and its `clientEphemeralPrivate`/`responseNonce` are not
 * the RFC's (its 12-byte nonce is not even valid for AES-128-GCM: max(Nn, Nk) = 16), so the
 * RFC's own values are pinned here.
 */
const RFC = {
  skR: '3c168975674b2fa8e465970b79c8dcf09f1c741626480bd4c6162fc5b6a98e1a',
  keyConfig: '01002031e1f05a740102115220e9af918f738674aec95f54db6e04eb705aae8e79815500080001000100010003',
  request: '00034745540568747470730b6578616d706c652e636f6d012f',
  skE: 'bc51d5e930bda26589890ac7032f70ad12e4ecb37abb1b65b1256c9c48999c73',
  encRequest:
    '010020000100014b28f881333e7c164ffc499ad9796f877f4e1051ee6d31bad19dec96c208b472' +
    '6374e469135906992e1268c594d2a10c695d858c40a026e7965e7d86b83dd440b2c0185204b4d63525',
  response: '0140c8',
  responseNonce: 'c789e7151fcba46158ca84b04464910d',
  encResponse: 'c789e7151fcba46158ca84b04464910d86f9013e404feea014e7be4a441f234f857fbd',
};

const lookupFor =
  (key: HpkeRecipientKey, keyId = 1) =>
  (id: number): HpkeRecipientKey => {
    if (id !== keyId) throw new CloisterError('UNKNOWN_KEY_ID');
    return key;
  };

describe('RFC 9458 Appendix A (published values)', () => {
  const key = HpkeRecipientKey.fromPrivateKey(hex(RFC.skR));
  const kc = decodeOhttpKeyConfig(hex(RFC.keyConfig));
  const target = { keyId: kc.keyId, publicKey: kc.publicKey, suite: suiteFromIds(kc.kemId, 1, 1) };

  it('key config decodes and re-encodes byte for byte', () => {
    expect(kc.keyId).toBe(1);
    expect(toHex(kc.publicKey)).toBe(toHex(key.publicKey));
    expect(kc.symmetric).toEqual([{ kdfId: 1, aeadId: 1 }, { kdfId: 1, aeadId: 3 }]);
    expect(toHex(encodeOhttpKeyConfig(kc))).toBe(RFC.keyConfig);
  });

  it('request seals byte for byte with the pinned skE', () => {
    const { bytes } = encapsulateRequest(target, hex(RFC.request), { ephemeralPrivateKey: hex(RFC.skE) });
    expect(toHex(bytes)).toBe(RFC.encRequest);
  });

  it('gateway opens the request and seals the response byte for byte; client opens it', () => {
    const d = decapsulateRequest(lookupFor(key), hex(RFC.encRequest));
    expect(toHex(d.plaintext)).toBe(RFC.request);
    expect(d.keyId).toBe(1);
    expect(toHex(d.response.seal(hex(RFC.response), { responseNonce: hex(RFC.responseNonce) }))).toBe(RFC.encResponse);
    const { response } = encapsulateRequest(target, hex(RFC.request), { ephemeralPrivateKey: hex(RFC.skE) });
    expect(toHex(response.open(hex(RFC.encResponse)))).toBe(RFC.response);
  });
});

const JSON_9458 = 'ohttp/rfc9458.json';
describeWithVectors(JSON_9458, 'test/vectors ohttp/rfc9458.json', () => {
  interface V {
    keyConfig: string;
    privateKey: string;
    publicKey: string;
    keyId: number;
    kemId: number;
    kdfId: number;
    aeadId: number;
    request: string;
    response: string;
    clientEphemeralPrivate: string;
    responseNonce: string;
  }
  const file = hasVectors(JSON_9458) ? readVectorJson<{ vectors: V[] }>(JSON_9458) : { vectors: [] };

  for (const v of file.vectors) {
    it('key config byte for byte; request/response round-trip with its ephemeral key', () => {
      const kc = decodeOhttpKeyConfig(hex(v.keyConfig));
      expect(toHex(encodeOhttpKeyConfig(kc))).toBe(v.keyConfig);
      expect(kc.keyId).toBe(v.keyId);
      expect(toHex(kc.publicKey)).toBe(v.publicKey);
      const key = HpkeRecipientKey.fromPrivateKey(hex(v.privateKey));
      expect(toHex(key.publicKey)).toBe(v.publicKey);
      const target = { keyId: v.keyId, publicKey: kc.publicKey, suite: suiteFromIds(v.kemId, v.kdfId, v.aeadId) };
      const a = encapsulateRequest(target, hex(v.request), { ephemeralPrivateKey: hex(v.clientEphemeralPrivate) });
      const b = encapsulateRequest(target, hex(v.request), { ephemeralPrivateKey: hex(v.clientEphemeralPrivate) });
      expect(toHex(a.bytes)).toBe(toHex(b.bytes)); // deterministic with a pinned skE
      const d = decapsulateRequest(lookupFor(key, v.keyId), a.bytes);
      expect(toHex(d.plaintext)).toBe(v.request);
      // The file's 12-byte response nonce is not max(Nn, Nk) = 16 bytes: it must be refused.
      expect(codeOf(() => d.response.seal(hex(v.response), { responseNonce: hex(v.responseNonce) }))).toBe('INVALID_ARGUMENT');
      const d2 = decapsulateRequest(lookupFor(key, v.keyId), b.bytes);
      expect(toHex(b.response.open(d2.response.seal(hex(v.response))))).toBe(v.response);
    });
  }
});

describe('RFC 9458 negative cases', () => {
  const kp = generateX25519KeyPair();
  const key = HpkeRecipientKey.fromPrivateKey(kp.privateKey);
  const target = { keyId: 7, publicKey: kp.publicKey, suite: suiteFromIds(0x20, 1, 3) };

  it('rejects bad key configs', () => {
    const good = encodeOhttpKeyConfig({ keyId: 1, kemId: 0x20, publicKey: kp.publicKey, symmetric: [{ kdfId: 1, aeadId: 1 }] });
    expect(codeOf(() => decodeOhttpKeyConfig(Uint8Array.of(...good, 0)))).toBe('MALFORMED');
    expect(codeOf(() => decodeOhttpKeyConfig(good.subarray(0, good.length - 1)))).toBe('MALFORMED');
    const badKem = Uint8Array.from(good);
    badKem[2] = 0x10;
    expect(codeOf(() => decodeOhttpKeyConfig(badKem))).toBe('UNSUPPORTED_SUITE');
    const badAead = Uint8Array.from(good);
    badAead[good.length - 1] = 2;
    expect(codeOf(() => decodeOhttpKeyConfig(badAead))).toBe('UNSUPPORTED_SUITE');
  });

  it('fails on every flipped byte, truncation, trailing bytes, unknown key, bad suite', () => {
    const { bytes } = encapsulateRequest(target, Uint8Array.of(1, 2, 3));
    expect(toHex(decapsulateRequest(lookupFor(key, 7), bytes).plaintext)).toBe('010203');
    for (let i = 0; i < bytes.length; i++) {
      const bad = Uint8Array.from(bytes);
      bad[i] = (bad[i] ?? 0) ^ 0x80;
      const code = codeOf(() => decapsulateRequest(lookupFor(key, 7), bad));
      if (i === 0) expect(code).toBe('UNKNOWN_KEY_ID');
      else if (i < 7) expect(code).toBe('UNSUPPORTED_SUITE');
      else expect(['HPKE_OPEN_FAILED', 'HPKE_DECAP_FAILED']).toContain(code);
    }
    expect(codeOf(() => decapsulateRequest(lookupFor(key, 7), bytes.subarray(0, 38)))).toBe('MALFORMED');
    expect(codeOf(() => decapsulateRequest(lookupFor(key, 7), Uint8Array.of(...bytes, 0)))).toBe('HPKE_OPEN_FAILED');
  });

  it('response: flipped nonce or ciphertext, truncation, reuse', () => {
    const mk = (): { open: (b: Uint8Array) => Uint8Array; sealed: Uint8Array } => {
      const { bytes, response } = encapsulateRequest(target, Uint8Array.of(1));
      const sealed = decapsulateRequest(lookupFor(key, 7), bytes).response.seal(Uint8Array.of(9, 9));
      return { open: (b) => response.open(b), sealed };
    };
    const { sealed } = mk();
    for (let i = 0; i < sealed.length; i++) {
      const m = mk();
      const bad = Uint8Array.from(m.sealed);
      bad[i] = (bad[i] ?? 0) ^ 1;
      expect(codeOf(() => m.open(bad))).toBe('HPKE_OPEN_FAILED');
    }
    const m = mk();
    expect(codeOf(() => m.open(m.sealed.subarray(0, 16 + 15)))).toBe('MALFORMED');
    const m2 = mk();
    expect(toHex(m2.open(m2.sealed))).toBe('0909');
    expect(codeOf(() => m2.open(m2.sealed))).toBe('PROTOCOL_VIOLATION');
  });
});
