/**
 * The worked example of docs/PROTOCOL.md section 8: one sealed request and its response, every
 * byte, derived with the project's own code from fixed keys and fixed "randomness" (each a
 * SHA-256 of a label, so anyone can recompute them). The result is kept as
 * test/vectors/protocol-v1-example.json; test/protocol/example-vector.test.ts re-derives it
 * byte for byte and opens it with the normal server and client code paths.
 *
 * Regenerate (only when the wire format changes on purpose, with a CHANGELOG entry):
 *   UPDATE_VECTORS=1 npx vitest run test/protocol/example-vector.test.ts
 */
import { createHash, createPublicKey } from 'node:crypto';
import { toHex } from '../../src/core/hex.js';
import { HpkeRecipientKey } from '../../src/crypto/hpke/kem.js';
import { setupBaseSenderDetailed } from '../../src/crypto/hpke/setup.js';
import { AEAD_AES_128_GCM, AEAD_CHACHA20_POLY1305, KDF_HKDF_SHA256, KEM_DHKEM_X25519_HKDF_SHA256, suiteFromIds, suiteParams } from '../../src/crypto/hpke/suite.js';
import { xorNonce } from '../../src/crypto/hpke/context.js';
import { CHUNKED_REQUEST_LABEL, CHUNKED_RESPONSE_LABEL, ChunkedRequestOpener, sealChunkedRequest } from '../../src/protocol/chunked.js';
import { encodeKeyConfig, keyConfigDigest, sealTargetFromKeyConfig } from '../../src/protocol/key-config.js';
import type { KeyConfig } from '../../src/protocol/key-config.js';
import { ReceiptHasher, encodeResponseChunk, encodeSealedRequest, receiptPrivateKeyFromSeed, signReceipt } from '../../src/protocol/messages.js';
import { deriveResponseKeys, encodeRequestHeader, requestInfo } from '../../src/protocol/ohttp.js';
import { encodeWireMessage } from '../../src/protocol/wire.js';

/** 32 bytes of fixed "randomness": SHA-256("cloister protocol example: " || label). */
export function exampleBytes(label: string, length = 32): Uint8Array {
  return new Uint8Array(createHash('sha256').update(`cloister protocol example: ${label}`).digest()).subarray(0, length);
}

function ed25519PublicFromSeed(seed: Uint8Array): Uint8Array {
  const spki = createPublicKey(receiptPrivateKeyFromSeed(seed)).export({ type: 'spki', format: 'der' });
  return new Uint8Array(spki.subarray(spki.byteLength - 32));
}

const hex = (b: Uint8Array): string => toHex(b);

