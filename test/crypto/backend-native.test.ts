/** The crypto and protocol suites with the native backend forced (skipped when not built). */
import { describe, expect, it } from 'vitest';
import { cryptoBackend, useCryptoBackend } from '../../src/crypto/backend.js';
import { loadNativeCrypto } from '../../src/native/crypto.js';
import { importCryptoSuites } from './backend-suite.js';

const load = loadNativeCrypto();

if (load.crypto === undefined) {
  console.log(`note: native crypto unavailable (${load.reason}); skipping the native-backend run of the crypto suites`);
  describe.skip('backend: native (unavailable)', () => {
    it('skipped', () => undefined);
  });
} else {
  useCryptoBackend('native');
  describe('backend: native', () => {
    it('is active for the suites below', () => {
      expect(cryptoBackend()).toBe('native');
    });
  });
  await importCryptoSuites();
}
