/**
 * `cloister gateway --url ws://...` heals (issue 11, section 1): past the server's idle
 * timeout and across a server restart the next request works, a server that comes back with a
 * different measurement is refused, and every reconnect is logged without content (codes,
 * counts, timing, key id, measurement summary). `--model nosuch` refuses to start.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFromArgs } from '../../src/cli/commands/gateway.js';
import type { GatewayHandle } from '../../src/cli/commands/gateway.js';
import { CloisterServer } from '../../src/server/server.js';
import type { ModelInfo } from '../../src/inference/types.js';
import { codeOfAsync } from '../helpers/errors.js';
import { FakeEngine } from '../helpers/engines.js';
import { startTestServer } from '../helpers/test-server.js';
import { until } from '../helpers/until.js';
import type { TestServer } from '../helpers/test-server.js';

let dir: string;
const open: { close(): Promise<void> }[] = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'cloister-gw-reconnect-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close().catch(() => undefined);
});

async function setup(idleTimeoutMs = 60_000): Promise<{ t: TestServer; handle: GatewayHandle; log: string[]; ai: OpenAI }> {
  const t = await startTestServer({ limits: { idleTimeoutMs } });
  open.push(t);
  const policyFile = join(dir, `policy-${t.urls.port ?? 0}.json`);
  writeFileSync(policyFile, JSON.stringify(t.policyJson));
  const rootFile = join(dir, `root-${t.urls.port ?? 0}.pem`);
  writeFileSync(rootFile, t.attester.rootPem);
  const log: string[] = [];
  const handle = await startFromArgs(
    ['--url', t.wsUrl, '--policy', policyFile, '--root', rootFile, '--listen', '127.0.0.1:0', '--reconnect-attempts', '3'],
    {},
    (line) => log.push(line),
  );
  open.push(handle);
  const ai = new OpenAI({ baseURL: `${handle.gateway.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  return { t, handle, log, ai };
}

/** A sealed request through the gateway: /v1/embeddings on the fake feature-extraction model (sealed op `embed`). */
async function embed(ai: OpenAI, text: string): Promise<number> {
  const r = await ai.embeddings.create({ model: 'fake-emb', input: text, encoding_format: 'float' });
  return r.data.length;
}

class ChangedEngine extends FakeEngine {
  override models(): readonly ModelInfo[] {
    return super.models().map((m) => ({ ...m, digest: new Uint8Array(32).fill(0xee) }));
  }
}

async function restart(t: TestServer, engine: FakeEngine = t.engine): Promise<CloisterServer> {
  await t.server.close();
  const s = new CloisterServer({ engines: [engine], attester: t.attester });
  await s.listen({ host: '127.0.0.1', port: t.urls.port ?? 0 });
  open.push(s);
  return s;
}

describe('cloister gateway over ws:// heals', () => {
  it('past the server idle timeout the next request works, and the reconnect is logged without content', async () => {
    const { ai, log } = await setup(200);
    expect(await embed(ai, 'first secret note')).toBe(1);
    await until(() => log.some((l) => l.includes('lost')));
    expect(await embed(ai, 'second secret note')).toBe(1);
    const re = log.find((l) => l.startsWith('reconnected'));
    expect(re).toMatch(/after 1 attempt\(s\) in \d+ ms; fresh evidence verified against the policy: simulated, key id \d+ \(same key\), PCR0=[0-9a-f]{16}/);
    expect(log.join('\n')).not.toMatch(/secret/);
  });

  it('a restarted server (new key) serves the next request', async () => {
    const { t, ai, log } = await setup();
    expect(await embed(ai, 'before')).toBe(1);
    const s2 = await restart(t);
    await until(() => log.some((l) => l.includes('lost')));
    expect(await embed(ai, 'after')).toBe(1);
    expect(s2.stats.requestsCompleted).toBe(1);
    expect(log.find((l) => l.startsWith('reconnected'))).toContain('(new key)');
  });

  it('a server that comes back with a different measurement is refused: 502 POLICY_MISMATCH, nothing sent, logged', async () => {
    const { t, ai, log } = await setup();
    expect(await embed(ai, 'before')).toBe(1);
    const s2 = await restart(t, new ChangedEngine());
    await until(() => log.some((l) => l.includes('lost')));
    let status = 0;
    let code = '';
    await embed(ai, 'after').catch((e: unknown) => {
      if (e instanceof OpenAI.APIError) {
        status = e.status ?? 0;
        code = String(e.code);
      }
    });
    expect(code).toBe('POLICY_MISMATCH');
    expect(status).toBe(502);
    expect(s2.stats.sealedRequestsReceived).toBe(0);
    expect(log.find((l) => l.startsWith('reconnect to'))).toMatch(/refused after 1 attempt\(s\): POLICY_MISMATCH: .*nothing was sent/);
  });
});

describe('cloister gateway --model', () => {
  it('refuses to start when the verified server does not serve the model, naming what it serves', async () => {
    const t = await startTestServer();
    open.push(t);
    const policyFile = join(dir, 'policy-model.json');
    writeFileSync(policyFile, JSON.stringify(t.policyJson));
    const rootFile = join(dir, 'root-model.pem');
    writeFileSync(rootFile, t.attester.rootPem);
    let err: unknown;
    await startFromArgs(['--url', t.wsUrl, '--policy', policyFile, '--root', rootFile, '--listen', '127.0.0.1:0', '--model', 'nosuch'], {}, () => undefined).catch(
      (e: unknown) => {
        err = e;
      },
    );
    expect(err).toMatchObject({ code: 'UNKNOWN_MODEL' });
    expect((err as Error).message).toContain('fake-cls (text-classification)');
    // A served model starts.
    const ok = await startFromArgs(['--url', t.wsUrl, '--policy', policyFile, '--root', rootFile, '--listen', '127.0.0.1:0', '--model', 'fake-emb'], {}, () => undefined);
    open.push(ok);
    expect(await codeOfAsync(ok.close())).toBe('no-throw');
  });
});
