/**
 * The SDK can save the evidence it verified (client.evidenceFile()) in the format that
 * `cloister verify` reads: an application keeps what it trusted, an auditor re-checks it.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import { decodeEvidenceFile } from '../../src/verifier/evidence-file.js';
import { run } from '../../src/cli/commands/verify.js';
import { startTestServer } from '../e2e/helpers.js';
import type { TestServer } from '../e2e/helpers.js';

describe('client.evidenceFile()', () => {
  let t: TestServer;
  const work = mkdtempSync(path.join(tmpdir(), 'cloister-sdk-evfile-'));
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(async () => {
    await t.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('saves the verified evidence with its nonce; cloister verify accepts it and checks the same key config', async () => {
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
    try {
      const file = c.evidenceFile();
      const saved = decodeEvidenceFile(file);
      expect(saved.bundle.platform).toBe('simulated');
      expect(saved.nonce?.byteLength).toBe(32); // the client's fresh random nonce
      const evPath = path.join(work, 'ev.cbor');
      const rootPath = path.join(work, 'root.pem');
      writeFileSync(evPath, file);
      writeFileSync(rootPath, t.trustedRoots.simulated[0] ?? '');
      const out: string[] = [];
      // No policy file here: --inspect checks the evidence and its binding, and says the policy was not.
      const code = await run([evPath, '--root', rootPath, '--json', '--inspect'], { out: (s) => out.push(s), err: () => undefined });
      expect(code).toBe(0);
      const j = JSON.parse(out.join('\n')) as { checksPassed: boolean; notChecked: string[]; keyConfig: { keyId: number; hpkePublicKey: string } };
      expect(j.checksPassed).toBe(true);
      expect(j.notChecked).toEqual([expect.stringMatching(/^policy: /)]);
      expect(j.keyConfig.keyId).toBe(c.keyConfig.keyId);
      expect(j.keyConfig.hpkePublicKey).toBe(Buffer.from(c.keyConfig.hpkePublicKey).toString('hex'));
    } finally {
      await c.close();
    }
  });
});
