/**
 * HPKE base mode on a maintained, runtime-portable library (`hpke` with
 * `@panva/hpke-noble`): the independent implementation the tests cross-check ours against and
 * the crypto benchmark's baseline. Not shipped (no browser client exists yet).
 *
 * - KEM: noble X25519 (Web Crypto X25519 is not available in every browser yet).
 * - KDF and AES-128-GCM: Web Crypto through `hpke`.
 * - ChaCha20-Poly1305: noble (Web Crypto has none).
 *
 * Same suites, same wire bytes as the node:crypto implementation in `hpke/`; the tests
 * cross-check both directions. Every operation is async.
 */
import { AEAD_ChaCha20Poly1305 as NOBLE_CHACHA, KEM_DHKEM_X25519_HKDF_SHA256 as NOBLE_X25519 } from '@panva/hpke-noble';
import { AEAD_AES_128_GCM as WEB_AES_128_GCM, CipherSuite, KDF_HKDF_SHA256 as WEB_HKDF_SHA256 } from 'hpke';
import type { AEADFactory, RecipientContext, SenderContext } from 'hpke';
import { CloisterError } from '../../src/errors.js';
import { assertBytes, copyBytes } from '../../src/core/bytes.js';
import { AEAD_AES_128_GCM, AEAD_CHACHA20_POLY1305, suiteParams } from '../../src/crypto/hpke/suite.js';
import type { HpkeSuite } from '../../src/crypto/hpke/suite.js';

const EMPTY = new Uint8Array(0);

function cipherSuite(suite: HpkeSuite): CipherSuite {
  const p = suiteParams(suite); // throws UNSUPPORTED_SUITE
  let aead: AEADFactory;
  if (p.suite.aeadId === AEAD_AES_128_GCM) aead = WEB_AES_128_GCM;
  else if (p.suite.aeadId === AEAD_CHACHA20_POLY1305) aead = NOBLE_CHACHA;
  else throw new CloisterError('UNSUPPORTED_SUITE');
  return new CipherSuite(NOBLE_X25519, WEB_HKDF_SHA256, aead);
}

function mapError(err: unknown, code: 'HPKE_DECAP_FAILED' | 'HPKE_OPEN_FAILED' | 'HPKE_MESSAGE_LIMIT'): CloisterError {
  if (err instanceof CloisterError) return err;
  const name = err instanceof Error ? err.name : '';
  if (name === 'MessageLimitReachedError') return new CloisterError('HPKE_MESSAGE_LIMIT', undefined, { cause: err });
  return new CloisterError(code, undefined, { cause: err });
}

export class PortableSenderContext {
  readonly #ctx: SenderContext;
  /** Internal: built by `portableSetupBaseSender`. */
  constructor(ctx: SenderContext) {
    this.#ctx = ctx;
  }
  async seal(plaintext: Uint8Array, aad: Uint8Array = EMPTY): Promise<Uint8Array> {
    assertBytes(plaintext, 'plaintext');
    assertBytes(aad, 'aad');
    try {
      return await this.#ctx.Seal(copyBytes(plaintext), copyBytes(aad));
    } catch (err) {
      throw mapError(err, 'HPKE_MESSAGE_LIMIT');
    }
  }
  async export(exporterContext: Uint8Array, length: number): Promise<Uint8Array> {
    assertBytes(exporterContext, 'exporterContext');
    return this.#ctx.Export(copyBytes(exporterContext), length);
  }
}

export class PortableRecipientContext {
  readonly #ctx: RecipientContext;
  /** Internal: built by `portableSetupBaseRecipient`. */
  constructor(ctx: RecipientContext) {
    this.#ctx = ctx;
  }
  async open(ciphertext: Uint8Array, aad: Uint8Array = EMPTY): Promise<Uint8Array> {
    assertBytes(ciphertext, 'ciphertext');
    assertBytes(aad, 'aad');
    try {
      return await this.#ctx.Open(copyBytes(ciphertext), copyBytes(aad));
    } catch (err) {
      throw mapError(err, 'HPKE_OPEN_FAILED');
    }
  }
  async export(exporterContext: Uint8Array, length: number): Promise<Uint8Array> {
    assertBytes(exporterContext, 'exporterContext');
    return this.#ctx.Export(copyBytes(exporterContext), length);
  }
}

export async function portableSetupBaseSender(
  suite: HpkeSuite,
  recipientPublicKey: Uint8Array,
  info: Uint8Array,
): Promise<{ enc: Uint8Array; context: PortableSenderContext }> {
  const cs = cipherSuite(suite);
  assertBytes(recipientPublicKey, 'recipientPublicKey', cs.KEM.Npk);
  assertBytes(info, 'info');
  const pk = await cs.DeserializePublicKey(copyBytes(recipientPublicKey));
  const { encapsulatedSecret, ctx } = await cs.SetupSender(pk, { info: copyBytes(info) });
  return { enc: encapsulatedSecret, context: new PortableSenderContext(ctx) };
}

export async function portableSetupBaseRecipient(
  suite: HpkeSuite,
  enc: Uint8Array,
  recipientPrivateKey: Uint8Array,
  info: Uint8Array,
): Promise<PortableRecipientContext> {
  const cs = cipherSuite(suite);
  if (!(enc instanceof Uint8Array) || enc.byteLength !== cs.KEM.Nenc) {
    throw new CloisterError('HPKE_DECAP_FAILED', 'enc must be exactly Nenc bytes');
  }
  assertBytes(recipientPrivateKey, 'recipientPrivateKey', cs.KEM.Nsk);
  assertBytes(info, 'info');
  let ctx: RecipientContext;
  try {
    const sk = await cs.DeserializePrivateKey(copyBytes(recipientPrivateKey), true);
    ctx = await cs.SetupRecipient(sk, copyBytes(enc), { info: copyBytes(info) });
  } catch (err) {
    throw mapError(err, 'HPKE_DECAP_FAILED');
  }
  return new PortableRecipientContext(ctx);
}
