/**
 * bench:crypto - what the server pays per request for sealing, on one core: open the sealed
 * request (HPKE SetupBaseR + Open) and seal the response with keys exported from the
 * request's context (RFC 9458 section 4.4: Export, Extract, Expand key and nonce, Seal).
 *
 * Arms, measured interleaved on the same bytes:
 * - cloister:    the server's real path: `openChunkedRequest` (src/protocol/chunked.ts, our
 *                synchronous HPKE on the active crypto backend, src/crypto/backend.ts) then
 *                `start()` + `sealFinal()` of the chunked-OHTTP response sealer, for a
 *                request sent as one final chunk.
 * - cloister-node (only when the native backend is active): the same path with the
 *                node:crypto backend forced, i.e. what the server pays without the addon.
 * - portable:    the maintained library path (src/crypto/hpke-portable.ts: `hpke` +
 *                `@panva/hpke-noble`) with the response sealed through Web Crypto.
 * - lower-bound: the irreducible work on the active backend: one X25519 DH with the 32-byte
 *                `enc`, AES-128-GCM open of the request and seal of the response. No HKDF,
 *                no checks: nothing real on that backend can be faster. With node:crypto this
 *                includes importing `enc` as a KeyObject (node:crypto needs one for any DH).
 * - lower-bound-node (only when native is active): the node:crypto lower bound, as before.
 *
 * A second comparison, crypto-client, measures the client's cost of sealing the request
 * (`sealChunkedRequest`: ephemeral key, DH, key schedule, AEAD) on both backends.
 */
import { createCipheriv, createDecipheriv, createPublicKey, diffieHellman, generateKeyPairSync, randomBytes, webcrypto } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { compare, ratio, target } from '../lib/harness.js';
import type { Arm } from '../lib/harness.js';
import { serialLoop, syncLoop } from '../lib/load.js';
import { fmtBytes } from '../lib/format.js';
import { ResultBuilder } from '../lib/scenario.js';
import type { Scenario, ScenarioContext, ScenarioResult } from '../lib/scenario.js';
import { AEAD_AES_128_GCM, KDF_HKDF_SHA256, KEM_DHKEM_X25519_HKDF_SHA256, suiteFromIds } from '../../src/crypto/hpke/suite.js';
import { HpkeRecipientKey } from '../../src/crypto/hpke/kem.js';
import { setupBaseSender } from '../../src/crypto/hpke/setup.js';
import { portableSetupBaseRecipient } from '../../test/helpers/hpke-portable.js';
import { openChunkedRequest, sealChunkedRequest } from '../../src/protocol/chunked.js';
import { activeNative, cryptoBackendInfo, useCryptoBackend } from '../../src/crypto/backend.js';
import type { CryptoBackendName } from '../../src/crypto/backend.js';
import { NATIVE_AEAD_AES_128_GCM } from '../../src/native/crypto.js';

const SUITE = suiteFromIds(KEM_DHKEM_X25519_HKDF_SHA256, KDF_HKDF_SHA256, AEAD_AES_128_GCM);
const INFO = new TextEncoder().encode('message/bhttp request');
const EXPORT_LABEL = new TextEncoder().encode('message/bhttp response');
const KEY_LABEL = new TextEncoder().encode('key');
const NONCE_LABEL = new TextEncoder().encode('nonce');
/** max(Nn, Nk) for AES-128-GCM (RFC 9458 section 4.4). */
const RESPONSE_NONCE_LEN = 16;
/** Distinct sealed requests cycled through, so no run reuses one ciphertext back to back. */
const POOL = 32;
const KEY_ID = 7;

interface Sealed {
  /** Chunked OHTTP request: hdr || enc || varint(0) || final chunk. */
  readonly wire: Uint8Array;
  /** The same plaintext sealed with bare HPKE (for the portable and lower-bound arms). */
  readonly enc: Uint8Array;
  readonly ct: Uint8Array;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a, 0);
  out.set(b, a.byteLength);
  return out;
}

