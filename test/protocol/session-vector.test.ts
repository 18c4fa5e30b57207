/**
 * The worked example of docs/PROTOCOL.md section 11: a session key schedule and its first
 * request from fixed inputs (each SHA-256 of a stated label), byte for byte. Another
 * implementation should reproduce every value.
 */
import { createHash, createPrivateKey, createPublicKey, diffieHellman } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { suiteFromIds } from '../../src/crypto/index.js';
import { encodeSessionRequestHeader, SessionChunkSealer, SessionKeys } from '../../src/protocol/session.js';

const sha = (label: string): Uint8Array => new Uint8Array(createHash('sha256').update(label).digest());
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const X25519_PKCS8 = Buffer.from('302e020100300506032b656e04220420', 'hex');

function x25519(priv: Uint8Array): { sk: ReturnType<typeof createPrivateKey>; pk: Uint8Array } {
  const sk = createPrivateKey({ key: Buffer.concat([X25519_PKCS8, priv]), format: 'der', type: 'pkcs8' });
  const jwk = createPublicKey(sk).export({ format: 'jwk' });
  return { sk, pk: new Uint8Array(Buffer.from(jwk.x ?? '', 'base64url')) };
}

describe('session worked example (PROTOCOL.md section 11)', () => {
  it('reproduces the documented values', () => {
    const client = x25519(sha('cloister session example client share'));
    const server = x25519(sha('cloister session example server share'));
    const id = sha('cloister session example id').subarray(0, 16);
    const dh = new Uint8Array(diffieHellman({ privateKey: client.sk, publicKey: createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(server.pk).toString('base64url') }, format: 'jwk' }) }));
    const dh2 = new Uint8Array(diffieHellman({ privateKey: server.sk, publicKey: createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(client.pk).toString('base64url') }, format: 'jwk' }) }));
    expect(hex(dh)).toBe(hex(dh2));
    const values: Record<string, string> = { clientShare: hex(client.pk), serverShare: hex(server.pk), id: hex(id), dh: hex(dh) };
    const keys = new SessionKeys(suiteFromIds(0x20, 1, 1), id, client.pk, server.pk, dh);
    const k = keys.keysFor(1);
    values['requestKey'] = hex(k.request.key);
    values['requestNonce'] = hex(k.request.nonce);
    values['responseKey'] = hex(k.response.key);
    values['responseNonce'] = hex(k.response.nonce);
    values['requestHeader'] = hex(encodeSessionRequestHeader(id, 1));
    values['requestFinalChunk'] = hex(new SessionChunkSealer(k.request).sealFinal(new TextEncoder().encode('hello')));
    values['responseFinalChunk'] = hex(new SessionChunkSealer(k.response).sealFinal(new TextEncoder().encode('world')));
    expect(values).toEqual(EXPECTED);
  });
});

/** The values printed in docs/PROTOCOL.md section 11 (AES-128-GCM suite). */
const EXPECTED: Record<string, string> = {
  clientShare: '45f949f3591297756ff7195661bf6791655f594e8178b4a107c75cf104379136',
  serverShare: '6acb6018dedb8627a857033d6d6f8d4791c35a0f5974f86271e876d6d8f9116a',
  id: '601f31bd334243dc632d37f611d8939e',
  dh: '9ff3dc0ede5b8fcb5f1214a7cdc54fb4ff37aa66549f6a7a2dee1a403ca22b23',
  requestKey: 'f218234282f73bc21216729d080afe08',
  requestNonce: 'ce64f4c697dd84a5110e74ab',
  responseKey: 'd71ee1fe83db2a6894464b0e6b779394',
  responseNonce: '2b72691a2014f5ec1c675979',
  requestHeader: '601f31bd334243dc632d37f611d8939e0000000000000001',
  requestFinalChunk: '0043d1b2fd51e28728205b4e17b55396171cb8dadebe',
  responseFinalChunk: '0047ec6adea868cd4f1e27314239ae726899ccb03813',
};
