/** The crypto and protocol suites with the native backend forced (skipped when not built). */
import { describe, expect, it } from 'vitest';
import { cryptoBackend, useCryptoBackend } from '../../src/crypto/backend.js';
import { loadNativeCrypto } from '../../src/native/crypto.js';
import { importCryptoSuites } from './backend-suite.js';
import { requirePresent } from '../helpers/ci.js';

const load = loadNativeCrypto();

if (load.crypto === undefined) {
  // Outside CI: skipped with a note; CI=true: requirePresent registers a failing test.
  requirePresent(false, `native crypto for the native-backend run of the crypto suites (${load.reason})`);
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
