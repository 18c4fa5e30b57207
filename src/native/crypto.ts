/**
 * The crypto half of the native addon (native/crypto.c): X25519, HKDF-SHA256 and the RFC 9180
 * AEADs on the OpenSSL 3 inside Node, one Node-API call per primitive.
 *
 * `loadNativeCrypto` returns the functions only when the addon exports them all AND they
 * pass a known-answer self-test (RFC 9180 A.1.1 / A.2.1 values, and a forged tag refused), so
 * a miscompiled or mismatched build is never used. src/crypto/backend.ts chooses between it
 * and node:crypto; this module knows nothing about that choice.
 */
import { loadAddonModule } from './index.js';
import { concatBytes } from '../core/bytes.js';

/** An X25519 private key held by OpenSSL (an external freed, and cleansed, on GC). */
export type NativeX25519Key = object;

/** AEAD identifiers of the native API (native/crypto.c). */
export const NATIVE_AEAD_AES_128_GCM = 0;
export const NATIVE_AEAD_AES_256_GCM = 1;
export const NATIVE_AEAD_CHACHA20_POLY1305 = 2;

/**
 * The native crypto operations, with plain-array semantics: every result is a fresh,
 * caller-owned Uint8Array; inputs are never retained or modified. Errors carry a string
 * `code` (INVALID_ARGUMENT, DH_FAILED, AEAD_OPEN_FAILED, CRYPTO_FAILED) that src/crypto maps
 * into CloisterError codes.
 */
export interface NativeCrypto {
  x25519PrivateKey(raw: Uint8Array): NativeX25519Key;
  x25519Generate(): NativeX25519Key;
  x25519PublicKey(key: NativeX25519Key): Uint8Array;
  /** DH(sk, peer); throws DH_FAILED on an all-zero result (RFC 9180 section 7.1.4). */
  x25519Derive(key: NativeX25519Key, peer: Uint8Array): Uint8Array;
  /** enc || DH(skE, peer) with a fresh skE that never leaves C (64 bytes). */
  x25519Ephemeral(peer: Uint8Array): Uint8Array;
  hkdfExtract(salt: Uint8Array, ikm: Uint8Array): Uint8Array;
  /** HKDF-Extract(salt, concat(ikmParts)) without building the concatenation. */
  hkdfExtractParts(salt: Uint8Array, ikmParts: readonly Uint8Array[]): Uint8Array;
  hkdfExpand(prk: Uint8Array, info: Uint8Array, length: number): Uint8Array;
  /** HKDF-Expand(prk, concat(infoParts), length) without building the concatenation. */
  hkdfExpandParts(prk: Uint8Array, infoParts: readonly Uint8Array[], length: number): Uint8Array;
  aeadSeal(alg: number, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array;
  /** Throws AEAD_OPEN_FAILED on a bad tag; no plaintext is returned then. */
  aeadOpen(alg: number, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array): Uint8Array;
  readonly opensslVersion: string;
}

/** What native/crypto.c exports (see the comment at its top for the scratch variants). */
interface RawNativeCrypto extends Omit<NativeCrypto, 'hkdfExtractParts' | 'hkdfExpandParts'> {
  hkdfExtractS(scratch: Uint8Array, saltLen: number, ikmLen: number): void;
  hkdfExpandS(scratch: Uint8Array, prkLen: number, infoLen: number, length: number): void;
  x25519DeriveS(key: NativeX25519Key, scratch: Uint8Array): void;
  x25519EphemeralS(scratch: Uint8Array): void;
  aeadSealS(alg: number, scratch: Uint8Array, keyLen: number, nonceLen: number, aadLen: number, plaintext: Uint8Array): Uint8Array;
  aeadOpenS(alg: number, scratch: Uint8Array, keyLen: number, nonceLen: number, aadLen: number, ciphertext: Uint8Array): Uint8Array;
  readonly scratchIn: number;
  readonly scratchOut: number;
}

const FUNCTIONS = [
  'x25519PrivateKey',
  'x25519Generate',
  'x25519PublicKey',
  'x25519Derive',
  'x25519Ephemeral',
  'hkdfExtract',
  'hkdfExpand',
  'aeadSeal',
  'aeadOpen',
  'hkdfExtractS',
  'hkdfExpandS',
  'x25519DeriveS',
  'x25519EphemeralS',
  'aeadSealS',
  'aeadOpenS',
] as const;

function isRawNativeCrypto(value: unknown): value is RawNativeCrypto {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    FUNCTIONS.every((f) => typeof v[f] === 'function') &&
    typeof v['opensslVersion'] === 'string' &&
    typeof v['scratchIn'] === 'number' &&
    typeof v['scratchOut'] === 'number'
  );
}

function totalLength(parts: readonly Uint8Array[]): number {
  let n = 0;
  for (const p of parts) n += p.byteLength;
  return n;
}

