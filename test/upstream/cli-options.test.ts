import { describe, expect, it } from 'vitest';
import { parseExpectation, upstreamFromArgs } from '../../src/inference/upstream/index.js';
import type { UPSTREAM_SERVE_FLAGS } from '../../src/inference/upstream/index.js';

type Flag = (typeof UPSTREAM_SERVE_FLAGS)[number];
const from = (values: Partial<Record<Flag, string>>): ReturnType<typeof upstreamFromArgs> => upstreamFromArgs((name) => values[name]);

describe('upstream serve flags', () => {
  it('builds nothing without --upstream, and refuses its companion flags alone', () => {
    expect(from({})).toBeUndefined();
    expect(() => from({ 'canary-prompt': 'x', 'canary-expect': 'y' })).toThrow(/needs --upstream/);
  });

  it('builds an engine with identity and name', () => {
    const e = from({ upstream: 'http://127.0.0.1:8000/v1', 'upstream-model': 'm', 'upstream-name': 'llm', 'upstream-kind': 'sglang', 'upstream-image-digest': 'sha256:ab' });
    expect(e?.identity()).toEqual({ kind: 'sglang', model: 'm', imageDigest: 'sha256:ab' });
    expect(e?.models()[0]?.name).toBe('llm');
  });

  it('rejects bad values', () => {
    const base = { upstream: 'http://127.0.0.1:8000/v1', 'upstream-model': 'm' };
    expect(() => from({ upstream: base.upstream })).toThrow(/--upstream-model/);
    expect(() => from({ ...base, 'upstream-kind': 'llamacpp' })).toThrow(/upstream-kind/);
    expect(() => from({ ...base, 'canary-prompt': 'x' })).toThrow(/go together/);
    expect(() => from({ ...base, 'upstream-ready-timeout-s': '-1' })).toThrow(/non-negative/);
    expect(() => from({ ...base, 'canary-embeddings': 'a|b|c' })).toThrow(/canary-embeddings/);
    expect(() => from({ ...base, 'canary-embeddings': 'a|b|c|x' })).toThrow(/canary-embeddings/);
    expect(() => from({ ...base, 'canary-expect': '/[/', 'canary-prompt': 'p' })).toThrow(/regular expression/);
    expect(() => from({ ...base, upstream: 'http://192.168.1.10:8000/v1' })).toThrow(/loopback/);
  });

  it('reads /re/flags as a regular expression and anything else as a substring', () => {
    expect(parseExpectation('/paris/i')).toEqual(/paris/i);
    expect(parseExpectation('Paris')).toBe('Paris');
    expect(parseExpectation('/')).toBe('/');
  });
});
