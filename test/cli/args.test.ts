/** The commands' parser (src/cli/commands/args.ts): node:util parseArgs with our rules on top. */
import { describe, expect, it } from 'vitest';
import { one, parseArgs, UsageError, withEnv } from '../../src/cli/commands/args.js';

const SPEC = { values: ['url', 'model', 'state-dir'], multi: ['model'], flags: ['json'] };

function usageMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('expected a UsageError');
}

describe('parseArgs', () => {
  it('reads --name value, --name=value, repeated multi options, flags and -h', () => {
    const a = parseArgs(['--url', 'ws://x', '--model=a', '--model', 'b', '--json', '-h'], SPEC);
    expect(one(a, 'url')).toBe('ws://x');
    expect(a.values.get('model')).toEqual(['a', 'b']);
    expect([...a.flags].sort()).toEqual(['help', 'json']);
    expect(parseArgs([], SPEC).values.size).toBe(0);
  });

  it('refuses unknown options, positionals, a missing value, a value on a flag, a single option twice', () => {
    expect(usageMessage(() => parseArgs(['--nope', '1'], SPEC))).toMatch(/unknown option '--nope'/i);
    expect(usageMessage(() => parseArgs(['stray'], SPEC))).toMatch(/stray/);
    expect(usageMessage(() => parseArgs(['--url'], SPEC))).toMatch(/--url/);
    expect(usageMessage(() => parseArgs(['--json=yes'], SPEC))).toMatch(/--json/);
    expect(usageMessage(() => parseArgs(['--url', 'a', '--url=b'], SPEC))).toBe('--url given twice');
  });

  it('withEnv: CLOISTER_<NAME> fills options not given, flags win, multi splits on commas, empty is unset', () => {
    const env = { CLOISTER_URL: 'ws://env', CLOISTER_MODEL: 'a, b,', CLOISTER_STATE_DIR: '' };
    const merged = withEnv(parseArgs([], SPEC), SPEC, env);
    expect(one(merged, 'url')).toBe('ws://env');
    expect(merged.values.get('model')).toEqual(['a', 'b']);
    expect(merged.values.has('state-dir')).toBe(false);
    expect(merged.label('bad --url')).toBe('bad CLOISTER_URL (environment)');
    expect(one(withEnv(parseArgs(['--url', 'ws://flag'], SPEC), SPEC, env), 'url')).toBe('ws://flag');
  });
});
