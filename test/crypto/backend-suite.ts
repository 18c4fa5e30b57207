/**
 * Test-only (not a test file itself): the crypto and protocol test files, re-run by
 * backend-node.test.ts and backend-native.test.ts with one crypto backend forced, so every
 * behaviour those files prove holds on both backends (src/crypto/backend.ts).
 */
export async function importCryptoSuites(): Promise<void> {
  await import('./hpke.test.js');
  await import('./hpke-portable.test.js');
  await import('../protocol/ohttp.test.js');
  await import('../protocol/chunked.test.js');
  await import('../protocol/messages.test.js');
}
