/**
 * HPKE encryption contexts (RFC 9180 section 5.2) and the secret export (section 5.3).
 *
 * Contexts are synchronous, so a seal or open runs to completion before another starts and
 * the sequence number can never be reused. It is incremented only after a successful
 * operation; a failed open leaves it unchanged (section 5.2).
 */
import { CloisterError } from '../../errors.js';
import { aeadOpen, aeadSeal } from '../aead.js';
import { assertBytes, utf8 } from '../../core/bytes.js';
import { labeledExpand } from './key-schedule.js';
import type { HpkeSuite, SuiteParams } from './suite.js';

const EMPTY = new Uint8Array(0);
const LABEL_SEC = utf8('sec');

/**
 * The sequence number is a JS number; we stop at 2^53 - 1, far below the RFC's
 * 2^(8*Nn) - 1 bound, so the nonce is never reused and the count stays exact.
 */
export const MAX_SEQUENCE = Number.MAX_SAFE_INTEGER;

/** nonce = base_nonce XOR I2OSP(seq, Nn) (section 5.2). Internal. */
export function xorNonce(baseNonce: Uint8Array, seq: number): Uint8Array {
  const nonce = Uint8Array.from(baseNonce);
  const n = nonce.byteLength;
  const hi = Math.floor(seq / 0x1_0000_0000);
  const lo = seq >>> 0;
  const v = new DataView(nonce.buffer, nonce.byteOffset, nonce.byteLength);
  v.setUint32(n - 4, v.getUint32(n - 4) ^ lo);
  v.setUint32(n - 8, v.getUint32(n - 8) ^ hi);
  return nonce;
}

abstract class HpkeContextBase {
  protected readonly params: SuiteParams;
  protected readonly key: Uint8Array;
  protected readonly baseNonce: Uint8Array;
  readonly #exporterSecret: Uint8Array;
  protected seq: number;

  /** Internal: build with `setupBaseSender` / `setupBaseRecipient`. */
  constructor(params: SuiteParams, key: Uint8Array, baseNonce: Uint8Array, exporterSecret: Uint8Array, seq = 0) {
    this.params = params;
    this.key = key;
    this.baseNonce = baseNonce;
    this.#exporterSecret = exporterSecret;
    this.seq = seq;
  }

  get suite(): HpkeSuite {
    return this.params.suite;
  }

  /** Number of messages sealed or opened so far. */
  get sequenceNumber(): number {
    return this.seq;
  }

  protected nextNonce(): Uint8Array {
    if (this.seq >= MAX_SEQUENCE) throw new CloisterError('HPKE_MESSAGE_LIMIT');
    return xorNonce(this.baseNonce, this.seq);
  }

  /** Export(exporter_context, L) = LabeledExpand(exporter_secret, "sec", ctx, L) (section 5.3). */
  export(exporterContext: Uint8Array, length: number): Uint8Array {
    assertBytes(exporterContext, 'exporterContext');
    if (!Number.isInteger(length) || length < 0 || length > 255 * this.params.nh) {
      throw new CloisterError('INVALID_ARGUMENT', 'export length out of range', { detail: { length } });
    }
    return labeledExpand(this.params, this.#exporterSecret, LABEL_SEC, exporterContext, length);
  }
}

export class HpkeSenderContext extends HpkeContextBase {
  seal(plaintext: Uint8Array, aad: Uint8Array = EMPTY): Uint8Array {
    assertBytes(plaintext, 'plaintext');
    assertBytes(aad, 'aad');
    const ct = aeadSeal(this.params.cipher, this.key, this.nextNonce(), aad, plaintext);
    this.seq += 1;
    return ct;
  }
}

export class HpkeRecipientContext extends HpkeContextBase {
  open(ciphertext: Uint8Array, aad: Uint8Array = EMPTY): Uint8Array {
    assertBytes(ciphertext, 'ciphertext');
    assertBytes(aad, 'aad');
    const pt = aeadOpen(this.params.cipher, this.key, this.nextNonce(), aad, ciphertext);
    this.seq += 1;
    return pt;
  }
}