/**
 * The array-semantics operations over the raw addon. Small inputs and outputs go through one
 * scratch buffer allocated here once (see native/crypto.c for why); anything that does not
 * fit takes the plain entry points. The scratch is zeroed after every call, success or not,
 * so no key, secret or DH value stays in it. Synchronous code on one thread: no call can
 * interleave with another.
 */
function wrapNative(raw: RawNativeCrypto): NativeCrypto {
  const IN = raw.scratchIn;
  const OUT = raw.scratchOut;
  const sc = new Uint8Array(new ArrayBuffer(IN + OUT));
  const put = (parts: readonly Uint8Array[], at: number): number => {
    let off = at;
    for (const p of parts) {
      if (!(p instanceof Uint8Array)) throw Object.assign(new TypeError('expected Uint8Array inputs'), { code: 'INVALID_ARGUMENT' });
      sc.set(p, off);
      off += p.byteLength;
    }
    return off - at;
  };
  const take = (n: number): Uint8Array => sc.slice(IN, IN + n);
  const wipe = (used: number, out: number): void => {
    sc.fill(0, 0, used);
    sc.fill(0, IN, IN + out);
  };
  const isBytes = (v: unknown): v is Uint8Array => v instanceof Uint8Array;
  const hkdfExtractParts = (salt: Uint8Array, ikmParts: readonly Uint8Array[]): Uint8Array => {
    const ikmLen = totalLength(ikmParts);
    if (!isBytes(salt) || salt.byteLength + ikmLen > IN) return raw.hkdfExtract(salt, concatBytes(...ikmParts));
    const used = salt.byteLength + ikmLen;
    try {
      sc.set(salt, 0);
      put(ikmParts, salt.byteLength);
      raw.hkdfExtractS(sc, salt.byteLength, ikmLen);
      return take(32);
    } finally {
      wipe(used, 32);
    }
  };
  const hkdfExpandParts = (prk: Uint8Array, infoParts: readonly Uint8Array[], length: number): Uint8Array => {
    const infoLen = totalLength(infoParts);
    if (!isBytes(prk) || prk.byteLength + infoLen > IN || !Number.isInteger(length) || length < 0 || length > OUT) {
      return raw.hkdfExpand(prk, concatBytes(...infoParts), length);
    }
    const used = prk.byteLength + infoLen;
    try {
      sc.set(prk, 0);
      put(infoParts, prk.byteLength);
      raw.hkdfExpandS(sc, prk.byteLength, infoLen, length);
      return take(length);
    } finally {
      wipe(used, length);
    }
  };
  const aead = (seal: boolean, alg: number, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, data: Uint8Array): Uint8Array => {
    if (!isBytes(key) || !isBytes(nonce) || !isBytes(aad) || key.byteLength + nonce.byteLength + aad.byteLength > IN) {
      return seal ? raw.aeadSeal(alg, key, nonce, aad, data) : raw.aeadOpen(alg, key, nonce, aad, data);
    }
    const used = key.byteLength + nonce.byteLength + aad.byteLength;
    try {
      sc.set(key, 0);
      sc.set(nonce, key.byteLength);
      sc.set(aad, key.byteLength + nonce.byteLength);
      return seal
        ? raw.aeadSealS(alg, sc, key.byteLength, nonce.byteLength, aad.byteLength, data)
        : raw.aeadOpenS(alg, sc, key.byteLength, nonce.byteLength, aad.byteLength, data);
    } finally {
      wipe(used, 0);
    }
  };
  return {
    opensslVersion: raw.opensslVersion,
    x25519PrivateKey: (r) => raw.x25519PrivateKey(r),
    x25519Generate: () => raw.x25519Generate(),
    x25519PublicKey: (k) => raw.x25519PublicKey(k),
    x25519Derive: (k, peer) => {
      if (!isBytes(peer) || peer.byteLength !== 32) return raw.x25519Derive(k, peer);
      try {
        sc.set(peer, 0);
        raw.x25519DeriveS(k, sc);
        return take(32);
      } finally {
        wipe(32, 32);
      }
    },
    x25519Ephemeral: (peer) => {
      if (!isBytes(peer) || peer.byteLength !== 32) return raw.x25519Ephemeral(peer);
      try {
        sc.set(peer, 0);
        raw.x25519EphemeralS(sc);
        return take(64);
      } finally {
        wipe(32, 64);
      }
    },
    hkdfExtract: (salt, ikm) => (isBytes(ikm) ? hkdfExtractParts(salt, [ikm]) : raw.hkdfExtract(salt, ikm)),
    hkdfExtractParts,
    hkdfExpand: (prk, info, length) => (isBytes(info) ? hkdfExpandParts(prk, [info], length) : raw.hkdfExpand(prk, info, length)),
    hkdfExpandParts,
    aeadSeal: (alg, key, nonce, aad, pt) => aead(true, alg, key, nonce, aad, pt),
    aeadOpen: (alg, key, nonce, aad, ct) => aead(false, alg, key, nonce, aad, ct),
  };
}

