/** The crypto and protocol suites with the node:crypto backend forced. */
import { describe, expect, it } from 'vitest';
import { cryptoBackend, useCryptoBackend } from '../../src/crypto/backend.js';
import { importCryptoSuites } from './backend-suite.js';

useCryptoBackend('node');

describe('backend: node', () => {
  it('is active for the suites below', () => {
    expect(cryptoBackend()).toBe('node');
  });
});

await importCryptoSuites();
