/**
 * The native crypto backend (native/crypto.c via src/native/crypto.ts) against node:crypto
 * and the `hpke` library: same bytes both ways, failures with the same CloisterError codes,
 * and the C layer refusing bad arguments with an error, never a crash. Native-only parts are
 * skipped, with a note, when the addon is not built.
 */
import { createCipheriv, createHmac, createPrivateKey, createPublicKey, diffieHellman, hkdfSync, randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { aeadOpen, aeadSeal } from '../../src/crypto/aead.js';
import type { AeadCipherName } from '../../src/crypto/aead.js';
import {
  cryptoBackend,
  cryptoBackendInfo,
  nativeCryptoBackend,
  nodeCryptoBackend,
  resolveCryptoBackend,
  useCryptoBackend,
} from '../../src/crypto/backend.js';
import { hkdfExpand, hkdfExpandParts, hkdfExtract, hkdfExtractParts } from '../../src/crypto/hkdf.js';
import {
  generateX25519KeyPair,
  HpkeRecipientKey,
  setupBaseRecipient,
  setupBaseSender,
} from '../../src/crypto/index.js';
import { portableSetupBaseRecipient, portableSetupBaseSender } from '../helpers/hpke-portable.js';
import type { HpkeSuite } from '../../src/crypto/index.js';
import { loadAddonModule } from '../../src/native/index.js';
import { loadNativeCrypto, nativeCryptoSelfTest } from '../../src/native/crypto.js';
import type { NativeCrypto } from '../../src/native/crypto.js';
import { openChunkedRequest, sealChunkedRequest } from '../../src/protocol/index.js';
import { codeOf } from '../helpers/errors.js';
import { requirePresent } from '../helpers/ci.js';
import { AES, CHACHA } from './suites.js';

const load = loadNativeCrypto();
const native = load.crypto;
// Outside CI a missing addon skips the native checks; CI=true fails instead.
const skipNative = requirePresent(native !== undefined, `native crypto (${load.reason ?? 'addon not built'})`);

const bytes = (n: number): Uint8Array => new Uint8Array(randomBytes(n));
const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);
const hexOf = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** Run `fn` with a backend forced, then back to the environment's choice. */
function on<T>(backend: 'node' | 'native', fn: () => T): T {
  useCryptoBackend(backend);
  try {
    return fn();
  } finally {
    useCryptoBackend();
  }
}

afterEach(() => {
  useCryptoBackend();
});

/** The raw addon object, for calling the C entry points with bad arguments directly. */
function rawAddon(): Record<string, (...args: unknown[]) => unknown> {
  const m = loadAddonModule().module;
  if (typeof m !== 'object' || m === null) throw new Error('addon not loaded');
  return m as Record<string, (...args: unknown[]) => unknown>;
}

function nativeCode(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' ? code : `uncoded:${String(err)}`;
  }
  return 'no-throw';
}

// RFC 7748 / RFC 9180 section 7.1.4: u-coordinates whose X25519 output is all zeros for every
// scalar (small-order points, and their non-canonical encodings).
const SMALL_ORDER = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
  '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
];

describe('backend selection', () => {
  it('resolves auto, node and native; native fails closed when unavailable', () => {
    const missing = (): { reason: string } => ({ reason: 'not built (test double)' });
    expect(resolveCryptoBackend('node').name).toBe('node');
    expect(resolveCryptoBackend('auto', missing).name).toBe('node');
    expect(resolveCryptoBackend('auto', missing).reason).toContain('not built');
    let err: unknown;
    try {
      resolveCryptoBackend('native', missing);
    } catch (e) {
      err = e;
    }
    expect((err as { code?: string }).code).toBe('PLATFORM_UNAVAILABLE');
    expect(String((err as Error).message)).toContain('CLOISTER_CRYPTO_BACKEND=native');
    expect(String((err as Error).message)).toContain('not built (test double)');
  });

  it('reads CLOISTER_CRYPTO_BACKEND, and refuses an unknown value', () => {
    const saved = process.env['CLOISTER_CRYPTO_BACKEND'];
    try {
      process.env['CLOISTER_CRYPTO_BACKEND'] = 'node';
      expect(useCryptoBackend()).toBe('node');
      expect(cryptoBackend()).toBe('node');
      expect(cryptoBackendInfo().detail).toContain('CLOISTER_CRYPTO_BACKEND=node');
      process.env['CLOISTER_CRYPTO_BACKEND'] = 'openssl';
      expect(codeOf(() => useCryptoBackend())).toBe('INVALID_ARGUMENT');
      // Fail closed: the crypto itself refuses to run until the setting is fixed.
      expect(codeOf(() => hkdfExtract(new Uint8Array(0), utf8('x')))).toBe('INVALID_ARGUMENT');
    } finally {
      if (saved === undefined) delete process.env['CLOISTER_CRYPTO_BACKEND'];
      else process.env['CLOISTER_CRYPTO_BACKEND'] = saved;
    }
    useCryptoBackend();
  });

  it.skipIf(skipNative)('auto picks native when the addon passed its self-test', () => {
    expect(resolveCryptoBackend('auto').name).toBe('native');
    expect(on('native', () => cryptoBackendInfo().detail)).toMatch(/^OpenSSL 3\./);
  });
});