async function sealResponseWeb(secret: Uint8Array, enc: Uint8Array, body: Uint8Array): Promise<Uint8Array> {
  const responseNonce = webcrypto.getRandomValues(new Uint8Array(RESPONSE_NONCE_LEN));
  const ikm = await webcrypto.subtle.importKey('raw', secret, 'HKDF', false, ['deriveBits']);
  // HKDF with the concatenated salt; two Expand calls as separate deriveBits over the same PRK.
  const salt = concat(enc, responseNonce);
  const keyBits = await webcrypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt, info: KEY_LABEL }, ikm, 128);
  const nonceBits = await webcrypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt, info: NONCE_LABEL }, ikm, 96);
  const key = await webcrypto.subtle.importKey('raw', keyBits, 'AES-GCM', false, ['encrypt']);
  const ct = await webcrypto.subtle.encrypt({ name: 'AES-GCM', iv: new Uint8Array(nonceBits) }, key, body);
  return concat(responseNonce, new Uint8Array(ct));
}

/** An arm's loop run with the node:crypto backend forced, then the previous one restored. */
function onNodeBackend<T>(active: CryptoBackendName, fn: () => T): T {
  useCryptoBackend('node');
  try {
    return fn();
  } finally {
    useCryptoBackend(active);
  }
}

const EMPTY = new Uint8Array(0);

function rawPrivateKey(key: KeyObject): Uint8Array {
  const jwk = key.export({ format: 'jwk' });
  if (typeof jwk.d !== 'string') throw new Error('no private scalar');
  return new Uint8Array(Buffer.from(jwk.d, 'base64url'));
}

