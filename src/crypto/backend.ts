/**
 * Which implementation runs the HPKE primitives: the native addon (native/crypto.c, OpenSSL
 * through one Node-API call per primitive; ./native-backend.ts) or node:crypto
 * (./node-backend.ts). Both are a CryptoBackend (./backend-types.ts) and compute the same
 * bytes; the native one skips node:crypto's per-call JS objects, which dominated a request
 * open + response seal (docs/PERFORMANCE.md). The primitives (./aead.ts, ./hkdf.ts,
 * ./hpke/kem.ts) call the chosen object; none of them tests for native itself.
 *
 * Chosen once, on first use, from CLOISTER_CRYPTO_BACKEND:
 * - unset, '' or 'auto': native when the addon loads and passes its known-answer self-test
 *   (src/native/crypto.ts), else node:crypto;
 * - 'node': node:crypto, always;
 * - 'native': native, and fail closed (every crypto call throws PLATFORM_UNAVAILABLE, naming
 *   the reason) when it is unavailable.
 * Any other value fails closed too (INVALID_ARGUMENT), so a typo is never silently ignored.
 */
import { CloisterError } from '../errors.js';
import { loadNativeCrypto } from '../native/crypto.js';
import type { NativeCrypto, NativeCryptoLoad } from '../native/crypto.js';
import type { CryptoBackend, CryptoBackendName } from './backend-types.js';
import { nativeCryptoBackend } from './native-backend.js';
import { nodeCryptoBackend } from './node-backend.js';

export type { AeadCipherName, CryptoBackend, CryptoBackendName, X25519Recipient } from './backend-types.js';
export { nativeCryptoBackend, nodeCryptoBackend };
type CryptoBackendChoice = CryptoBackendName | 'auto';

const CRYPTO_BACKEND_ENV = 'CLOISTER_CRYPTO_BACKEND';

interface SelectedCryptoBackend {
  readonly name: CryptoBackendName;
  readonly backend: CryptoBackend;
  /** The native functions behind `backend` (undefined for node:crypto). */
  readonly native: NativeCrypto | undefined;
  /** Why native is not in use ('' when it is). */
  readonly reason: string;
}

let selected: SelectedCryptoBackend | undefined;

/** Internal (exported for tests): the backend for `choice`, given how loading native went. */
export function resolveCryptoBackend(choice: CryptoBackendChoice, loadNative: () => NativeCryptoLoad = loadNativeCrypto): SelectedCryptoBackend {
  const portable = { name: 'node', backend: nodeCryptoBackend, native: undefined } as const;
  if (choice === 'node') return { ...portable, reason: `${CRYPTO_BACKEND_ENV}=node` };
  const load = loadNative();
  if (load.crypto !== undefined) return { name: 'native', backend: nativeCryptoBackend(load.crypto), native: load.crypto, reason: '' };
  if (choice === 'native') {
    throw new CloisterError('PLATFORM_UNAVAILABLE', `${CRYPTO_BACKEND_ENV}=native but native crypto is unavailable: ${load.reason}`);
  }
  return { ...portable, reason: load.reason };
}

function fromEnv(): CryptoBackendChoice {
  const v = process.env[CRYPTO_BACKEND_ENV];
  if (v === undefined || v === '' || v === 'auto') return 'auto';
  if (v === 'node' || v === 'native') return v;
  throw new CloisterError('INVALID_ARGUMENT', `${CRYPTO_BACKEND_ENV} must be auto, node or native`);
}

function current(): SelectedCryptoBackend {
  // Not cached on failure: a fail-closed choice keeps failing on every call.
  selected ??= resolveCryptoBackend(fromEnv());
  return selected;
}

/** Internal, hot path: the backend in use (throws where the choice fails closed). */
export function activeBackend(): CryptoBackend {
  return (selected ?? current()).backend;
}

/** Internal, for the benchmark: the native functions when that backend is active, else undefined. */
export function activeNative(): NativeCrypto | undefined {
  return current().native;
}

/** The backend in use (for diagnostics and benchmark notes); throws where it fails closed. */
export function cryptoBackend(): CryptoBackendName {
  return current().name;
}

/** Diagnostics: the backend, the OpenSSL behind the native one, or why native is not used. */
export function cryptoBackendInfo(): { readonly backend: CryptoBackendName; readonly detail: string } {
  const s = current();
  return { backend: s.name, detail: s.native !== undefined ? s.native.opensslVersion : s.reason };
}

/**
 * Internal, for tests and benchmarks: switch the backend for this process (same rules as the
 * environment variable, which is read again when `choice` is omitted). Keys made before a
 * switch keep working: HpkeRecipientKey holds the key for both backends when it can.
 */
export function useCryptoBackend(choice?: CryptoBackendChoice): CryptoBackendName {
  selected = undefined;
  selected = resolveCryptoBackend(choice ?? fromEnv());
  return selected.name;
}