describe.skipIf(skipNative)('native crypto (built addon)', () => {
  const n = native as NativeCrypto;

  it('passes the known-answer self-test, and the self-test catches a broken implementation', () => {
    expect(nativeCryptoSelfTest(n)).toBeUndefined();
    const acceptsForgery: NativeCrypto = {
      ...n,
      aeadOpen: (alg, key, nonce, aad, ct) => {
        try {
          return n.aeadOpen(alg, key, nonce, aad, ct);
        } catch {
          return new Uint8Array(ct.byteLength - 16);
        }
      },
    };
    expect(nativeCryptoSelfTest(acceptsForgery)).toMatch(/forged tag/);
    const wrongDh: NativeCrypto = { ...n, x25519Derive: () => new Uint8Array(32).fill(7) };
    expect(nativeCryptoSelfTest(wrongDh)).toMatch(/shared_secret/);
  });

  it('HKDF matches node:crypto for every length class, through the scratch buffer and around it', () => {
    for (const saltLen of [0, 1, 32, 48, 64, 65, 200]) {
      for (const ikmLen of [0, 1, 51, 64, 65, 1000, 2000]) {
        const salt = bytes(saltLen);
        const ikm = bytes(ikmLen);
        const expect32 = new Uint8Array(createHmac('sha256', saltLen === 0 ? new Uint8Array(32) : salt).update(ikm).digest());
        expect(hexOf(on('native', () => hkdfExtract(salt, ikm)))).toBe(hexOf(expect32));
        expect(hexOf(on('node', () => hkdfExtract(salt, ikm)))).toBe(hexOf(expect32));
      }
    }
    const prk = bytes(32);
    for (const infoLen of [0, 5, 95, 1000, 1100]) {
      for (const length of [0, 1, 12, 16, 31, 32, 33, 64, 255, 256, 257, 1000, 8160]) {
        const info = bytes(infoLen);
        const viaNative = on('native', () => hkdfExpand(prk, info, length));
        expect(viaNative.byteLength).toBe(length);
        expect(hexOf(viaNative)).toBe(hexOf(on('node', () => hkdfExpand(prk, info, length))));
      }
    }
    // Extract-then-expand equals node's one-shot HKDF.
    const ikm = bytes(40);
    const salt = bytes(16);
    const info = bytes(30);
    const okm = on('native', () => hkdfExpand(hkdfExtract(salt, ikm), info, 42));
    expect(hexOf(okm)).toBe(Buffer.from(hkdfSync('sha256', ikm, salt, info, 42)).toString('hex'));
  });

  it('the parts variants equal HKDF over the concatenation', () => {
    const parts = [utf8('HPKE-v1'), bytes(10), utf8('label'), bytes(70)];
    const joined = Uint8Array.from(Buffer.concat(parts));
    const salt = bytes(32);
    expect(hexOf(on('native', () => hkdfExtractParts(salt, parts)))).toBe(hexOf(on('node', () => hkdfExtract(salt, joined))));
    expect(hexOf(on('native', () => hkdfExpandParts(salt, parts, 77)))).toBe(hexOf(on('node', () => hkdfExpand(salt, joined, 77))));
    expect(codeOf(() => on('native', () => hkdfExpandParts(salt, parts, 8161)))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => on('native', () => hkdfExpand(salt, joined, -1)))).toBe('INVALID_ARGUMENT');
  });

  it('AEADs match node:crypto in both directions, for every size class', () => {
    const ciphers: readonly [AeadCipherName, number][] = [
      ['aes-128-gcm', 16],
      ['aes-256-gcm', 32],
      ['chacha20-poly1305', 32],
    ];
    for (const [cipher, keyLen] of ciphers) {
      for (const ptLen of [0, 1, 15, 16, 17, 64, 1024, 70_000]) {
        for (const aadLen of [0, 5, 100, 2000]) {
          const key = bytes(keyLen);
          const nonce = bytes(12);
          const aad = bytes(aadLen);
          const pt = bytes(ptLen);
          const ctNative = on('native', () => aeadSeal(cipher, key, nonce, aad, pt));
          const ctNode = on('node', () => aeadSeal(cipher, key, nonce, aad, pt));
          expect(hexOf(ctNative)).toBe(hexOf(ctNode));
          expect(hexOf(on('node', () => aeadOpen(cipher, key, nonce, aad, ctNative)))).toBe(hexOf(pt));
          expect(hexOf(on('native', () => aeadOpen(cipher, key, nonce, aad, ctNode)))).toBe(hexOf(pt));
        }
      }
    }
  });

  it('a flipped bit anywhere in ciphertext, tag, nonce, key or aad fails the open with HPKE_OPEN_FAILED', () => {
    const key = bytes(16);
    const nonce = bytes(12);
    const aad = utf8('final');
    const pt = bytes(100);
    const ct = on('native', () => aeadSeal('aes-128-gcm', key, nonce, aad, pt));
    on('native', () => {
      for (let i = 0; i < ct.byteLength; i++) {
        const bad = Uint8Array.from(ct);
        bad[i] = (bad[i] ?? 0) ^ 0x01;
        expect(codeOf(() => aeadOpen('aes-128-gcm', key, nonce, aad, bad))).toBe('HPKE_OPEN_FAILED');
      }
      for (const [k, nn, a] of [
        [Uint8Array.from(key, (b, i) => (i === 3 ? b ^ 1 : b)), nonce, aad],
        [key, Uint8Array.from(nonce, (b, i) => (i === 11 ? b ^ 0x80 : b)), aad],
        [key, nonce, utf8('finam')],
        [key, nonce, new Uint8Array(0)],
      ] as const) {
        expect(codeOf(() => aeadOpen('aes-128-gcm', k, nn, a, ct))).toBe('HPKE_OPEN_FAILED');
      }
      // Shorter than a tag: the same code as node:crypto's path.
      expect(codeOf(() => aeadOpen('aes-128-gcm', key, nonce, aad, ct.subarray(0, 15)))).toBe('HPKE_OPEN_FAILED');
    });
    expect(codeOf(() => on('node', () => aeadOpen('aes-128-gcm', key, nonce, aad, ct.subarray(0, 15))))).toBe('HPKE_OPEN_FAILED');
  });

  it('HPKE interoperates: native <-> node:crypto <-> hpke library, both suites, both directions', async () => {
    const suites: readonly HpkeSuite[] = [AES, CHACHA];
    for (const suite of suites) {
      const kp = generateX25519KeyPair();
      const info = utf8('cross-backend info');
      const aad = utf8('aad');
      const pt = bytes(300);
      // A key made under each backend; each opened under the other.
      const keyNative = on('native', () => HpkeRecipientKey.fromPrivateKey(kp.privateKey));
      const keyNode = on('node', () => HpkeRecipientKey.fromPrivateKey(kp.privateKey));
      expect(hexOf(keyNative.publicKey)).toBe(hexOf(kp.publicKey));
      expect(hexOf(keyNode.publicKey)).toBe(hexOf(kp.publicKey));
      for (const [sealOn, openOn] of [
        ['native', 'node'],
        ['node', 'native'],
        ['native', 'native'],
      ] as const) {
        const { enc, context } = on(sealOn, () => setupBaseSender(suite, kp.publicKey, info));
        const ct = on(sealOn, () => context.seal(pt, aad));
        for (const key of [keyNative, keyNode]) {
          const r = on(openOn, () => setupBaseRecipient(suite, enc, key, info));
          expect(hexOf(on(openOn, () => r.open(ct, aad)))).toBe(hexOf(pt));
          expect(hexOf(on(openOn, () => r.export(utf8('ctx'), 48)))).toBe(hexOf(on(sealOn, () => context.export(utf8('ctx'), 48))));
        }
      }
      // The maintained library, both directions, against the native backend.
      const lib = await portableSetupBaseSender(suite, kp.publicKey, info);
      const libCt = await lib.context.seal(pt, aad);
      const r = on('native', () => setupBaseRecipient(suite, lib.enc, keyNative, info));
      expect(hexOf(on('native', () => r.open(libCt, aad)))).toBe(hexOf(pt));
      const s = on('native', () => setupBaseSender(suite, kp.publicKey, info));
      const sCt = on('native', () => s.context.seal(pt, aad));
      const libR = await portableSetupBaseRecipient(suite, s.enc, kp.privateKey, info);
      expect(hexOf(await libR.open(sCt, aad))).toBe(hexOf(pt));
    }
  });

  it('keys from HpkeRecipientKey.generate work on both backends', () => {
    const key = on('native', () => HpkeRecipientKey.generate());
    for (const [a, b] of [
      ['native', 'node'],
      ['node', 'native'],
    ] as const) {
      const { enc, context } = on(a, () => setupBaseSender(AES, key.publicKey, utf8('i')));
      const ct = on(a, () => context.seal(utf8('hello')));
      expect(new TextDecoder().decode(on(b, () => setupBaseRecipient(AES, enc, key, utf8('i')).open(ct)))).toBe('hello');
    }
  });

  it('the two strategy objects agree on X25519: pinned ephemeral, recipient import and derive', () => {
    const nat = nativeCryptoBackend(n);
    const skE = bytes(32);
    const skR = bytes(32);
    const viaNode = nodeCryptoBackend.x25519Recipient(skR);
    const viaNative = nat.x25519Recipient(skR);
    expect(hexOf(viaNative.publicKey)).toBe(hexOf(viaNode.publicKey));
    expect(viaNode.native).toBeUndefined();
    expect(viaNative.native).toBeDefined();
    const a = nodeCryptoBackend.x25519Ephemeral(viaNode.publicKey, skE);
    const b = nat.x25519Ephemeral(viaNode.publicKey, skE);
    expect(hexOf(b.enc)).toBe(hexOf(a.enc));
    expect(hexOf(b.dh)).toBe(hexOf(a.dh));
    expect(hexOf(nat.x25519Derive(viaNative, a.enc))).toBe(hexOf(a.dh));
    expect(hexOf(nodeCryptoBackend.x25519Derive(viaNative, a.enc))).toBe(hexOf(a.dh));
    // A key made under node:crypto (no handle) still derives on the native strategy.
    expect(hexOf(nat.x25519Derive(viaNode, a.enc))).toBe(hexOf(a.dh));
    // AES-192-GCM, which the addon lacks, runs on the portable strategy with the same bytes.
    const key = bytes(24);
    const nonce = bytes(12);
    const ct = nat.aeadSeal('aes-192-gcm', key, nonce, bytes(0), utf8('x'));
    expect(hexOf(nodeCryptoBackend.aeadOpen('aes-192-gcm', key, nonce, bytes(0), ct))).toBe(hexOf(utf8('x')));
  });

  it('refuses every small-order enc with HPKE_DECAP_FAILED, as node:crypto does', () => {
    const key = on('native', () => HpkeRecipientKey.generate());
    for (const h of SMALL_ORDER) {
      const enc = Uint8Array.from(Buffer.from(h, 'hex'));
      expect(codeOf(() => on('native', () => setupBaseRecipient(AES, enc, key, utf8('i'))))).toBe('HPKE_DECAP_FAILED');
      expect(codeOf(() => on('node', () => setupBaseRecipient(AES, enc, key, utf8('i'))))).toBe('HPKE_DECAP_FAILED');
      // And a sender never seals to a small-order recipient key.
      expect(codeOf(() => on('native', () => setupBaseSender(AES, enc, utf8('i'))))).toBe('HPKE_DECAP_FAILED');
      expect(nativeCode(() => n.x25519Derive(n.x25519Generate(), enc))).toBe('DH_FAILED');
    }
  });

  it('one key handle derives with many peers (its cached exchange context), also after a refused peer', () => {
    // The handle keeps one EVP_PKEY_CTX for all its derives and swaps the peer each time:
    // every result must still be that peer's DH (checked against node:crypto), and a refused
    // small-order peer must not leave the context unusable or answer with a previous secret.
    const raw = rawAddon();
    const skRaw = bytes(32);
    const handle = n.x25519PrivateKey(skRaw);
    const nodeKey = createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b656e04220420', 'hex'), skRaw]), format: 'der', type: 'pkcs8' });
    const nodeDh = (peer: Uint8Array): string =>
      hexOf(diffieHellman({ privateKey: nodeKey, publicKey: createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b656e032100', 'hex'), peer]), format: 'der', type: 'spki' }) }));
    const scratch = new Uint8Array(1280);
    const seen = new Set<string>();
    for (let i = 0; i < 12; i++) {
      const peer = n.x25519PublicKey(n.x25519Generate());
      const want = nodeDh(peer);
      expect(hexOf(n.x25519Derive(handle, peer))).toBe(want);
      // The scratch entry point shares the handle's context.
      scratch.set(peer, 0);
      raw['x25519DeriveS']?.(handle, scratch);
      expect(hexOf(scratch.subarray(1024, 1056))).toBe(want);
      seen.add(want);
      const small = SMALL_ORDER[i % SMALL_ORDER.length];
      if (small !== undefined) expect(nativeCode(() => n.x25519Derive(handle, Uint8Array.from(Buffer.from(small, 'hex'))))).toBe('DH_FAILED');
    }
    expect(seen.size).toBe(12);
  });

  it('tamper: flipping any byte of a sealed 1 KiB chunked request (enc, ciphertext, tag) fails the open', () => {
    const key = on('native', () => HpkeRecipientKey.generate());
    const target = { keyId: 9, publicKey: key.publicKey, suite: AES };
    const lookup = (): HpkeRecipientKey => key;
    const body = bytes(1024);
    const wire = on('native', () => sealChunkedRequest(target, body).bytes);
    expect(hexOf(on('native', () => openChunkedRequest(lookup, wire).plaintext))).toBe(hexOf(body));
    const codes = new Set<string>();
    on('native', () => {
      // Bytes 0..6 are the public header (key id, suite ids): their own checks apply; from 7 on
      // every byte is enc, framing, ciphertext or tag.
      for (let i = 7; i < wire.byteLength; i++) {
        const bad = Uint8Array.from(wire);
        bad[i] = (bad[i] ?? 0) ^ 0x01;
        const code = codeOf(() => openChunkedRequest(lookup, bad));
        expect(code, `byte ${i}`).not.toBe('no-throw');
        expect(code.startsWith('non-cloister'), `byte ${i}: ${code}`).toBe(false);
        codes.add(code);
      }
    });
    expect(codes.has('HPKE_OPEN_FAILED')).toBe(true);
  });

  it('the C layer refuses wrong types and lengths with INVALID_ARGUMENT, never a crash', () => {
    const a = rawAddon();
    const call = (name: string, ...args: unknown[]): string => nativeCode(() => a[name]?.(...args));
    const k = n.x25519Generate();
    const k16 = new Uint8Array(16);
    const n12 = new Uint8Array(12);
    const e = new Uint8Array(0);
    const cases: [string, ...unknown[]][] = [
      ['x25519PrivateKey', new Uint8Array(31)],
      ['x25519PrivateKey', new Uint8Array(33)],
      ['x25519PrivateKey', 'not bytes'],
      ['x25519PrivateKey', new Uint16Array(16)],
      ['x25519PrivateKey'],
      ['x25519PublicKey', {}],
      ['x25519PublicKey', new Uint8Array(32)],
      ['x25519Derive', k, new Uint8Array(31)],
      ['x25519Derive', {}, new Uint8Array(32)],
      ['x25519Derive', null, new Uint8Array(32)],
      ['x25519Ephemeral', new Uint8Array(33)],
      ['x25519Generate', 1],
      ['hkdfExtract', e],
      ['hkdfExtract', e, 'x'],
      ['hkdfExpand', e, e, 8161],
      ['hkdfExpand', e, e, -1],
      ['hkdfExpand', e, e, 1.5],
      ['hkdfExpand', e, e, Number.NaN],
      ['aeadSeal', 3, k16, n12, e, e],
      ['aeadSeal', -1, k16, n12, e, e],
      ['aeadSeal', 0, new Uint8Array(15), n12, e, e],
      ['aeadSeal', 2, k16, n12, e, e],
      ['aeadSeal', 0, k16, new Uint8Array(11), e, e],
      ['aeadSeal', 0, k16, n12, 'aad', e],
      ['aeadOpen', 0, k16, n12, e, [1, 2, 3]],
      // Scratch variants: the scratch must be exactly the addon's size, lengths within it.
      ['hkdfExtractS', new Uint8Array(100), 0, 0],
      ['hkdfExtractS', new Uint8Array(1280), 1000, 100],
      ['hkdfExtractS', new Uint8Array(1280), -1, 0],
      ['hkdfExpandS', new Uint8Array(1280), 32, 10, 257],
      ['hkdfExpandS', new Uint8Array(1280), 32, 10, 2.5],
      ['x25519DeriveS', k, new Uint8Array(64)],
      ['x25519DeriveS', {}, new Uint8Array(1280)],
      ['x25519EphemeralS', new Uint8Array(1279)],
      ['aeadSealS', 0, new Uint8Array(1280), 16, 11, 0, e],
      ['aeadSealS', 0, new Uint8Array(1280), 32, 12, 0, e],
      ['aeadOpenS', 0, new Uint8Array(1280), 16, 12, 1000, e],
      ['aeadOpenS', 0, new Uint8Array(1280), 16, 12, 0, 'ct'],
    ];
    for (const [name, ...args] of cases) expect(call(name, ...args), `${name}(${args.length} args)`).toBe('INVALID_ARGUMENT');
    // Not argument errors: a short ciphertext is an authentication failure.
    expect(call('aeadOpen', 0, k16, n12, e, new Uint8Array(15))).toBe('AEAD_OPEN_FAILED');
    expect(call('aeadOpenS', 0, new Uint8Array(1280), 16, 12, 0, new Uint8Array(15))).toBe('AEAD_OPEN_FAILED');
    // Wrapper level: the same refusals come back as CloisterError codes.
    expect(codeOf(() => on('native', () => aeadSeal('aes-128-gcm', new Uint8Array(15), n12, e, e)))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => on('native', () => aeadSeal('chacha20-poly1305', k16, n12, e, e)))).toBe('INVALID_ARGUMENT');
  });

  it('leaves nothing in the OpenSSL error queue that node:crypto would trip on', () => {
    const a = rawAddon();
    nativeCode(() => a['aeadOpen']?.(0, new Uint8Array(16), new Uint8Array(12), new Uint8Array(0), new Uint8Array(40)));
    nativeCode(() => n.x25519Derive(n.x25519Generate(), new Uint8Array(32)));
    // node:crypto operations right after native failures still behave exactly.
    const key = bytes(16);
    const iv = bytes(12);
    const c = createCipheriv('aes-128-gcm', key, iv);
    const ct = Buffer.concat([c.update(utf8('ok')), c.final(), c.getAuthTag()]);
    expect(new TextDecoder().decode(on('node', () => aeadOpen('aes-128-gcm', key, iv, new Uint8Array(0), ct)))).toBe('ok');
    const kp = generateX25519KeyPair();
    expect(kp.publicKey.byteLength).toBe(32);
  });

  it('never aliases or modifies its inputs; results are fresh arrays', () => {
    const key = bytes(16);
    const nonce = bytes(12);
    const aad = bytes(5);
    const pt = bytes(64);
    const copies = [key, nonce, aad, pt].map((b) => hexOf(b));
    const ct = on('native', () => aeadSeal('aes-128-gcm', key, nonce, aad, pt));
    const opened = on('native', () => aeadOpen('aes-128-gcm', key, nonce, aad, ct));
    expect([key, nonce, aad, pt].map((b) => hexOf(b))).toEqual(copies);
    expect(opened.buffer).not.toBe(ct.buffer);
    const prk = on('native', () => hkdfExtract(bytes(32), bytes(32)));
    const prk2 = on('native', () => hkdfExtract(bytes(32), bytes(32)));
    expect(prk.buffer).not.toBe(prk2.buffer);
    expect(prk.byteOffset).toBe(0);
    expect(prk.buffer.byteLength).toBe(32);
  });
});
