import { describe, expect, it } from 'vitest';
import { describeJsonError, findJsonSyntaxError } from '../../src/core/json-error.js';
import { parsePolicy } from '../../src/verifier/policy.js';

describe('JSON syntax error positions', () => {
  it('finds nothing wrong in valid JSON (agreeing with JSON.parse)', () => {
    for (const t of ['{}', '[]', '1', '-0.5e3', '"a\\u00e9\\n"', ' {"a": [1, true, false, null, {"b": "c"}]} ', '[[[]]]']) {
      expect(() => JSON.parse(t)).not.toThrow();
      expect(findJsonSyntaxError(t)).toBeUndefined();
    }
  });

  it.each([
    ['{"a": }', 1, 7, 'expected a value'],
    ['{"a": 1,}', 1, 9, 'expected a double-quoted property name'],
    ['{"a" 1}', 1, 6, "expected ':' after a property name"],
    ['{"a": 1', 1, 8, "unexpected end of input, expected ',' or '}'"],
    ['', 1, 1, 'unexpected end of input, expected a value'],
    ['{\n  "a": tru\n}', 2, 8, "expected 'true'"],
    ['"\\u12"', 1, 2, 'bad \\u escape'],
    ["{'a':1}", 1, 2, 'expected a double-quoted property name'],
    ['{"a":1} x', 1, 9, 'unexpected text after the JSON value'],
    ['[1 2]', 1, 4, "expected ',' or ']' after an array element"],
    ['"\\x"', 1, 2, 'bad escape'],
    ['01', 1, 2, 'unexpected text after the JSON value'],
  ])('%j: line %i, column %i', (text, line, column, reason) => {
    expect(() => JSON.parse(text)).toThrow();
    expect(findJsonSyntaxError(text)).toMatchObject({ line, column, reason });
  });

  it('never quotes the text in its description', () => {
    const secret = '{"password": "hunter2" oops}';
    expect(describeJsonError(secret)).not.toContain('hunter2');
  });

  it('parsePolicy names the source file and the position', () => {
    expect(() => parsePolicy('{"version": 1,\n "platforms": }', { source: '/etc/cloister/policy.json' }))
      .toThrow("policy '/etc/cloister/policy.json': invalid JSON at line 2, column 15 (offset 29): expected a value");
  });
});
