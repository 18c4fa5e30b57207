import { createHash } from 'node:crypto';
import { Encoder } from 'cbor-x';
import { describe, expect, it } from 'vitest';
import { decodeCbor } from '../../../src/core/cbor.js';

// NSM requests keep serde_cbor struct field order, so they are read without the key-order rule.
const decodeRequest = (b: Uint8Array): unknown => decodeCbor(b, { requireCanonical: false });
import {
  decodeNsmResponse,
  encodeAttestationRequest,
  encodeDescribePcrRequest,
  encodeGetRandomRequest,
} from '../../../src/attester/nsm/protocol.js';
import { NitroAttester, NsmClient } from '../../../src/attester/nsm/attester.js';
import { openNsmDevice } from '../../../src/attester/nsm/device.js';
import type { NsmTransport } from '../../../src/attester/nsm/device.js';
import { hex, toHex } from '../../helpers/bytes.js';
import { codeOf } from '../../helpers/errors.js';
import { describeWithVectors, readVector } from '../../helpers/vectors.js';

const tstr = (s: string): string => (0x60 + s.length).toString(16) + Buffer.from(s).toString('hex');
const cborx = new Encoder({ useRecords: false, mapsAsObjects: true, variableMapSize: true, tagUint8Array: false });

describe('NSM request encoding (serde externally tagged enum, as nsm-api serde_cbor)', () => {
  it('GetRandom is the bare text string', () => {
    expect(toHex(encodeGetRandomRequest())).toBe(tstr('GetRandom'));
    expect(toHex(encodeGetRandomRequest())).toBe('6947657452616e646f6d');
  });

  it('DescribePCR { index }', () => {
    const expected = 'a1' + tstr('DescribePCR') + 'a1' + tstr('index') + '10';
    expect(toHex(encodeDescribePcrRequest(16))).toBe(expected);
    expect(toHex(encodeDescribePcrRequest(300))).toBe('a1' + tstr('DescribePCR') + 'a1' + tstr('index') + '19012c');
    expect(codeOf(() => encodeDescribePcrRequest(65536))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => encodeDescribePcrRequest(-1))).toBe('INVALID_ARGUMENT');
  });

  it('Attestation with fields in declaration order, None as null', () => {
    const got = encodeAttestationRequest({ userData: Uint8Array.of(1, 2), publicKey: new Uint8Array(32).fill(0xaa) });
    const expected =
      'a1' + tstr('Attestation') + 'a3' + tstr('user_data') + '420102' + tstr('nonce') + 'f6' + tstr('public_key') + '5820' + 'aa'.repeat(32);
    expect(toHex(got)).toBe(expected);
    // Cross-check with an independent encoder.
    const other = cborx.encode({ Attestation: { user_data: Uint8Array.of(1, 2), nonce: null, public_key: new Uint8Array(32).fill(0xaa) } });
    expect(toHex(got)).toBe(toHex(other));
    const none = encodeAttestationRequest({});
    expect(toHex(none)).toBe('a1' + tstr('Attestation') + 'a3' + tstr('user_data') + 'f6' + tstr('nonce') + 'f6' + tstr('public_key') + 'f6');
  });

  it('bounds request fields and does not alias caller buffers', () => {
    expect(codeOf(() => encodeAttestationRequest({ nonce: new Uint8Array(1025) }))).toBe('LIMIT_EXCEEDED');
    const ud = Uint8Array.of(5, 5);
    const enc = encodeAttestationRequest({ userData: ud });
    ud[0] = 9;
    expect(toHex(enc)).toContain('420505');
  });
});