/** The example, as stored in test/vectors/protocol-v1-example.json (all byte strings in hex). */
export function deriveProtocolExample(): Record<string, unknown> {
  const suite = suiteFromIds(KEM_DHKEM_X25519_HKDF_SHA256, KDF_HKDF_SHA256, AEAD_AES_128_GCM);
  const p = suiteParams(suite);

  // --- Server keys and key config (PROTOCOL.md section 1) ---------------------------------
  const hpkePrivateKey = exampleBytes('server hpke private key');
  const recipient = HpkeRecipientKey.fromPrivateKey(hpkePrivateKey);
  const receiptSeed = exampleBytes('server receipt seed');
  const receiptPublicKey = ed25519PublicFromSeed(receiptSeed);
  const keyConfig: KeyConfig = {
    version: 1,
    keyId: 7,
    kemId: KEM_DHKEM_X25519_HKDF_SHA256,
    kdfId: KDF_HKDF_SHA256,
    aeadIds: [AEAD_AES_128_GCM, AEAD_CHACHA20_POLY1305],
    hpkePublicKey: recipient.publicKey,
    receiptPublicKey,
    models: [{ name: 'classifier', task: 'text-classification', digest: exampleBytes('model classifier digest') }],
    configDigest: exampleBytes('server config digest'),
    platform: 'simulated',
    notBefore: 1_767_225_600, // 2026-01-01T00:00:00Z
    expiresAt: 1_767_229_200,
  };
  const keyConfigBytes = encodeKeyConfig(keyConfig);

  // --- The request (sections 3 and 4) ---------------------------------------------------------
  const requestFields = {
    v: 1 as const,
    op: 'classify' as const,
    model: 'classifier',
    input: 'chest pain radiating to the left arm',
    stream: false,
    ts: 1_767_225_630_000,
    id: exampleBytes('request id', 16),
    caps: ['json'],
  };
  const requestPlaintext = encodeSealedRequest(requestFields);
  const ephemeralPrivateKey = exampleBytes('client ephemeral private key');
  const header = encodeRequestHeader(keyConfig.keyId, suite);
  const info = requestInfo(CHUNKED_REQUEST_LABEL, header);
  // The key schedule, for implementers (the sealing below derives the same values itself).
  const detailed = setupBaseSenderDetailed(suite, recipient.publicKey, info, { ephemeralPrivateKey });
  const target = sealTargetFromKeyConfig(keyConfig, AEAD_AES_128_GCM);
  const sealed = sealChunkedRequest(target, requestPlaintext, { ephemeralPrivateKey });
  const requestCiphertext = sealed.bytes.subarray(header.byteLength + p.nenc + 1);

  // --- The server opens it and answers (sections 3 and 4) ---------------------------------------
  const opener = new ChunkedRequestOpener((keyId) => {
    if (keyId !== keyConfig.keyId) throw new Error('unexpected key id');
    return recipient;
  });
  const opened = [...opener.push(sealed.bytes), ...opener.finish()];
  const responseNonce = exampleBytes('response nonce', Math.max(p.nn, p.nk));
  const sealer = opener.response({ responseNonce });
  const { key: responseKey, nonce: responseAeadNonce } = deriveResponseKeys(p, detailed.context, CHUNKED_RESPONSE_LABEL, detailed.enc, responseNonce);

  const result = [
    { label: 'cardiology', score: 0.9375 },
    { label: 'oncology', score: 0.0625 },
  ];
  const dataPlaintext = encodeResponseChunk({ t: 'data', data: result });
  const receipt = new ReceiptHasher(opened[0]?.plaintext ?? new Uint8Array(0));
  receipt.update(dataPlaintext);
  const receiptMessage = receipt.message();
  const receiptSignature = signReceipt(receiptPrivateKeyFromSeed(receiptSeed), receiptMessage);
  const endPlaintext = encodeResponseChunk({ t: 'end', receipt: receiptSignature });
  const start = sealer.start();
  const dataFramed = sealer.sealChunk(dataPlaintext);
  const endFramed = sealer.sealFinal(endPlaintext);
  const responseStream = new Uint8Array([...start, ...dataFramed, ...endFramed]);

  const reqFrame = encodeWireMessage({ t: 'req', sid: 1, body: sealed.bytes });
  const resFrame = encodeWireMessage({ t: 'res', sid: 1, body: responseStream, fin: true });

  return {
    description:
      'Cloister wire protocol v1, worked example (docs/PROTOCOL.md section 8): one classify request sealed to a key config and its ' +
      'two-chunk response with the receipt. All byte strings are lowercase hex. Fixed inputs are SHA-256("cloister protocol example: " || label), truncated where shorter.',
    generator: 'test/helpers/protocol-example.ts; checked by test/protocol/example-vector.test.ts; regenerate with UPDATE_VECTORS=1 npx vitest run test/protocol/example-vector.test.ts',
    suite: { kemId: suite.kemId, kdfId: suite.kdfId, aeadId: suite.aeadId },
    fixedInputs: {
      serverHpkePrivateKey: { label: 'server hpke private key', value: hex(hpkePrivateKey) },
      serverReceiptSeed: { label: 'server receipt seed', value: hex(receiptSeed) },
      clientEphemeralPrivateKey: { label: 'client ephemeral private key', value: hex(ephemeralPrivateKey) },
      requestId: { label: 'request id', value: hex(requestFields.id) },
      responseNonce: { label: 'response nonce', value: hex(responseNonce) },
      modelDigest: { label: 'model classifier digest', value: hex(keyConfig.models[0]?.digest ?? new Uint8Array(0)) },
      configDigest: { label: 'server config digest', value: hex(keyConfig.configDigest) },
    },
    keyConfig: {
      fields: {
        version: 1, keyId: keyConfig.keyId, kemId: keyConfig.kemId, kdfId: keyConfig.kdfId, aeadIds: keyConfig.aeadIds,
        hpkePublicKey: hex(keyConfig.hpkePublicKey), receiptPublicKey: hex(receiptPublicKey),
        models: keyConfig.models.map((m) => ({ name: m.name, task: m.task, digest: hex(m.digest) })),
        configDigest: hex(keyConfig.configDigest), platform: keyConfig.platform, notBefore: keyConfig.notBefore, expiresAt: keyConfig.expiresAt,
      },
      cbor: hex(keyConfigBytes),
      sha256: hex(keyConfigDigest(keyConfigBytes)),
      nitroUserData: hex(new Uint8Array(createHash('sha512').update(keyConfigBytes).digest())),
    },
    request: {
      fields: { ...requestFields, id: hex(requestFields.id) },
      plaintext: hex(requestPlaintext),
      header: hex(header),
      info: hex(info),
      enc: hex(detailed.enc),
      hpke: {
        sharedSecret: hex(detailed.sharedSecret),
        key: hex(detailed.schedule.key),
        baseNonce: hex(detailed.schedule.baseNonce),
        exporterSecret: hex(detailed.schedule.exporterSecret),
      },
      finalChunk: { lengthField: '00', aad: hex(new TextEncoder().encode('final')), nonce: hex(xorNonce(detailed.schedule.baseNonce, 0)), ciphertext: hex(requestCiphertext) },
      sealed: hex(sealed.bytes),
    },
    response: {
      exportLabel: CHUNKED_RESPONSE_LABEL,
      responseNonce: hex(responseNonce),
      key: hex(responseKey),
      nonce: hex(responseAeadNonce),
      chunks: [
        { final: false, fields: { t: 'data', data: result }, plaintext: hex(dataPlaintext), aad: '', nonce: hex(xorNonce(responseAeadNonce, 0)), framed: hex(dataFramed) },
        {
          final: true, fields: { t: 'end', receipt: hex(receiptSignature) }, plaintext: hex(endPlaintext), aad: hex(new TextEncoder().encode('final')),
          nonce: hex(xorNonce(responseAeadNonce, 1)), framed: hex(endFramed),
        },
      ],
      receiptMessage: hex(receiptMessage),
      sealed: hex(responseStream),
    },
    http: {
      request: { method: 'POST', path: '/v1/sealed', contentType: 'message/ohttp-chunked-req', body: 'request.sealed' },
      response: { status: 200, contentType: 'message/ohttp-chunked-res', body: 'response.sealed' },
    },
    websocket: { requestFrame: hex(reqFrame), responseFrame: hex(resFrame) },
  };
}
