/**
 * `cloister audit export` / `cloister audit verify` (src/cli/commands/audit.ts): records and an
 * evidence file in, a bundle out; verify prints which TEE, model, policy, when and whether the
 * request and response are the ones given; exit 0 verified, 1 failed, 2 usage.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/commands/audit.js';
import { UsageError } from '../../src/cli/commands/args.js';
import { encodeAuditRecord } from '../../src/verifier/audit-bundle.js';
import { concatBytes } from '../../src/core/bytes.js';
import { auditFixture } from '../helpers/audit.js';
import type { AuditFixture } from '../helpers/audit.js';

function capture(): { io: { out(t: string): void; err(t: string): void }; out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (t) => out.push(t), err: (t) => err.push(t) }, out, err };
}

describe('cloister audit', () => {
  let dir: string;
  let f: AuditFixture;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cloister-audit-'));
    f = await auditFixture();
    f.add(0);
    f.add(1, { aborted: true });
    await writeFile(join(dir, 'evidence.cbor'), f.evidenceFile);
    await writeFile(join(dir, 'r0.cbor'), encodeAuditRecord(f.record(0)));
    await writeFile(join(dir, 'r1.cbor'), encodeAuditRecord(f.record(1)));
    await writeFile(join(dir, 'root.pem'), f.sim.rootPem);
    await writeFile(join(dir, 'request1'), f.requests[1]?.request as Uint8Array);
    await writeFile(join(dir, 'response1'), concatBytes(...(f.requests[1]?.response as Uint8Array[])));
    await writeFile(join(dir, 'response0'), concatBytes(...(f.requests[0]?.response as Uint8Array[])));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('exports a bundle and verifies it, printing what it proves', async () => {
    const e = capture();
    const bundle = join(dir, 'bundle.cbor');
    expect(await run(['export', '--evidence', join(dir, 'evidence.cbor'), '--record', join(dir, 'r0.cbor'), '--record', join(dir, 'r1.cbor'), '--out', bundle], e.io)).toBe(0);
    expect(e.out.join('\n')).toContain('2 receipt(s)');
    // Refuses to overwrite.
    expect(await run(['export', '--evidence', join(dir, 'evidence.cbor'), '--record', join(dir, 'r0.cbor'), '--out', bundle], capture().io).catch(() => 1)).toBe(1);

    const v = capture();
    expect(await run(['verify', bundle, '--root', join(dir, 'root.pem'), '--index', '1', '--request', join(dir, 'request1'), '--response', join(dir, 'response1')], v.io)).toBe(0);
    const text = v.out.join('\n');
    expect(text).toContain('AUDIT VERIFIED  platform simulated (SIMULATED');
    expect(text).toContain('PCR0');
    expect(text).toContain('which model   classifier');
    expect(text).toContain('which policy  retention none, engine onnx, route local');
    expect(text).toContain('aborted after chunk 2 (TIMEOUT)');
    expect(text).toContain('request       is the one given');
    expect(text).toContain('response      is the one given');
    expect(text).toMatch(/when +2026-01-15T12:00:00\.010Z/);

    const j = capture();
    expect(await run(['verify', bundle, '--root', join(dir, 'root.pem'), '--json'], j.io)).toBe(0);
    const json = JSON.parse(j.out.join('\n')) as { ok: boolean; receipts: { index: number; outcome: { status: string } }[] };
    expect(json.ok).toBe(true);
    expect(json.receipts.map((r) => [r.index, r.outcome.status])).toEqual([[0, 'complete'], [1, 'aborted']]);
  });

  it('exit 1 for a flipped byte, another response, or no simulated root', async () => {
    const bundle = join(dir, 'bundle2.cbor');
    expect(await run(['export', '--evidence', join(dir, 'evidence.cbor'), '--record', join(dir, 'r0.cbor'), '--record', join(dir, 'r1.cbor'), '--out', bundle], capture().io)).toBe(0);
    const bytes = new Uint8Array(await readFile(bundle));
    bytes[bytes.byteLength - 40] = (bytes[bytes.byteLength - 40] as number) ^ 1;
    await writeFile(join(dir, 'flipped.cbor'), bytes);
    const a = capture();
    expect(await run(['verify', join(dir, 'flipped.cbor'), '--root', join(dir, 'root.pem')], a.io)).toBe(1);
    expect(a.err.join('\n')).toContain('NOT VERIFIED');
    const b = capture();
    expect(await run(['verify', bundle, '--root', join(dir, 'root.pem'), '--index', '1', '--response', join(dir, 'response0')], b.io)).toBe(1);
    expect(b.err.join('\n')).toContain('RECEIPT_INVALID at receipt 1');
    const c = capture();
    expect(await run(['verify', bundle], c.io)).toBe(1);
    expect(c.err.join('\n')).toContain('ROOT_UNTRUSTED at evidence');
  });

  it('usage errors (exit 2 through main)', async () => {
    expect(await run([], capture().io)).toBe(2);
    await expect(run(['verify'], capture().io)).rejects.toBeInstanceOf(UsageError);
    await expect(run(['verify', 'x', '--request', 'y'], capture().io)).rejects.toBeInstanceOf(UsageError);
    await expect(run(['export', '--out', 'x'], capture().io)).rejects.toBeInstanceOf(UsageError);
    await expect(run(['frobnicate'], capture().io)).rejects.toBeInstanceOf(UsageError);
  });
});
