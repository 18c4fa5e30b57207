/**
 * The client checks the Ed25519 receipt in the final chunk against the attested receipt
 * key: a receipt signed by any other key is RECEIPT_INVALID, and no result is returned.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { connect } from '../../src/client/client.js';
import { ERROR_CODES } from '../../src/errors.js';
import { generateReceiptKeyPair, signReceipt } from '../../src/protocol/messages.js';
import type { KeyGeneration } from '../../src/server/keys.js';
import { codeOfAsync } from '../helpers/errors.js';
import { fakeClassify } from '../helpers/engines.js';
import { startTestServer } from '../helpers/test-server.js';
import type { TestServer } from '../helpers/test-server.js';

describe('receipt verification', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(async () => {
    vi.restoreAllMocks();
    await t.close();
  });

  it('RECEIPT_INVALID is a registered error code', () => {
    expect(ERROR_CODES.RECEIPT_INVALID).toMatch(/receipt/);
  });

  it('a receipt by another key is RECEIPT_INVALID over WebSocket and HTTP; a genuine one passes', async () => {
    for (const url of [t.wsUrl, t.httpUrl]) {
      // v1 one-shot: the server looks up the key generation per request (sessions keep the one that opened them).
      const c = await connect(url, { policy: t.policy, trustedRoots: t.trustedRoots, sessions: false });
      try {
        expect(await c.classify('genuine', { model: 'fake-cls' })).toEqual(fakeClassify('genuine'));
        // The server's generation now signs receipts with a key the key config does not name.
        const rogue = generateReceiptKeyPair();
        const lookup = t.server.keys.lookup.bind(t.server.keys);
        const spy = vi.spyOn(t.server.keys, 'lookup').mockImplementation((keyId, suite): KeyGeneration => {
          const gen = lookup(keyId, suite);
          return { ...gen, signReceipt: (message: Uint8Array) => signReceipt(rogue.privateKey, message) };
        });
        try {
          expect(await codeOfAsync(c.classify('forged receipt', { model: 'fake-cls' }))).toBe('RECEIPT_INVALID');
        } finally {
          spy.mockRestore();
        }
        expect(await c.classify('genuine again', { model: 'fake-cls' })).toEqual(fakeClassify('genuine again'));
      } finally {
        await c.close();
      }
    }
  });
});
