import { describe, expect, it } from 'vitest';
import { detectIdentifiers, redactFindings } from '../../src/guard/rules.js';
import { GuardTally, stricter } from '../../src/guard/policy.js';
import { codeOf } from '../helpers/errors.js';

const types = (text: string): string[] => detectIdentifiers(text).map((f) => f.type);
const redact = (text: string): string => redactFindings(text, detectIdentifiers(text));

describe('identifier rules', () => {
  it.each([
    ['SSN 123-45-6789 on file', 'SSN [SSN] on file'],
    ['ssn: 123456789.', 'ssn: [SSN].'],
    ['MRN: 00482913 admitted', 'MRN: [MRN] admitted'],
    ['call (555) 123-4567 or 555.123.4567', 'call [PHONE] or [PHONE]'],
    ['mail jane.doe@example.org today', 'mail [EMAIL] today'],
    ['DOB 03/14/1962, seen 2024-01-05 and on March 3, 2021', 'DOB [DATE], seen [DATE] and on [DATE]'],
    ['lives at 42 Elm Street near', 'lives at [ADDRESS] near'],
    ['card 4111 1111 1111 1111 ok', 'card [CARD] ok'],
    ['from 10.0.12.7 via', 'from [IP] via'],
  ])('%s', (text, expected) => {
    expect(redact(text)).toBe(expected);
  });

  it('validates where a checksum or a range exists', () => {
    expect(types('000-12-3456 666-12-3456 900-12-3456 123-00-4567 123-45-0000')).toEqual([]);
    expect(types('card 4111 1111 1111 1112')).not.toContain('CARD');
    expect(types('13/45/2020')).toEqual([]);
    expect(types('BNP is 450 and LDL 130 mg/dL, 45 yo')).toEqual([]);
  });

  it('reports non-overlapping findings in order', () => {
    const f = detectIdentifiers('SSN 123-45-6789 and 123-45-6789');
    expect(f.map((x) => [x.type, x.start])).toEqual([['SSN', 4], ['SSN', 20]]);
  });
});

describe('policy', () => {
  it('allow counts and passes, redact replaces, block throws OUTPUT_BLOCKED with types and counts only', () => {
    const text = 'SSN 123-45-6789';
    const allow = new GuardTally('allow');
    expect(allow.apply(text, detectIdentifiers(text))).toBe(text);
    expect(allow.report()).toEqual({ policy: 'allow', action: 'flagged', found: { SSN: 1 } });
    const red = new GuardTally('redact');
    expect(red.apply(text, detectIdentifiers(text))).toBe('SSN [SSN]');
    const block = new GuardTally('block');
    expect(codeOf(() => block.apply(text, detectIdentifiers(text)))).toBe('OUTPUT_BLOCKED');
    expect(block.report().action).toBe('blocked');
    expect(() => new GuardTally('block').apply(text, detectIdentifiers(text))).toThrow(/SSN x1/);
  });

  it('a policy only tightens', () => {
    expect(stricter('redact', 'allow')).toBe('redact');
    expect(stricter('redact', 'block')).toBe('block');
    const t = new GuardTally('block');
    t.tighten('allow');
    expect(t.policy).toBe('block');
  });
});
