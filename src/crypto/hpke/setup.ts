/**
 * SetupBaseS / SetupBaseR (RFC 9180 section 5.1.1).
 */
import { CloisterError } from '../../errors.js';
import { assertBytes } from '../../core/bytes.js';
import { HpkeRecipientContext, HpkeSenderContext } from './context.js';
import { decap, deriveX25519PrivateKey, encap } from './kem.js';
import type { HpkeRecipientKey } from './kem.js';
import { keyScheduleBase } from './key-schedule.js';
import type { KeyScheduleOutput } from './key-schedule.js';
import { suiteParams } from './suite.js';
import type { HpkeSuite } from './suite.js';

export interface SetupSenderOptions {
  /** Deterministic ephemeral key via DeriveKeyPair(ikmE), for test vectors only. */
  readonly ikmE?: Uint8Array;
  /** Deterministic raw ephemeral private key skE, for test vectors only. */
  readonly ephemeralPrivateKey?: Uint8Array;
}

interface SenderSetup {
  readonly enc: Uint8Array;
  readonly context: HpkeSenderContext;
}

/** The pinned raw skE, if any (validated by the KEM). */
function ephemeralFrom(options: SetupSenderOptions | undefined): Uint8Array | undefined {
  if (options === undefined) return undefined;
  if (options.ikmE !== undefined && options.ephemeralPrivateKey !== undefined) {
    throw new CloisterError('INVALID_ARGUMENT', 'give ikmE or ephemeralPrivateKey, not both');
  }
  if (options.ikmE !== undefined) {
    assertBytes(options.ikmE, 'ikmE');
    return deriveX25519PrivateKey(options.ikmE);
  }
  if (options.ephemeralPrivateKey !== undefined) {
    assertBytes(options.ephemeralPrivateKey, 'X25519 private key', 32);
    return options.ephemeralPrivateKey;
  }
  return undefined;
}

/** Internal variant that also returns the key schedule values (for test vectors). */
export function setupBaseSenderDetailed(
  suite: HpkeSuite,
  recipientPublicKey: Uint8Array,
  info: Uint8Array,
  options?: SetupSenderOptions,
): SenderSetup & { readonly sharedSecret: Uint8Array; readonly schedule: KeyScheduleOutput } {
  const p = suiteParams(suite);
  assertBytes(recipientPublicKey, 'recipientPublicKey', p.npk);
  assertBytes(info, 'info');
  const { sharedSecret, enc } = encap(recipientPublicKey, ephemeralFrom(options));
  const schedule = keyScheduleBase(p, sharedSecret, info);
  return { enc, sharedSecret, schedule, context: new HpkeSenderContext(p, schedule.key, schedule.baseNonce, schedule.exporterSecret) };
}

export function setupBaseSender(
  suite: HpkeSuite,
  recipientPublicKey: Uint8Array,
  info: Uint8Array,
  options?: SetupSenderOptions,
): SenderSetup {
  const { enc, context } = setupBaseSenderDetailed(suite, recipientPublicKey, info, options);
  return { enc, context };
}

export function setupBaseRecipient(
  suite: HpkeSuite,
  enc: Uint8Array,
  key: HpkeRecipientKey,
  info: Uint8Array,
): HpkeRecipientContext {
  const p = suiteParams(suite);
  // Exact length before any crypto: enc is exactly Nenc bytes, not "at least".
  if (!(enc instanceof Uint8Array) || enc.byteLength !== p.nenc) {
    throw new CloisterError('HPKE_DECAP_FAILED', 'enc must be exactly Nenc bytes', {
      detail: { expected: p.nenc, actual: enc instanceof Uint8Array ? enc.byteLength : -1 },
    });
  }
  assertBytes(info, 'info');
  const sharedSecret = decap(enc, key);
  const schedule = keyScheduleBase(p, sharedSecret, info);
  sharedSecret.fill(0);
  return new HpkeRecipientContext(p, schedule.key, schedule.baseNonce, schedule.exporterSecret);
}
