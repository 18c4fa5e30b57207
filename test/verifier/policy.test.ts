/** The client policy file parser: strict, fail-closed, one rule per negative case. */
import { describe, expect, it } from 'vitest';
import { DEFAULT_MAX_POLICY_BYTES, parsePolicy, policyFromJson } from '../../src/verifier/policy.js';
import { codeOf as code } from '../helpers/errors.js';

const PCR = 'ab'.repeat(48);
const nitro = { pcrs: { '0': PCR, '1': PCR, '2': PCR, '8': PCR } };

describe('policy parser', () => {
  it('parses a full nitro + simulated policy', () => {
    const p = policyFromJson({
      version: 1,
      platforms: { nitro: { ...nitro, maxAgeSeconds: 120 }, simulated: { pcrs: { '0': PCR.toUpperCase() }, rootSha256: 'cd'.repeat(32) } },
      models: { demo: '01'.repeat(32) },
      nonceRequired: true,
    });
    expect(p.platforms.nitro?.pcrs.size).toBe(4);
    expect(p.platforms.nitro?.pcrs.get(8)).toEqual(new Uint8Array(48).fill(0xab));
    expect(p.platforms.nitro?.maxAgeSeconds).toBe(120);
    expect(p.platforms.simulated?.rootSha256).toEqual(new Uint8Array(32).fill(0xcd));
    expect(p.platforms.simulated?.pcrs.get(0)).toEqual(new Uint8Array(48).fill(0xab));
    expect(p.models?.get('demo')).toEqual(new Uint8Array(32).fill(1));
    expect(p.nonceRequired).toBe(true);
    expect(policyFromJson({ version: 1, platforms: { nitro } }).nonceRequired).toBe(false);
  });

  it('parses text and bytes, and enforces the size limit', () => {
    const text = JSON.stringify({ version: 1, platforms: { nitro } });
    expect(parsePolicy(text).platforms.nitro?.pcrs.size).toBe(4);
    expect(parsePolicy(new TextEncoder().encode(text)).version).toBe(1);
    expect(code(() => parsePolicy(text, { maxBytes: text.length - 1 }))).toBe('POLICY_INVALID');
    expect(code(() => parsePolicy(' '.repeat(DEFAULT_MAX_POLICY_BYTES + 1)))).toBe('POLICY_INVALID');
    expect(code(() => parsePolicy('{'))).toBe('POLICY_INVALID');
    expect(code(() => parsePolicy(Uint8Array.of(0xff, 0xfe)))).toBe('POLICY_INVALID');
  });

  it('delegates sev-snp and tdx sections to their parsers', () => {
    expect(code(() => policyFromJson({ version: 1, platforms: { 'sev-snp': {} } }))).toBe('POLICY_INVALID');
    expect(code(() => policyFromJson({ version: 1, platforms: { tdx: {} } }))).toBe('POLICY_INVALID');
    const snp = policyFromJson({ version: 1, platforms: { 'sev-snp': { measurements: ['aa'.repeat(48)] } } });
    expect(snp.platforms['sev-snp']).toBeDefined();
    const tdx = policyFromJson({ version: 1, platforms: { tdx: { mrTd: ['aa'.repeat(48)], rtmr0: ['aa'.repeat(48)], rtmr1: ['aa'.repeat(48)], rtmr2: ['aa'.repeat(48)] } } });
    expect(tdx.platforms.tdx).toBeDefined();
  });

  const negatives: [string, unknown][] = [
    ['not an object', []],
    ['null', null],
    ['missing version', { platforms: { nitro } }],
    ['version 2', { version: 2, platforms: { nitro } }],
    ['version as text', { version: '1', platforms: { nitro } }],
    ['unknown top-level field', { version: 1, platforms: { nitro }, extra: true }],
    ['missing platforms', { version: 1 }],
    ['no platform section', { version: 1, platforms: {} }],
    ['unknown platform', { version: 1, platforms: { sgx: {} } }],
    ['nitro not an object', { version: 1, platforms: { nitro: [] } }],
    ['unknown nitro field', { version: 1, platforms: { nitro: { ...nitro, allowDebug: true } } }],
    ['nitro without pcrs', { version: 1, platforms: { nitro: {} } }],
    ['empty pcrs', { version: 1, platforms: { nitro: { pcrs: {} } } }],
    ['pcr index 32', { version: 1, platforms: { nitro: { pcrs: { '32': PCR } } } }],
    ['pcr index with leading zero', { version: 1, platforms: { nitro: { pcrs: { '01': PCR } } } }],
    ['pcr index negative', { version: 1, platforms: { nitro: { pcrs: { '-1': PCR } } } }],
    ['pcr index PCR0', { version: 1, platforms: { nitro: { pcrs: { PCR0: PCR } } } }],
    ['pcr value short', { version: 1, platforms: { nitro: { pcrs: { '0': 'ab'.repeat(47) } } } }],
    ['pcr value long', { version: 1, platforms: { nitro: { pcrs: { '0': 'ab'.repeat(49) } } } }],
    ['pcr value 0x-prefixed', { version: 1, platforms: { nitro: { pcrs: { '0': `0x${'ab'.repeat(47)}` } } } }],
    ['pcr value not hex', { version: 1, platforms: { nitro: { pcrs: { '0': 'zz'.repeat(48) } } } }],
    ['pcr value number', { version: 1, platforms: { nitro: { pcrs: { '0': 1 } } } }],
    ['all-zero PCR0 (debug)', { version: 1, platforms: { nitro: { pcrs: { '0': '00'.repeat(48) } } } }],
    ['all-zero PCR2 (debug)', { version: 1, platforms: { nitro: { pcrs: { '2': '00'.repeat(48), '8': PCR } } } }],
    ['maxAgeSeconds zero', { version: 1, platforms: { nitro: { ...nitro, maxAgeSeconds: 0 } } }],
    ['maxAgeSeconds fraction', { version: 1, platforms: { nitro: { ...nitro, maxAgeSeconds: 1.5 } } }],
    ['maxAgeSeconds over a day', { version: 1, platforms: { nitro: { ...nitro, maxAgeSeconds: 86401 } } }],
    ['maxAgeSeconds text', { version: 1, platforms: { nitro: { ...nitro, maxAgeSeconds: '60' } } }],
    ['simulated unknown field', { version: 1, platforms: { simulated: { ...nitro, trustAnything: true } } }],
    ['simulated rootSha256 short', { version: 1, platforms: { simulated: { ...nitro, rootSha256: 'ab' } } }],
    ['simulated rootSha256 number', { version: 1, platforms: { simulated: { ...nitro, rootSha256: 5 } } }],
    ['models array', { version: 1, platforms: { nitro }, models: ['demo'] }],
    ['models empty', { version: 1, platforms: { nitro }, models: {} }],
    ['model digest short', { version: 1, platforms: { nitro }, models: { demo: 'ab' } }],
    ['model digest number', { version: 1, platforms: { nitro }, models: { demo: 1 } }],
    ['model name empty', { version: 1, platforms: { nitro }, models: { '': '01'.repeat(32) } }],
    ['nonceRequired text', { version: 1, platforms: { nitro }, nonceRequired: 'yes' }],
  ];
  for (const [name, value] of negatives) {
    it(`rejects: ${name}`, () => {
      expect(code(() => policyFromJson(value))).toBe('POLICY_INVALID');
    });
  }
});
