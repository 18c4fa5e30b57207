/**
 * The client's audit directory (src/client/audit-dir.ts): records and the evidence of their
 * key generation, never overwritten, private modes; the background writer keeps order and
 * drops (and logs) records beyond MAX_PENDING_AUDIT_WRITES instead of holding answers up.
 */
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditDirectory, AuditWriter, MAX_PENDING_AUDIT_WRITES } from '../../src/client/audit-dir.js';
import { decodeAuditRecord } from '../../src/verifier/audit-bundle.js';
import { auditFixture } from '../helpers/audit.js';
import type { AuditFixture } from '../helpers/audit.js';
import { codeOfAsync } from '../helpers/errors.js';

describe('audit directory', () => {
  let dir: string;
  let f: AuditFixture;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cloister-audit-dir-'));
    f = await auditFixture();
    for (let i = 0; i < 4; i++) f.add(i);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes each record and its generation evidence once, 0600 in a 0700 directory', async () => {
    const d = await AuditDirectory.open(join(dir, 'a'));
    const first = await d.write(f.record(0), f.evidenceFile);
    const second = await d.write(f.record(1), f.evidenceFile);
    expect(second.evidence).toBe(first.evidence);
    expect(second.record).not.toBe(first.record);
    expect(decodeAuditRecord(await readFile(first.record)).index).toBe(0);
    expect(Buffer.from(await readFile(first.evidence)).equals(Buffer.from(f.evidenceFile))).toBe(true);
    expect((await stat(join(dir, 'a'))).mode & 0o777).toBe(0o700);
    expect((await stat(first.record)).mode & 0o777).toBe(0o600);
    expect((await readdir(join(dir, 'a'))).length).toBe(3);
  });

  it('refuses a record without its inclusion proof', async () => {
    const d = await AuditDirectory.open(join(dir, 'b'));
    const { proof: _p, ...bare } = f.record(0);
    void _p;
    expect(await codeOfAsync(d.write(bare, f.evidenceFile))).toBe('RECEIPT_INVALID');
  });

  it('the writer drops records beyond maxPending and says so; the accepted ones are written in order', async () => {
    expect(MAX_PENDING_AUDIT_WRITES).toBe(256);
    const lines: string[] = [];
    const w = new AuditWriter(await AuditDirectory.open(join(dir, 'c')), (l) => lines.push(l), 2);
    for (let i = 0; i < 4; i++) w.add(f.record(i), f.evidenceFile);
    await w.idle();
    const records = (await readdir(join(dir, 'c'))).filter((n) => n.endsWith('.record.cbor')).sort((a, b) => Number(/-(\d+)\.record/.exec(a)?.[1]) - Number(/-(\d+)\.record/.exec(b)?.[1]));
    expect(records).toHaveLength(2);
    expect(await Promise.all(records.map(async (n) => decodeAuditRecord(await readFile(join(dir, 'c', n))).index))).toEqual([0, 1]);
    expect(lines).toEqual([
      'audit: record dropped: 2 writes pending (MAX_PENDING_AUDIT_WRITES); 1 dropped so far',
      'audit: record dropped: 2 writes pending (MAX_PENDING_AUDIT_WRITES); 2 dropped so far',
    ]);
    expect(() => new AuditWriter({} as AuditDirectory, () => undefined, 0)).toThrow(/positive integer/);
  });
});