function fromHex(h: string): Uint8Array {
  return new Uint8Array(Buffer.from(h, 'hex'));
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

// RFC 9180 A.1.1 (base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM) and A.2.1
// (ChaCha20-Poly1305): recipient key, enc, shared_secret, and the sequence-0 encryption.
const KAT = {
  skRm: '4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8',
  pkRm: '3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d',
  enc: '37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431',
  sharedSecret: 'fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc',
  pt: '4265617574792069732074727574682c20747275746820626561757479',
  aad: '436f756e742d30',
  aes: {
    key: '4531685d41d65f03dc48f6b8302c05b0',
    nonce: '56d890e5accaaf011cff4b7d',
    ct: 'f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a',
  },
  chacha: {
    key: 'ad2744de8e17f4ebba575b3f5f5a8fa1f69c2a07f6e7500bc60ca6e3e3ec1c91',
    nonce: '5c4d98150661b848853b547f',
    ct: '1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28',
  },
} as const;

const enc8 = (s: string): Uint8Array => new TextEncoder().encode(s);

/**
 * The known-answer self-test: returns undefined when every check passes, else what failed.
 * DH + ExtractAndExpand of RFC 9180 section 4.1 against A.1.1's shared_secret (exercises
 * X25519, HKDF-Extract and HKDF-Expand), both AEADs against A.1.1 / A.2.1 in both
 * directions, and a forged tag that must be refused.
 */
export function nativeCryptoSelfTest(n: NativeCrypto): string | undefined {
  try {
    const sk = n.x25519PrivateKey(fromHex(KAT.skRm));
    if (!sameBytes(n.x25519PublicKey(sk), fromHex(KAT.pkRm))) return 'X25519 public key mismatch';
    const enc = fromHex(KAT.enc);
    const dh = n.x25519Derive(sk, enc);
    const kemSuiteId = Uint8Array.of(...enc8('KEM'), 0x00, 0x20);
    const eaePrk = n.hkdfExtract(new Uint8Array(0), Uint8Array.of(...enc8('HPKE-v1'), ...kemSuiteId, ...enc8('eae_prk'), ...dh));
    const info = Uint8Array.of(0x00, 0x20, ...enc8('HPKE-v1'), ...kemSuiteId, ...enc8('shared_secret'), ...enc, ...fromHex(KAT.pkRm));
    if (!sameBytes(n.hkdfExpand(eaePrk, info, 32), fromHex(KAT.sharedSecret))) return 'X25519/HKDF shared_secret mismatch';
    const pt = fromHex(KAT.pt);
    const aad = fromHex(KAT.aad);
    for (const [alg, v] of [
      [NATIVE_AEAD_AES_128_GCM, KAT.aes],
      [NATIVE_AEAD_CHACHA20_POLY1305, KAT.chacha],
    ] as const) {
      const key = fromHex(v.key);
      const nonce = fromHex(v.nonce);
      const ct = fromHex(v.ct);
      if (!sameBytes(n.aeadSeal(alg, key, nonce, aad, pt), ct)) return `AEAD ${alg} seal mismatch`;
      if (!sameBytes(n.aeadOpen(alg, key, nonce, aad, ct), pt)) return `AEAD ${alg} open mismatch`;
      const forged = Uint8Array.from(ct);
      forged[forged.byteLength - 1] = (forged[forged.byteLength - 1] ?? 0) ^ 1;
      let refused = false;
      try {
        n.aeadOpen(alg, key, nonce, aad, forged);
      } catch (err) {
        refused = nativeErrorCode(err) === 'AEAD_OPEN_FAILED';
      }
      if (!refused) return `AEAD ${alg} accepted a forged tag`;
    }
    let zeroRefused = false;
    try {
      n.x25519Derive(sk, new Uint8Array(32));
    } catch (err) {
      zeroRefused = nativeErrorCode(err) === 'DH_FAILED';
    }
    if (!zeroRefused) return 'X25519 accepted a small-order point';
    return undefined;
  } catch (err) {
    return `self-test threw: ${err instanceof Error ? err.message : String(err)}`;
  }
}

export type NativeCryptoLoad = { readonly crypto: NativeCrypto; readonly reason?: undefined } | { readonly crypto?: undefined; readonly reason: string };

let cached: NativeCryptoLoad | undefined;

/** The self-tested native crypto functions, or why they are unavailable (cached). */
export function loadNativeCrypto(): NativeCryptoLoad {
  if (cached !== undefined) return cached;
  const mod = loadAddonModule();
  if (mod.module === undefined) {
    cached = { reason: mod.reason };
  } else if (!isRawNativeCrypto(mod.module)) {
    cached = { reason: 'the native addon has no crypto functions (built without Node OpenSSL 3 headers?)' };
  } else {
    const crypto = wrapNative(mod.module);
    const failed = nativeCryptoSelfTest(crypto);
    cached = failed === undefined ? { crypto } : { reason: `native crypto self-test failed: ${failed}` };
  }
  return cached;
}

export function nativeErrorCode(err: unknown): unknown {
  return typeof err === 'object' && err !== null ? (err as Record<string, unknown>)['code'] : undefined;
}
