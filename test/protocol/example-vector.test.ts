/**
 * The worked example of docs/PROTOCOL.md section 8 (test/vectors/protocol-v1-example.json):
 * re-derived byte for byte from the project's code, and opened with the normal server and
 * client code paths, so the documented bytes are the bytes the implementation sends.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { HpkeRecipientKey } from '../../src/crypto/hpke/kem.js';
import { openChunkedRequest, sealChunkedRequest } from '../../src/protocol/chunked.js';
import { decodeKeyConfig, sealTargetFromKeyConfig } from '../../src/protocol/key-config.js';
import { ReceiptHasher, decodeResponseChunk, decodeSealedRequest, verifyReceipt } from '../../src/protocol/messages.js';
import { decodeWireMessage } from '../../src/protocol/wire.js';
import { AEAD_AES_128_GCM } from '../../src/crypto/hpke/suite.js';
import { deriveProtocolExample } from '../helpers/protocol-example.js';

const path = fileURLToPath(new URL('../vectors/protocol-v1-example.json', import.meta.url));
if (process.env['UPDATE_VECTORS'] === '1') writeFileSync(path, `${JSON.stringify(deriveProtocolExample(), null, 2)}\n`);
/** The parts of the vector file the checks below read (the rest is documentation). */
interface ExampleVector {
  readonly fixedInputs: Readonly<Record<string, { readonly value: string }>>;
  readonly keyConfig: { readonly cbor: string };
  readonly request: { readonly sealed: string; readonly plaintext: string; readonly fields: { readonly input: string; readonly ts: number; readonly id: string } };
  readonly response: { readonly sealed: string; readonly chunks: readonly { readonly plaintext: string }[]; readonly receiptMessage: string };
  readonly websocket: { readonly requestFrame: string; readonly responseFrame: string };
}
const vector = JSON.parse(readFileSync(path, 'utf8')) as ExampleVector;

const h = (s: string): Uint8Array => {
  if (!/^(?:[0-9a-f]{2})*$/.test(s)) throw new Error('not lowercase hex');
  return new Uint8Array(Buffer.from(s, 'hex'));
};

describe('protocol v1 worked example (test/vectors/protocol-v1-example.json)', () => {
  it('re-derives byte for byte from the project code', () => {
    expect(JSON.parse(JSON.stringify(deriveProtocolExample()))).toEqual(vector);
  });

  it('the server code path opens the request: key lookup, chunked OHTTP, strict inner decoding', () => {
    const kc = decodeKeyConfig(h(vector.keyConfig.cbor));
    const recipient = HpkeRecipientKey.fromPrivateKey(h(vector.fixedInputs['serverHpkePrivateKey']?.value ?? ''));
    expect(recipient.publicKey).toEqual(kc.hpkePublicKey);
    const opened = openChunkedRequest((keyId) => {
      expect(keyId).toBe(kc.keyId);
      return recipient;
    }, h(vector.request.sealed));
    expect(opened.plaintext).toEqual(h(vector.request.plaintext));
    const req = decodeSealedRequest(opened.plaintext);
    expect(req).toMatchObject({ v: 1, op: 'classify', model: 'classifier', input: vector.request.fields.input, stream: false, ts: vector.request.fields.ts, caps: ['json'] });
    expect(req.id).toEqual(h(vector.request.fields.id));
  });

  it('the client code path opens the response and verifies the receipt under the key config', () => {
    const kc = decodeKeyConfig(h(vector.keyConfig.cbor));
    // The client that sealed the request (same ephemeral key) holds the response opener.
    const sealed = sealChunkedRequest(sealTargetFromKeyConfig(kc, AEAD_AES_128_GCM), h(vector.request.plaintext), {
      ephemeralPrivateKey: h(vector.fixedInputs['clientEphemeralPrivateKey']?.value ?? ''),
    });
    expect(sealed.bytes).toEqual(h(vector.request.sealed));
    const chunks = [...sealed.response.push(h(vector.response.sealed)), ...sealed.response.finish()];
    expect(chunks.map((c) => c.final)).toEqual([false, true]);
    expect(chunks.map((c) => c.plaintext)).toEqual(vector.response.chunks.map((c) => h(c.plaintext)));
    const data = decodeResponseChunk(chunks[0]?.plaintext ?? new Uint8Array(0));
    expect(data).toEqual({ t: 'data', data: [{ label: 'cardiology', score: 0.9375 }, { label: 'oncology', score: 0.0625 }] });
    const end = decodeResponseChunk(chunks[1]?.plaintext ?? new Uint8Array(0));
    if (end.t !== 'end') throw new Error('no end chunk');
    const hasher = new ReceiptHasher(h(vector.request.plaintext));
    hasher.update(chunks[0]?.plaintext ?? new Uint8Array(0));
    const message = hasher.message();
    expect(message).toEqual(h(vector.response.receiptMessage));
    expect(verifyReceipt(kc.receiptPublicKey, message, end.receipt)).toBe(true);
  });

  it('one flipped bit anywhere in the response fails to open', () => {
    const kc = decodeKeyConfig(h(vector.keyConfig.cbor));
    const bytes = h(vector.response.sealed);
    for (const i of [0, 16, 20, bytes.byteLength - 1]) {
      const sealed = sealChunkedRequest(sealTargetFromKeyConfig(kc, AEAD_AES_128_GCM), h(vector.request.plaintext), {
        ephemeralPrivateKey: h(vector.fixedInputs['clientEphemeralPrivateKey']?.value ?? ''),
      });
      const bad = Uint8Array.from(bytes);
      bad[i] = (bad[i] ?? 0) ^ 1;
      expect(() => [...sealed.response.push(bad), ...sealed.response.finish()]).toThrow();
    }
  });

  it('the WebSocket frames carry the same bytes', () => {
    expect(decodeWireMessage(h(vector.websocket.requestFrame))).toEqual({ t: 'req', sid: 1, body: h(vector.request.sealed) });
    expect(decodeWireMessage(h(vector.websocket.responseFrame))).toEqual({ t: 'res', sid: 1, body: h(vector.response.sealed), fin: true });
  });
});