describe('NSM response parsing', () => {
  it('parses each response variant', () => {
    expect(decodeNsmResponse(hex('a1' + tstr('Attestation') + 'a1' + tstr('document') + '43010203'))).toEqual({
      kind: 'Attestation',
      document: Uint8Array.of(1, 2, 3),
    });
    expect(decodeNsmResponse(hex('a1' + tstr('DescribePCR') + 'a2' + tstr('lock') + 'f5' + tstr('data') + '4100'))).toEqual({
      kind: 'DescribePCR',
      lock: true,
      data: Uint8Array.of(0),
    });
    expect(decodeNsmResponse(hex('a1' + tstr('GetRandom') + 'a1' + tstr('random') + '420a0b'))).toEqual({
      kind: 'GetRandom',
      random: Uint8Array.of(10, 11),
    });
    expect(decodeNsmResponse(hex('a1' + tstr('Error') + tstr('InvalidArgument')))).toEqual({ kind: 'Error', error: 'InvalidArgument' });
  });

  it('rejects malformed responses', () => {
    const doc = 'a1' + tstr('Attestation') + 'a1' + tstr('document') + '43010203';
    expect(codeOf(() => decodeNsmResponse(hex(doc + '00')))).toBe('MALFORMED'); // trailing
    expect(codeOf(() => decodeNsmResponse(hex(doc.slice(0, -2))))).toBe('MALFORMED'); // truncated
    expect(codeOf(() => decodeNsmResponse(hex('a1' + tstr('Attestation') + 'a2' + tstr('document') + '4101' + tstr('extra') + 'f6')))).toBe('MALFORMED');
    expect(codeOf(() => decodeNsmResponse(hex('a1' + tstr('Attestation') + 'a1' + tstr('document') + '40')))).toBe('MALFORMED'); // empty doc
    expect(codeOf(() => decodeNsmResponse(hex('a1' + tstr('Attestation') + 'a1' + tstr('document') + '6161')))).toBe('MALFORMED'); // text, not bytes
    expect(codeOf(() => decodeNsmResponse(hex('a1' + tstr('Error') + tstr('NoSuchError'))))).toBe('MALFORMED');
    expect(codeOf(() => decodeNsmResponse(hex('a1' + tstr('Bogus') + 'f6')))).toBe('MALFORMED');
    expect(codeOf(() => decodeNsmResponse(hex('a2' + tstr('GetRandom') + 'f6' + tstr('Error') + 'f6')))).toBe('MALFORMED');
    expect(codeOf(() => decodeNsmResponse(hex('a1' + tstr('DescribePCR') + 'a2' + tstr('lock') + '01' + tstr('data') + '4100')))).toBe('MALFORMED');
    // The codec's rules in NSM mode (serde_cbor output): shortest heads, no indefinite lengths, no tags.
    expect(codeOf(() => decodeNsmResponse(hex('a1' + tstr('GetRandom') + 'b801' + tstr('random') + '420a0b')))).toBe('MALFORMED');
    expect(codeOf(() => decodeNsmResponse(hex('a1' + tstr('GetRandom') + 'bf' + tstr('random') + '420a0bff')))).toBe('MALFORMED');
    expect(codeOf(() => decodeNsmResponse(hex('c1a1' + tstr('GetRandom') + 'a1' + tstr('random') + '420a0b')))).toBe('MALFORMED');
    // ... but struct fields in declaration order, not sorted: "lock" before "data" is accepted.
    expect(decodeNsmResponse(hex('a1' + tstr('DescribePCR') + 'a2' + tstr('lock') + 'f4' + tstr('data') + '4100')).kind).toBe('DescribePCR');
  });
});

/** A test-only NSM that answers with a document carrying whatever the request asked for. */
function fakeNsm(mutate?: (fields: Map<string, unknown>) => void, transport?: Partial<NsmTransport>): { t: NsmTransport; requests: Uint8Array[] } {
  const requests: Uint8Array[] = [];
  const t: NsmTransport = {
    raw(request: Uint8Array): Uint8Array {
      requests.push(request);
      const req = decodeRequest(request) as Map<string, Map<string, unknown>>;
      const a = req.get('Attestation');
      if (a === undefined) return hex('a1' + tstr('Error') + tstr('InvalidOperation'));
      const payload = new Map<string, unknown>([
        ['module_id', 'i-test-enc'],
        ['digest', 'SHA384'],
        ['timestamp', 1700000000000n],
        ['pcrs', { '0': new Uint8Array(48) }],
        ['certificate', Uint8Array.of(1)],
        ['cabundle', [Uint8Array.of(2)]],
        ['public_key', a.get('public_key')],
        ['user_data', a.get('user_data')],
        ['nonce', a.get('nonce')],
      ]);
      mutate?.(payload);
      const cose = cborx.encode([Uint8Array.of(0xa1, 0x01, 0x38, 0x22), {}, cborx.encode(Object.fromEntries(payload)), new Uint8Array(96)]);
      return cborx.encode({ Attestation: { document: cose } });
    },
    close() {},
    ...transport,
  };
  return { t, requests };
}