export const scenario: Scenario = {
  name: 'crypto',
  title: 'request open + response seal per second, one core (HPKE X25519/HKDF-SHA256/AES-128-GCM)',
  async run(ctx: ScenarioContext): Promise<ScenarioResult> {
    const out = new ResultBuilder();
    const sizes = ctx.smoke ? [1024] : [1024, 16 * 1024, 64 * 1024];
    const backend = cryptoBackendInfo();
    const native = activeNative();
    const serverArms = native === undefined ? 3 : 5;
    const clientArms = native === undefined ? 1 : 2;
    ctx.progress.plan((sizes.length * serverArms + clientArms) * ctx.timing.rounds);
    const { privateKey } = generateKeyPairSync('x25519');
    const skRaw = rawPrivateKey(privateKey);
    const recipient = HpkeRecipientKey.fromPrivateKey(skRaw);
    const pkR = recipient.publicKey;
    const lookup = (keyId: number): HpkeRecipientKey => {
      if (keyId !== KEY_ID) throw new Error('unknown key id');
      return recipient;
    };

    for (const size of sizes) {
      const body = new Uint8Array(randomBytes(size));
      const pool: Sealed[] = [];
      for (let i = 0; i < POOL; i++) {
        const { enc, context } = setupBaseSender(SUITE, pkR, INFO);
        const wire = sealChunkedRequest({ keyId: KEY_ID, publicKey: pkR, suite: SUITE }, body).bytes;
        pool.push({ wire, enc, ct: context.seal(body) });
      }
      // Lower bound: pre-split key material so the loop does only the DH and the AEADs.
      const lbKey = new Uint8Array(randomBytes(16));
      const lbNonce = new Uint8Array(randomBytes(12));
      const lbCt = (() => {
        const c = createCipheriv('aes-128-gcm', lbKey, lbNonce);
        return Buffer.concat([c.update(body), c.final(), c.getAuthTag()]);
      })();
      const lbNativeKey = native?.x25519PrivateKey(skRaw);
      let i = 0;
      const next = (): Sealed => {
        const s = pool[i++ % POOL];
        if (s === undefined) throw new Error('empty pool');
        return s;
      };
      const checkLen = (n: number): void => {
        if (n !== size + 16 + RESPONSE_NONCE_LEN) throw new Error('unexpected response length');
      };

      const serverOp = (): void => {
        const s = next();
        const opened = openChunkedRequest(lookup, s.wire);
        const nonce = opened.response.start();
        const final = opened.response.sealFinal(opened.plaintext);
        // varint(0) frames the final chunk: one byte.
        checkLen(nonce.byteLength + final.byteLength - 1);
      };
      const lowerBoundNode = (): void => {
        const s = next();
        const pkE = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(s.enc).toString('base64url') }, format: 'jwk' });
        const shared = diffieHellman({ privateKey, publicKey: pkE });
        if (shared.byteLength !== 32) throw new Error('bad DH');
        const d = createDecipheriv('aes-128-gcm', lbKey, lbNonce);
        d.setAuthTag(lbCt.subarray(size));
        const pt = Buffer.concat([d.update(lbCt.subarray(0, size)), d.final()]);
        const c = createCipheriv('aes-128-gcm', lbKey, lbNonce);
        const ct = Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]);
        checkLen(ct.byteLength + RESPONSE_NONCE_LEN);
      };
      const arms: Arm[] = [
        { name: 'cloister', measure: async (ms) => syncLoop(ms, serverOp, 8) },
        {
          name: 'portable',
          measure: (ms) =>
            serialLoop(ms, async () => {
              const s = next();
              const rctx = await portableSetupBaseRecipient(SUITE, s.enc, skRaw, INFO);
              const pt = await rctx.open(s.ct);
              const secret = await rctx.export(EXPORT_LABEL, RESPONSE_NONCE_LEN);
              checkLen((await sealResponseWeb(secret, s.enc, pt)).byteLength);
            }),
        },
      ];
      if (native === undefined || lbNativeKey === undefined) {
        arms.push({ name: 'lower-bound', measure: async (ms) => syncLoop(ms, lowerBoundNode, 8) });
      } else {
        arms.push(
          {
            name: 'lower-bound',
            measure: async (ms) =>
              syncLoop(ms, () => {
                const s = next();
                if (native.x25519Derive(lbNativeKey, s.enc).byteLength !== 32) throw new Error('bad DH');
                const pt = native.aeadOpen(NATIVE_AEAD_AES_128_GCM, lbKey, lbNonce, EMPTY, lbCt);
                const ct = native.aeadSeal(NATIVE_AEAD_AES_128_GCM, lbKey, lbNonce, EMPTY, pt);
                checkLen(ct.byteLength + RESPONSE_NONCE_LEN);
              }, 8),
          },
          { name: 'cloister-node', measure: async (ms) => onNodeBackend(backend.backend, () => syncLoop(ms, serverOp, 8)) },
          { name: 'lower-bound-node', measure: async (ms) => syncLoop(ms, lowerBoundNode, 8) },
        );
      }
      const c = await compare('crypto', { size: fmtBytes(size) }, arms, { ...ctx.timing, unit: 'req/s' }, ctx.progress);
      out.comparisons.push(c);
      const ours = c.arms.find((a) => a.name === 'cloister')?.throughput.median ?? Number.NaN;
      const vsLb = ratio(c, 'cloister', 'lower-bound');
      out.ratios.push({ ...vsLb, target: { kind: 'min', threshold: 0.5 } });
      out.ratios.push(ratio(c, 'cloister', 'portable'));
      if (native !== undefined) {
        out.ratios.push(ratio(c, 'cloister', 'cloister-node'));
        out.ratios.push(ratio(c, 'cloister-node', 'lower-bound-node'));
      }
      if (size === 1024) {
        out.targets.push(target('open+seal per second at 1 KiB, one core', ours, 'min', 10_000, '/s'));
        out.targets.push(target('cloister / lower bound at 1 KiB (within 2x)', vsLb.median, 'min', 0.5, 'x'));
      }
    }
    {
      // Client side: what sealing one 1 KiB request costs (the end-to-end scenario pays it too).
      const body = new Uint8Array(randomBytes(1024));
      const sealTarget = { keyId: KEY_ID, publicKey: pkR, suite: SUITE };
      const clientOp = (): void => {
        if (sealChunkedRequest(sealTarget, body).bytes.byteLength !== 7 + 32 + 1 + 1024 + 16) throw new Error('unexpected request length');
      };
      const arms: Arm[] = [{ name: 'client-seal', measure: async (ms) => syncLoop(ms, clientOp, 8) }];
      if (native !== undefined) {
        arms.push({ name: 'client-seal-node', measure: async (ms) => onNodeBackend(backend.backend, () => syncLoop(ms, clientOp, 8)) });
      }
      const c = await compare('crypto-client', { size: fmtBytes(1024) }, arms, { ...ctx.timing, unit: 'req/s' }, ctx.progress);
      out.comparisons.push(c);
      if (native !== undefined) out.ratios.push(ratio(c, 'client-seal', 'client-seal-node'));
    }
    out.notes.push(`crypto backend: ${backend.backend} (${backend.detail}); lower-bound uses the same backend`);
    if (native === undefined) {
      out.notes.push('lower bound includes importing the 32-byte enc as a node:crypto KeyObject, which node:crypto needs for any X25519 DH');
    } else {
      out.notes.push('cloister-node and lower-bound-node: the same work with the node:crypto backend, measured in the same run');
    }
    out.notes.push('portable arm is async (Web Crypto + noble X25519) and runs one request at a time on this thread');
    return out.result();
  },
};
