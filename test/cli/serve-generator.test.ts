/** `cloister serve --generator` and its options (issue 12). */
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/cli/commands/args.js';
import { parseServeConfig } from '../../src/cli/commands/serve.js';

function usageMessage(argv: string[], env: Record<string, string> = {}): string {
  try {
    parseServeConfig(argv, env);
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('no usage error');
}

describe('cloister serve --generator', () => {
  it('a generator alone is enough to serve; its options reach the engine', () => {
    const c = parseServeConfig(['--generator', 'demo-lm=/m/lm', '--generator-dtype', 'q8', '--max-generations', '2', '--max-generation-queue', '3', '--max-kv-tokens', '1024', '--max-new-tokens', '256'], {});
    if (c === 'help') throw new Error('help');
    expect(c.models).toEqual([]);
    expect(c.generation).toEqual({
      models: [{ name: 'demo-lm', dir: '/m/lm', dtype: 'q8' }],
      maxActiveGenerations: 2,
      maxQueueDepth: 3,
      maxKvTokens: 1024,
      maxNewTokens: 256,
    });
  });

  it('reads CLOISTER_GENERATOR', () => {
    const c = parseServeConfig([], { CLOISTER_GENERATOR: 'a=/m/a,b=/m/b' });
    if (c === 'help') throw new Error('help');
    expect(c.generation?.models.map((m) => m.name)).toEqual(['a', 'b']);
    expect(c.generation?.models[0]?.dtype).toBe('fp32');
  });

  it('refuses a bad dtype, a bad limit, and generation options without --generator', () => {
    expect(usageMessage(['--generator', '/m/lm', '--generator-dtype', 'fp16'])).toContain('--generator-dtype');
    expect(usageMessage(['--generator', '/m/lm', '--max-kv-tokens', '0'])).toContain('--max-kv-tokens');
    expect(usageMessage(['--model', '/m/c', '--max-kv-tokens', '10'])).toContain('needs --generator');
  });
});
