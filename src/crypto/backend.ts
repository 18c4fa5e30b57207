/**
 * Which implementation runs the HPKE primitives: the native addon (native/crypto.c, OpenSSL
 * through one Node-API call per primitive) or node:crypto. Both compute the same bytes; the
 * native one skips node:crypto's per-call JS objects, which dominated a request open +
 * response seal (docs/PERFORMANCE.md).
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

export type CryptoBackendName = 'native' | 'node';
type CryptoBackendChoice = CryptoBackendName | 'auto';

const CRYPTO_BACKEND_ENV = 'CLOISTER_CRYPTO_BACKEND';

interface SelectedCryptoBackend {
  readonly name: CryptoBackendName;
  readonly native: NativeCrypto | undefined;
  /** Why native is not in use ('' when it is). */
  readonly reason: string;
}

let selected: SelectedCryptoBackend | undefined;

/** Internal (exported for tests): the backend for `choice`, given how loading native went. */
export function resolveCryptoBackend(choice: CryptoBackendChoice, loadNative: () => NativeCryptoLoad = loadNativeCrypto): SelectedCryptoBackend {
  if (choice === 'node') return { name: 'node', native: undefined, reason: `${CRYPTO_BACKEND_ENV}=node` };
  const load = loadNative();
  if (load.crypto !== undefined) return { name: 'native', native: load.crypto, reason: '' };
  if (choice === 'native') {
    throw new CloisterError('PLATFORM_UNAVAILABLE', `${CRYPTO_BACKEND_ENV}=native but native crypto is unavailable: ${load.reason}`);
  }
  return { name: 'node', native: undefined, reason: load.reason };
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

/** Internal, hot path: the native functions when that backend is active, else undefined. */
export function activeNative(): NativeCrypto | undefined {
  return (selected ?? current()).native;
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
