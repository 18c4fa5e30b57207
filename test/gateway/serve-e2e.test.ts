/**
 * The whole chain through the command line: stand-in engine <- `cloister serve --upstream`
 * (simulated platform) <- `cloister gateway` <- the real `openai` package. Both commands run
 * in this process (their `run` / `startFromArgs`), as the other CLI tests do.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startFromArgs } from '../../src/cli/commands/gateway.js';
import { run as serve } from '../../src/cli/commands/serve.js';
import { startStandin } from '../fixtures/standin-engine/index.js';
import type { Standin } from '../fixtures/standin-engine/index.js';
import { until } from '../helpers/until.js';

let dir: string;
let standin: Standin;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cloister-serve-upstream-'));
  standin = await startStandin();
});

afterAll(async () => {
  await standin.close();
  rmSync(dir, { recursive: true, force: true });
});

async function startServe(extra: string[]): Promise<{ exit: Promise<number>; wsUrl: string | undefined; lines: string[] }> {
  const lines: string[] = [];
  const spy = vi.spyOn(console, 'log').mockImplementation((s: unknown) => void lines.push(String(s)));
  const exit = serve(['--upstream', standin.baseUrl, '--upstream-model', 'standin-model', '--listen', '127.0.0.1:0', '--platform', 'simulated', '--state-dir', dir, '--log-level', 'error', '--guard-policy', 'allow', ...extra]);
  let failed = false;
  exit.catch(() => {
    failed = true;
  });
  try {
    await until(() => failed || lines.some((l) => /websocket:/.test(l)), 500, 10, 'the websocket: line or a failed start');
  } finally {
    spy.mockRestore();
  }
  const wsUrl = /websocket:\s+(\S+)/.exec(lines.join('\n'))?.[1];
  return { exit, wsUrl, lines };
}

describe('cloister serve --upstream, through cloister gateway, with the openai package', () => {
  it('streams a chat completion and answers embeddings end to end', async () => {
    const { exit, wsUrl, lines } = await startServe([
      '--upstream-name', 'llm',
      '--upstream-kind', 'vllm',
      '--canary-prompt', 'What is 2+2?',
      '--canary-expect', '/answer is 4/i',
      '--canary-embeddings', 'the patient has a fever|the patient had a fever|quarterly revenue grew|0.5',
    ]);
    expect(wsUrl).toBeDefined();
    expect(lines.join('\n')).toContain('llm (text-generation)');
    const handle = await startFromArgs(['--url', wsUrl ?? '', '--policy', join(dir, 'policy.json'), '--root', join(dir, 'simulated-root.pem'), '--listen', '127.0.0.1:0']);
    try {
      expect(handle.client.keyConfig.engine).toEqual({ kind: 'vllm', model: 'standin-model' });
      const ai = new OpenAI({ baseURL: `${handle.gateway.url}/v1`, apiKey: 'unused', maxRetries: 0 });
      const stream = await ai.chat.completions.create({ model: 'llm', messages: [{ role: 'user', content: 'What is 2+2?' }], stream: true });
      const tokens: string[] = [];
      let finish: string | null = null;
      for await (const chunk of stream) {
        tokens.push(chunk.choices[0]?.delta.content ?? '');
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
      expect(tokens).toEqual(['Hello', ',', ' world', '!', ' The', ' answer', ' is', ' 4', '.', '']);
      expect(finish).toBe('stop');

      const emb = await ai.embeddings.create({ model: 'llm', input: ['chest pain', 'chest pains', 'tax return'] });
      expect(emb.data.map((d) => d.index)).toEqual([0, 1, 2]);
      const [a, b, c] = emb.data.map((d) => d.embedding);
      const dot = (x: number[] | undefined, y: number[] | undefined): number => (x ?? []).reduce((s, v, i) => s + v * (y?.[i] ?? 0), 0);
      expect(dot(a, b)).toBeGreaterThan(dot(a, c));
    } finally {
      await handle.close();
      process.emit('SIGTERM');
      expect(await exit).toBe(0);
    }
  });

  it('refuses to start when the canary answer is wrong', async () => {
    standin.reset({ answer: 'garbage garbage' });
    try {
      const { exit } = await startServe(['--canary-prompt', 'What is 2+2?', '--canary-expect', 'answer is 4']);
      await expect(exit).rejects.toMatchObject({ code: 'ENGINE_UNAVAILABLE' });
    } finally {
      standin.reset();
    }
  });

  it('rejects upstream flags without --upstream-model (a usage error: exit 2)', async () => {
    await expect(serve(['--upstream', standin.baseUrl, '--listen', '127.0.0.1:0'])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', name: 'UsageError' });
    await expect(serve(['--canary-prompt', 'x', '--listen', '127.0.0.1:0'])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', name: 'UsageError' });
  });
});
