/**
 * `cloister gateway` argument handling and its fail-closed start, against an in-process
 * simulated server with the stand-in engine behind an UpstreamEngine.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSimulatedAttester } from '../../src/attester/simulated/attester.js';
import { startFromArgs } from '../../src/cli/commands/gateway.js';
import { run as runAudit } from '../../src/cli/commands/audit.js';
import { developmentPolicy } from '../../src/client/dev-policy.js';
import { UpstreamEngine } from '../../src/inference/upstream/index.js';
import { CloisterServer } from '../../src/server/server.js';
import { startStandin } from '../fixtures/standin-engine/index.js';
import type { Standin } from '../fixtures/standin-engine/index.js';

let dir: string;
let standin: Standin;
let engine: UpstreamEngine;
let server: CloisterServer;
let url: string;
let policyFile: string;
let wrongPolicyFile: string;
let rootFile: string;
let unpinnedPolicyFile: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cloister-gw-cli-'));
  standin = await startStandin();
  engine = new UpstreamEngine({ baseUrl: standin.baseUrl, model: 'standin-model', name: 'llm', kind: 'vllm' });
  await engine.start();
  const attester = await createSimulatedAttester();
  server = new CloisterServer({ engines: [engine], attester });
  url = (await server.listen({ host: '127.0.0.1', port: 0 })).wsUrl;
  const policy = developmentPolicy({ pcrs: attester.pcrs, rootSha256Hex: attester.rootSha256Hex, models: engine.models() });
  policyFile = join(dir, 'policy.json');
  writeFileSync(policyFile, JSON.stringify(policy));
  const wrong = developmentPolicy({ pcrs: { 0: 'ab'.repeat(48), 1: 'ab'.repeat(48), 2: 'ab'.repeat(48) }, rootSha256Hex: attester.rootSha256Hex, models: engine.models() });
  wrongPolicyFile = join(dir, 'wrong.json');
  writeFileSync(wrongPolicyFile, JSON.stringify(wrong));
  const unpinned = structuredClone(policy) as { platforms: { simulated?: { rootSha256?: string } } };
  delete unpinned.platforms.simulated?.rootSha256;
  unpinnedPolicyFile = join(dir, 'unpinned.json');
  writeFileSync(unpinnedPolicyFile, JSON.stringify(unpinned));
  rootFile = join(dir, 'root.pem');
  writeFileSync(rootFile, attester.rootPem);
});

afterAll(async () => {
  await server.close();
  await engine.close();
  await standin.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('cloister gateway', () => {
  it('verifies, listens on loopback and serves the OpenAI SDK', async () => {
    const handle = await startFromArgs(['--url', url, '--policy', policyFile, '--root', rootFile, '--listen', '127.0.0.1:0', '--model', 'llm', '--api-key-env', 'GW_KEY'], { GW_KEY: 'sekrit' });
    try {
      expect(handle.gateway.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const ai = new OpenAI({ baseURL: `${handle.gateway.url}/v1`, apiKey: 'sekrit', maxRetries: 0 });
      const stream = await ai.chat.completions.create({ model: 'whatever-the-app-says', messages: [{ role: 'user', content: 'x' }], stream: true });
      let text = '';
      for await (const c of stream) text += c.choices[0]?.delta.content ?? '';
      expect(text).toBe('Hello, world! The answer is 4.');
      const models = await ai.models.list();
      expect(models.data.map((m) => m.id)).toEqual(['llm']);
      const denied = await new OpenAI({ baseURL: `${handle.gateway.url}/v1`, apiKey: 'wrong', maxRetries: 0 }).models.list().catch((e: unknown) => e);
      expect(denied).toBeInstanceOf(OpenAI.AuthenticationError);
    } finally {
      await handle.close();
    }
  });

  it('--audit-dir: a streamed chat and a plain one leave audit records; audit export + audit verify pass, a flipped byte fails', async () => {
    const auditDir = join(dir, 'audit');
    const lines: string[] = [];
    const handle = await startFromArgs(['--url', url, '--policy', policyFile, '--root', rootFile, '--listen', '127.0.0.1:0', '--model', 'llm', '--audit-dir', auditDir], {}, (l) => lines.push(l));
    try {
      const ai = new OpenAI({ baseURL: `${handle.gateway.url}/v1`, apiKey: 'unused', maxRetries: 0 });
      const stream = await ai.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }], stream: true });
      let text = '';
      for await (const c of stream) text += c.choices[0]?.delta.content ?? '';
      expect(text).toBe('Hello, world! The answer is 4.');
      const done = await ai.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'y' }] });
      expect(done.choices[0]?.message.content).toBe('Hello, world! The answer is 4.');
    } finally {
      await handle.close();
    }
    expect(lines.filter((l) => l.startsWith('audit:'))).toEqual([]);
    const files = readdirSync(auditDir).sort();
    const records = files.filter((f) => f.endsWith('.record.cbor')).map((f) => join(auditDir, f));
    const evidence = files.filter((f) => f.startsWith('evidence-')).map((f) => join(auditDir, f));
    expect([records.length, evidence.length]).toEqual([2, 1]);
    expect(statSync(auditDir).mode & 0o777).toBe(0o700);
    // One bundle per request (records under different tree heads need consistency proofs to share one).
    const io = { out: () => undefined, err: () => undefined };
    const bundles = records.map((_, i) => join(dir, `gateway-audit-${i}.bundle`));
    for (const [i, record] of records.entries()) {
      expect(await runAudit(['export', '--evidence', evidence[0] ?? '', '--record', record, '--out', bundles[i] ?? ''], io)).toBe(0);
      const out: string[] = [];
      expect(await runAudit(['verify', bundles[i] ?? '', '--root', rootFile, '--policy', policyFile], { out: (t) => out.push(t), err: (t) => out.push(t) })).toBe(0);
      expect(out.join('\n')).toContain('AUDIT VERIFIED');
      expect(out.join('\n')).toContain('which model   llm');
    }
    const bundle = bundles[0] ?? '';
    const bytes = readFileSync(bundle);
    for (const i of [0, Math.floor(bytes.byteLength / 3), Math.floor(bytes.byteLength / 2), bytes.byteLength - 40, bytes.byteLength - 1]) {
      const bad = Buffer.from(bytes);
      bad[i] = (bad[i] ?? 0) ^ 0x80;
      const path = join(dir, `gw-flip-${i}.bundle`);
      writeFileSync(path, bad);
      const code = await runAudit(['verify', path, '--root', rootFile, '--policy', policyFile], io).catch(() => 1);
      expect(code, `byte ${i}`).toBe(1);
    }
  });

  it('--api-key-file and CLOISTER_GATEWAY_API_KEY: the openai package with the key is served; no key or a wrong one is AuthenticationError', async () => {
    const keyFile = join(dir, 'gateway.key');
    writeFileSync(keyFile, 'file-key-123\n', { mode: 0o600 });
    const cases: [string[], NodeJS.ProcessEnv, string][] = [
      [['--api-key-file', keyFile], {}, 'file-key-123'],
      [[], { CLOISTER_GATEWAY_API_KEY: 'env-key-456' }, 'env-key-456'],
      // A flag wins over the environment.
      [['--api-key-file', keyFile], { CLOISTER_GATEWAY_API_KEY: 'env-key-456' }, 'file-key-123'],
    ];
    for (const [flags, env, key] of cases) {
      const handle = await startFromArgs(['--url', url, '--policy', policyFile, '--root', rootFile, '--listen', '127.0.0.1:0', '--model', 'llm', ...flags], env);
      try {
        const ai = new OpenAI({ baseURL: `${handle.gateway.url}/v1`, apiKey: key, maxRetries: 0 });
        const done = await ai.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] });
        expect(done.choices[0]?.message.content).toBe('Hello, world! The answer is 4.');
        for (const wrong of ['unused', `${key}x`]) {
          const denied = await new OpenAI({ baseURL: `${handle.gateway.url}/v1`, apiKey: wrong, maxRetries: 0 }).models.list().catch((e: unknown) => e);
          expect(denied).toBeInstanceOf(OpenAI.AuthenticationError);
          expect((denied as InstanceType<typeof OpenAI.AuthenticationError>).status).toBe(401);
        }
        // A page on another origin is refused even with the right key (the browser sends Origin).
        const page = await fetch(`${handle.gateway.url}/v1/models`, { headers: { authorization: `Bearer ${key}`, origin: 'https://evil.example' } });
        expect(page.status).toBe(403);
        expect((await fetch(`${handle.gateway.url}/v1/models`, { method: 'OPTIONS', headers: { origin: 'https://evil.example' } })).status).toBe(403);
      } finally {
        await handle.close();
      }
    }
  });

  it('--allow-origin lets one browser origin in; the openai package without a key on a keyless gateway still works', async () => {
    const handle = await startFromArgs(['--url', url, '--policy', policyFile, '--root', rootFile, '--listen', '127.0.0.1:0', '--model', 'llm', '--allow-origin', 'http://localhost:5173'], {});
    try {
      const ai = new OpenAI({ baseURL: `${handle.gateway.url}/v1`, apiKey: 'unused', maxRetries: 0 });
      expect((await ai.models.list()).data.map((m) => m.id)).toEqual(['llm']);
      const pre = await fetch(`${handle.gateway.url}/v1/chat/completions`, { method: 'OPTIONS', headers: { origin: 'http://localhost:5173', 'access-control-request-method': 'POST' } });
      expect(pre.status).toBe(204);
      expect(pre.headers.get('access-control-allow-origin')).toBe('http://localhost:5173');
      expect((await fetch(`${handle.gateway.url}/v1/models`, { headers: { origin: 'http://localhost:5174' } })).status).toBe(403);
    } finally {
      await handle.close();
    }
  });

  it('fails closed: a policy that does not match means nothing listens', async () => {
    await expect(startFromArgs(['--url', url, '--policy', wrongPolicyFile, '--root', rootFile, '--listen', '127.0.0.1:0'])).rejects.toMatchObject({ code: 'POLICY_MISMATCH' });
    // Neither a trusted simulated root nor a root pin in the policy: the evidence is not trusted at all.
    await expect(startFromArgs(['--url', url, '--policy', unpinnedPolicyFile, '--listen', '127.0.0.1:0'])).rejects.toMatchObject({ code: 'ROOT_UNTRUSTED' });
  });

  it('rejects bad arguments before contacting the server', async () => {
    await expect(startFromArgs(['--url', url])).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    await expect(startFromArgs(['--policy', policyFile])).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    await expect(startFromArgs(['--url', url, '--policy', policyFile, '--listen', '0.0.0.0:0'])).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    await expect(startFromArgs(['--url', url, '--policy', policyFile, '--api-key-env', 'NOPE_UNSET'], {})).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    await expect(startFromArgs(['--url', url, '--policy', policyFile, '--api-key-env', 'K', '--api-key-file', policyFile], { K: 'k' })).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    await expect(startFromArgs(['--url', url, '--policy', policyFile, '--api-key-file', join(dir, 'no-such.key')], {})).rejects.toMatchObject({ code: 'NOT_FOUND' });
    writeFileSync(join(dir, 'empty.key'), '\n');
    await expect(startFromArgs(['--url', url, '--policy', policyFile, '--api-key-file', join(dir, 'empty.key')], {})).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    await expect(startFromArgs(['--url', url, '--policy', policyFile], { CLOISTER_GATEWAY_API_KEY: '' })).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    // Off loopback, an API key is required.
    await expect(startFromArgs(['--url', url, '--policy', policyFile, '--listen', '0.0.0.0:0', '--allow-non-loopback'], {})).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
      message: expect.stringMatching(/API key/) as unknown,
    });
    await expect(startFromArgs(['--url', url, '--policy', join(dir, 'missing.json')])).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(startFromArgs(['--url', url, '--policy', policyFile, '--bogus'])).rejects.toThrow();
  });
});
