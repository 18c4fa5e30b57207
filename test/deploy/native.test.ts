import { closeSync, openSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadAddonModule, loadNative, nsmRaw, requireNative, snpGetExtReport } from '../../src/native/index.js';
import type { NativeAddon } from '../../src/native/index.js';
import { requirePresent } from '../helpers/ci.js';

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code ?? 'none';
  }
  throw new Error('expected a throw');
}

/** A test-only addon double, to exercise the wrapper's argument checks and retry logic. */
function fakeAddon(needed?: number): NativeAddon & { lengths: number[] } {
  const lengths: number[] = [];
  return {
    lengths,
    nsmRaw: (_fd, req) => req.slice(0, 1),
    snpGetExtReport: (_fd, _rd, _vmpl, len) => {
      lengths.push(len);
      if (needed !== undefined && len < needed) {
        throw Object.assign(new Error('certificate buffer too small'), { code: 'CERTS_BUFFER_TOO_SMALL', neededCertsLength: needed });
      }
      return { report: new Uint8Array(1184), certs: new Uint8Array(len) };
    },
  };
}

describe('native wrappers (addon double)', () => {
  it('validates NSM request bounds', () => {
    const a = fakeAddon();
    expect(nsmRaw(3, Uint8Array.of(1, 2), a)).toEqual(Uint8Array.of(1));
    expect(code(() => nsmRaw(3, new Uint8Array(0), a))).toBe('LIMIT_EXCEEDED');
    expect(code(() => nsmRaw(3, new Uint8Array(4097), a))).toBe('LIMIT_EXCEEDED');
    expect(code(() => nsmRaw(-1, Uint8Array.of(1), a))).toBe('INVALID_ARGUMENT');
  });

  it('retries SNP_GET_EXT_REPORT once with the needed certificate length, within the bound', () => {
    const a = fakeAddon(20000);
    const r = snpGetExtReport(3, new Uint8Array(64), {}, a);
    expect(a.lengths).toEqual([16384, 20480]);
    expect(r.certs.byteLength).toBe(20480);
    const b = fakeAddon(2_000_000);
    expect(code(() => snpGetExtReport(3, new Uint8Array(64), {}, b))).toBe('LIMIT_EXCEEDED');
    const c = fakeAddon(20000);
    expect(code(() => snpGetExtReport(3, new Uint8Array(64), { maxCertsBufferLength: 16384 }, c))).toBe('LIMIT_EXCEEDED');
  });

  it('validates SNP arguments', () => {
    const a = fakeAddon();
    expect(code(() => snpGetExtReport(3, new Uint8Array(63), {}, a))).toBe('INVALID_ARGUMENT');
    expect(code(() => snpGetExtReport(3, new Uint8Array(64), { vmpl: 4 }, a))).toBe('INVALID_ARGUMENT');
    expect(code(() => snpGetExtReport(3, new Uint8Array(64), { certsBufferLength: 100 }, a))).toBe('INVALID_ARGUMENT');
    expect(code(() => snpGetExtReport(3, new Uint8Array(64), { certsBufferLength: 8192, maxCertsBufferLength: 4096 }, a))).toBe('INVALID_ARGUMENT');
  });
});

const addon = loadNative();
// Outside CI a missing addon skips these checks (node scripts/build-native.mjs builds it); CI=true fails.
const skipAddon = requirePresent(addon !== undefined, 'the native addon build/Release/cloister_native.node');

describe.skipIf(skipAddon)('the built addon (no TEE device: a non-device fd)', () => {
  it('also exports the crypto fast path (tested in test/crypto/native-crypto.test.ts)', () => {
    const m = loadAddonModule().module as Record<string, unknown>;
    for (const f of ['nsmRaw', 'snpGetExtReport', 'x25519Derive', 'x25519Ephemeral', 'hkdfExpandS', 'aeadOpenS']) {
      expect(typeof m[f]).toBe('function');
    }
  });

  it('issues the ioctls and maps ENOTTY to ATTESTER_FAILED', () => {
    const fd = openSync('/dev/null', 'r');
    try {
      const real = requireNative();
      expect(code(() => nsmRaw(fd, Uint8Array.of(0x60), real))).toBe('ATTESTER_FAILED');
      expect(code(() => snpGetExtReport(fd, new Uint8Array(64), {}, real))).toBe('ATTESTER_FAILED');
      // The addon's own checks, below the wrapper.
      expect(code(() => real.nsmRaw(fd, new Uint8Array(4097)))).toBe('LIMIT_EXCEEDED');
      expect(code(() => real.snpGetExtReport(fd, new Uint8Array(64), 0, 100))).toBe('INVALID_ARGUMENT');
      expect(code(() => real.snpGetExtReport(fd, new Uint8Array(64), 4, 0))).toBe('INVALID_ARGUMENT');
    } finally {
      closeSync(fd);
    }
  });
});
