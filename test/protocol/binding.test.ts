/** The attestation binding shared by attesters and verifiers (docs/PROTOCOL.md section 2). */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CloisterError } from '../../src/errors.js';
import { checkReportDataBinding, nitroBindingFor, REPORT_DATA_LABEL, reportDataFor } from '../../src/protocol/binding.js';

const kc = new Uint8Array([0xa1, 0x01, 0x01]);
const pk = new Uint8Array(32).fill(7);

describe('binding', () => {
  it('report_data = SHA-512("cloister/attest/v1\\0" || keyConfig || nonce)', () => {
    expect(Buffer.from(REPORT_DATA_LABEL).toString('latin1')).toBe('cloister/attest/v1\0');
    const nonce = new Uint8Array(16).fill(3);
    const expected = createHash('sha512').update(Buffer.concat([Buffer.from('cloister/attest/v1\0'), kc, nonce])).digest();
    expect(Buffer.from(reportDataFor(kc, nonce))).toEqual(expected);
    expect(reportDataFor(kc).byteLength).toBe(64);
    // An absent nonce and an empty one hash the same; any other nonce differs.
    expect(reportDataFor(kc)).toEqual(reportDataFor(kc, new Uint8Array(0)));
    expect(reportDataFor(kc, nonce)).not.toEqual(reportDataFor(kc));
    expect(reportDataFor(kc)).not.toEqual(reportDataFor(new Uint8Array([0xa1, 0x01, 0x02])));
  });

  it('checkReportDataBinding accepts the right value and rejects any other', () => {
    const nonce = new Uint8Array(8).fill(1);
    const rd = reportDataFor(kc, nonce);
    expect(() => checkReportDataBinding(rd, kc, nonce)).not.toThrow();
    const flipped = Uint8Array.from(rd);
    flipped[63] = (flipped[63] ?? 0) ^ 1;
    for (const [data, config, n] of [
      [flipped, kc, nonce],
      [rd, kc, undefined],
      [rd, kc, new Uint8Array(8).fill(2)],
      [rd, new Uint8Array([1]), nonce],
      [rd.subarray(0, 32), kc, nonce],
    ] as const) {
      let code: string | undefined;
      try {
        checkReportDataBinding(data, config, n);
      } catch (e) {
        code = e instanceof CloisterError ? e.code : 'other';
      }
      expect(code).toBe('BINDING_MISMATCH');
    }
  });

  it('nitro binding: public_key = HPKE key, user_data = SHA-512(keyConfig), nonce or null', () => {
    const b = nitroBindingFor(kc, pk, new Uint8Array([9, 9]));
    expect(b.publicKey).toEqual(pk);
    expect(Buffer.from(b.userData)).toEqual(createHash('sha512').update(kc).digest());
    expect(b.nonce).toEqual(new Uint8Array([9, 9]));
    expect(nitroBindingFor(kc, pk).nonce).toBeNull();
    expect(nitroBindingFor(kc, pk, new Uint8Array(0)).nonce).toBeNull();
  });

  it('validates inputs and never aliases them', () => {
    expect(() => nitroBindingFor(kc, new Uint8Array(31))).toThrow(CloisterError);
    expect(() => nitroBindingFor(new Uint8Array(0), pk)).toThrow(CloisterError);
    expect(() => reportDataFor(kc, new Uint8Array(65))).toThrow(CloisterError);
    expect(reportDataFor(kc, new Uint8Array(64)).byteLength).toBe(64);
    const key = Uint8Array.from(pk);
    const b = nitroBindingFor(kc, key);
    key.fill(0);
    expect(b.publicKey).toEqual(pk);
  });
});
