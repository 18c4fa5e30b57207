import { describe, expect, it } from 'vitest';
import { parseServeConfig } from '../../src/cli/commands/serve.js';
import type { ServeConfig } from '../../src/cli/commands/serve.js';
import { UsageError } from '../../src/cli/commands/args.js';

function config(argv: string[], env: Record<string, string> = {}): ServeConfig {
  const c = parseServeConfig(argv, env);
  if (c === 'help') throw new Error('help');
  return c;
}

function usageMessage(argv: string[], env: Record<string, string> = {}): string {
  try {
    parseServeConfig(argv, env);
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('no usage error');
}

describe('cloister serve configuration: flags and CLOISTER_* variables', () => {
  it('reads every option from the environment when no flag is given', () => {
    const c = config([], {
      CLOISTER_MODEL: 'a=/m/a, b=/m/b',
      CLOISTER_EMBEDDER: 'e=/m/e',
      CLOISTER_LISTEN: '127.0.0.1:9000',
      CLOISTER_PLATFORM: 'simulated',
      CLOISTER_STATE_DIR: '/var/lib/cloister',
      CLOISTER_KEY_ROTATION_MINUTES: '30',
      CLOISTER_REQUEST_TIMEOUT_S: '120',
      CLOISTER_LOG_LEVEL: 'warn',
      CLOISTER_TLS_CERT: '/etc/c.pem',
      CLOISTER_TLS_KEY: '/etc/k.pem',
      CLOISTER_DRAIN_TIMEOUT_S: '0',
      CLOISTER_PAD_RESPONSES: 'off',
    });
    expect(c.models.map((m) => [m.name, m.dir, m.task])).toEqual([['a', '/m/a', undefined], ['b', '/m/b', undefined], ['e', '/m/e', 'feature-extraction']]);
    expect(c).toMatchObject({
      target: { host: '127.0.0.1', port: 9000 }, platform: 'simulated', stateDir: '/var/lib/cloister', rotationMinutes: 30, timeoutSeconds: 120,
      level: 'warn', tls: { certPath: '/etc/c.pem', keyPath: '/etc/k.pem' }, drainTimeoutSeconds: 0, padResponses: false,
    });
  });

  it('a flag overrides its variable; an empty variable is unset', () => {
    const c = config(['--model', 'x=/m/x', '--listen', '127.0.0.1:1'], { CLOISTER_MODEL: 'y=/m/y', CLOISTER_LISTEN: 'bad', CLOISTER_LOG_LEVEL: '' });
    expect(c.models.map((m) => m.name)).toEqual(['x']);
    expect(c.target).toEqual({ host: '127.0.0.1', port: 1 });
    expect(c.level).toBe('info');
    expect(c.drainTimeoutSeconds).toBe(30);
    expect(c.padResponses).toBe(true);
    // --socket given as a flag hides CLOISTER_LISTEN (they exclude each other), and the reverse.
    expect(config(['--socket', '/run/c.sock'], { CLOISTER_MODEL: 'a=/m', CLOISTER_LISTEN: '0.0.0.0:1' }).target).toEqual({ path: '/run/c.sock' });
    expect(config(['--listen', '127.0.0.1:2'], { CLOISTER_MODEL: 'a=/m', CLOISTER_SOCKET: '/run/c.sock' }).target).toEqual({ host: '127.0.0.1', port: 2 });
  });

  it('an invalid variable names the variable; an invalid flag names the flag', () => {
    expect(usageMessage([], { CLOISTER_MODEL: 'a=/m', CLOISTER_LISTEN: 'nowhere' })).toBe('CLOISTER_LISTEN (environment) must be host:port');
    expect(usageMessage(['--listen', 'nowhere'], { CLOISTER_MODEL: 'a=/m' })).toBe('--listen must be host:port');
    expect(usageMessage([], { CLOISTER_MODEL: 'a=/m', CLOISTER_PLATFORM: 'sgx' })).toContain('CLOISTER_PLATFORM (environment) must be');
    expect(usageMessage([], { CLOISTER_MODEL: 'a=/m', CLOISTER_LOG_LEVEL: 'loud' })).toContain('CLOISTER_LOG_LEVEL (environment)');
    expect(usageMessage([], { CLOISTER_MODEL: 'a=/m', CLOISTER_KEY_ROTATION_MINUTES: '1.5' })).toContain('CLOISTER_KEY_ROTATION_MINUTES (environment)');
    expect(usageMessage([], { CLOISTER_MODEL: 'a=/m', CLOISTER_DRAIN_TIMEOUT_S: '-1' })).toContain('CLOISTER_DRAIN_TIMEOUT_S (environment)');
    expect(usageMessage([], { CLOISTER_MODEL: 'a=/m', CLOISTER_PAD_RESPONSES: 'no' })).toBe('CLOISTER_PAD_RESPONSES (environment) must be on or off');
    expect(usageMessage([], { CLOISTER_MODEL: 'a=/m', CLOISTER_TLS_CERT: '/c.pem' })).toContain('CLOISTER_TLS_CERT (environment) and --tls-key go together');
    // Upstream options come through the same path (their own parser's messages, renamed).
    expect(usageMessage([], { CLOISTER_UPSTREAM: 'http://127.0.0.1:8000/v1', CLOISTER_UPSTREAM_MODEL: 'm', CLOISTER_UPSTREAM_MAX_CONCURRENCY: 'many' }))
      .toContain('CLOISTER_UPSTREAM_MAX_CONCURRENCY (environment)');
    expect(usageMessage([], {})).toContain('give at least one --model');
  });

  it('--egress unix:PATH (or CLOISTER_EGRESS, as the enclave entrypoint sets it); anything else is a usage error', () => {
    expect(config(['--model', 'm', '--egress', 'unix:/run/cloister/egress.sock']).egress).toEqual({ path: '/run/cloister/egress.sock' });
    expect(config(['--model', 'm'], { CLOISTER_EGRESS: 'unix:/run/e.sock' }).egress).toEqual({ path: '/run/e.sock' });
    expect(config(['--model', 'm']).egress).toBeUndefined();
    expect(usageMessage(['--model', 'm', '--egress', 'vsock:3:8000'])).toContain('unix:/path');
    expect(usageMessage(['--model', 'm'], { CLOISTER_EGRESS: 'tcp:1.2.3.4:5' })).toContain('CLOISTER_EGRESS (environment)');
  });

  it('--fleet-refresh-minutes needs --fleet-key and is a positive number of minutes', () => {
    expect(config(['--model', 'm', '--key-broker', 'http://127.0.0.1:7000', '--fleet-key', 'fleet', '--fleet-refresh-minutes', '5']).fleetRefreshMinutes).toBe(5);
    expect(config(['--model', 'm', '--key-broker', 'http://127.0.0.1:7000', '--fleet-key', 'fleet']).fleetRefreshMinutes).toBeUndefined();
    expect(usageMessage(['--model', 'm', '--fleet-refresh-minutes', '5'])).toContain('--fleet-refresh-minutes needs --fleet-key');
    expect(usageMessage(['--model', 'm', '--key-broker', 'http://127.0.0.1:7000', '--fleet-key', 'fleet', '--fleet-refresh-minutes', '0'])).toContain('--fleet-refresh-minutes must be an integer from 1');
  });
});