describe('NitroAttester', () => {
  const keyConfig = Uint8Array.of(0xa1, 0x01, 0x01, 0x02);
  const hpkePublicKey = new Uint8Array(32).fill(7);

  it('binds public_key = HPKE key, user_data = SHA-512(keyConfig), nonce = client nonce', async () => {
    const { t, requests } = fakeNsm();
    const nonce = Uint8Array.of(9, 9, 9);
    const bundle = await new NitroAttester({ transport: t }).attest({ keyConfig, hpkePublicKey, nonce });
    expect(bundle.platform).toBe('nitro');
    expect(bundle.keyConfig).toEqual(keyConfig);
    expect(bundle.keyConfig).not.toBe(keyConfig);
    const req = decodeRequest(requests[0] ?? new Uint8Array()) as Map<string, Map<string, unknown>>;
    const a = req.get('Attestation');
    expect(a?.get('public_key')).toEqual(hpkePublicKey);
    expect(a?.get('user_data')).toEqual(new Uint8Array(createHash('sha512').update(keyConfig).digest()));
    expect(a?.get('nonce')).toEqual(nonce);
    expect(bundle.evidence[0]).toBe(0x84);
  });

  it('sends a null nonce when none was asked for', async () => {
    const { t, requests } = fakeNsm();
    await new NitroAttester({ transport: t }).attest({ keyConfig, hpkePublicKey });
    const a = (decodeRequest(requests[0] ?? new Uint8Array()) as Map<string, Map<string, unknown>>).get('Attestation');
    expect(a?.get('nonce')).toBeNull();
  });

  it('fails closed when the document does not carry the requested binding', async () => {
    for (const field of ['public_key', 'user_data', 'nonce']) {
      const { t } = fakeNsm((p) => p.set(field, Uint8Array.of(0)));
      await expect(new NitroAttester({ transport: t }).attest({ keyConfig, hpkePublicKey, nonce: Uint8Array.of(1) })).rejects.toMatchObject({
        code: 'ATTESTER_FAILED',
      });
    }
  });

  it('attestPublicKey (AWS KMS Recipient): public_key = the DER key, no user_data, no nonce; fails closed on another binding', async () => {
    const { t, requests } = fakeNsm();
    const spki = new Uint8Array(294).fill(5);
    const doc = await new NitroAttester({ transport: t }).attestPublicKey(spki);
    expect(doc[0]).toBe(0x84);
    const a = (decodeRequest(requests[0] ?? new Uint8Array()) as Map<string, Map<string, unknown>>).get('Attestation');
    expect(a?.get('public_key')).toEqual(spki);
    expect(a?.get('user_data')).toBeNull();
    expect(a?.get('nonce')).toBeNull();
    for (const field of ['public_key', 'user_data', 'nonce']) {
      const { t: bad } = fakeNsm((p) => p.set(field, Uint8Array.of(0)));
      await expect(new NitroAttester({ transport: bad }).attestPublicKey(spki)).rejects.toMatchObject({ code: 'ATTESTER_FAILED' });
    }
    await expect(new NitroAttester({ transport: t }).attestPublicKey(new Uint8Array(1025))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('rejects bad inputs', async () => {
    const { t } = fakeNsm();
    const a = new NitroAttester({ transport: t });
    await expect(a.attest({ keyConfig, hpkePublicKey: new Uint8Array(31) })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(a.attest({ keyConfig, hpkePublicKey, nonce: new Uint8Array(65) })).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED' });
    await expect(a.attest({ keyConfig: new Uint8Array(0), hpkePublicKey })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('maps NSM errors and transport failures to ATTESTER_FAILED', async () => {
    const err = fakeNsm(undefined, { raw: () => hex('a1' + tstr('Error') + tstr('InternalError')) }).t;
    await expect(new NitroAttester({ transport: err }).attest({ keyConfig, hpkePublicKey })).rejects.toMatchObject({ code: 'ATTESTER_FAILED' });
    const broken = fakeNsm(undefined, {
      raw: () => {
        throw new Error('EIO');
      },
    }).t;
    await expect(new NitroAttester({ transport: broken }).attest({ keyConfig, hpkePublicKey })).rejects.toMatchObject({ code: 'ATTESTER_FAILED' });
    const garbage = fakeNsm(undefined, { raw: () => cborx.encode({ Attestation: { document: Uint8Array.of(1, 2, 3) } }) }).t;
    await expect(new NitroAttester({ transport: garbage }).attest({ keyConfig, hpkePublicKey })).rejects.toMatchObject({ code: 'ATTESTER_FAILED' });
  });

  it('NsmClient: DescribePCR, GetRandom, and a mismatched answer', () => {
    const answers: Record<string, string> = {
      [tstr('GetRandom')]: 'a1' + tstr('GetRandom') + 'a1' + tstr('random') + '420102',
    };
    const t: NsmTransport = {
      raw: (r) => hex(answers[toHex(r)] ?? 'a1' + tstr('DescribePCR') + 'a2' + tstr('lock') + 'f4' + tstr('data') + '4107'),
      close() {},
    };
    const c = new NsmClient(t);
    expect(c.getRandom()).toEqual(Uint8Array.of(1, 2));
    expect(c.describePcr(0)).toEqual({ lock: false, data: Uint8Array.of(7) });
    expect(codeOf(() => c.attestation({}))).toBe('ATTESTER_FAILED');
  });

  it('opening the device where there is none is PLATFORM_UNAVAILABLE', () => {
    const addon = { nsmRaw: () => new Uint8Array(1), snpGetExtReport: () => ({ report: new Uint8Array(), certs: new Uint8Array() }) };
    expect(codeOf(() => openNsmDevice({ path: '/nonexistent/nsm', addon }))).toBe('PLATFORM_UNAVAILABLE');
  });
});

const BLOCKY = 'nitro/nitro_blocky_sept2024.cbor';

describeWithVectors(BLOCKY, 'NitroAttester with a real NSM document', () => {
  it('rejects a genuine document that does not bind our key config', async () => {
    const doc = readVector(BLOCKY);
    const t: NsmTransport = { raw: () => cborx.encode({ Attestation: { document: doc } }), close() {} };
    await expect(
      new NitroAttester({ transport: t }).attest({ keyConfig: Uint8Array.of(1), hpkePublicKey: new Uint8Array(32) }),
    ).rejects.toMatchObject({ code: 'ATTESTER_FAILED', message: expect.stringMatching(/binding/) as unknown });
  });
});
