/**
 * TEST-ONLY fake of the kernel's configfs-tsm report tree, on a real temp directory:
 * - mkdir of an entry creates provider / generation / inblob / outblob (/ auxblob) files;
 * - a write to inblob that is not exactly 64 bytes fails (EINVAL), a good one bumps generation;
 * - reading outblob produces evidence for the current inblob (a structurally valid SEV-SNP
 *   report signed by a throwaway P-384 key, or a caller-supplied TDX quote builder);
 * - rmdir removes the entry with its attribute files, as configfs does.
 * Hooks let a test play a concurrent writer.
 */
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { NODE_TSM_FS, type TsmFileSystem } from '../../../src/attester/tsm/configfs.js';

export interface FakeOptions {
  readonly provider: 'sev_guest' | 'tdx_guest';
  /** Build the outblob for a 64-byte inblob. */
  readonly outblob: (inblob: Uint8Array) => Uint8Array;
  readonly auxblob?: Uint8Array;
  /** Called after a successful inblob write; may bump generation to play a concurrent writer. */
  readonly afterInblobWrite?: (bump: () => Promise<void>) => Promise<void>;
  /** Called while outblob is read. */
  readonly duringOutblobRead?: (bump: () => Promise<void>) => Promise<void>;
}

export class FakeConfigfs implements TsmFileSystem {
  readonly created: string[] = [];
  readonly removed: string[] = [];
  inblobWrites = 0;
  constructor(
    readonly root: string,
    readonly options: FakeOptions,
  ) {}

  async mkdir(path: string): Promise<void> {
    await mkdir(path);
    this.created.push(path);
    await writeFile(join(path, 'provider'), `${this.options.provider}\n`);
    await writeFile(join(path, 'generation'), '0\n');
    await writeFile(join(path, 'inblob'), new Uint8Array(0));
    await writeFile(join(path, 'outblob'), new Uint8Array(0));
    if (this.options.auxblob !== undefined) await writeFile(join(path, 'auxblob'), new Uint8Array(0));
  }

  async rmdir(path: string): Promise<void> {
    this.removed.push(path);
    await rm(path, { recursive: true });
  }

  async #bump(dir: string): Promise<void> {
    const g = Number((await readFile(join(dir, 'generation'), 'utf8')).trim());
    await writeFile(join(dir, 'generation'), `${g + 1}\n`);
  }

  async writeFile(path: string, data: Uint8Array): Promise<void> {
    const name = basename(path);
    const dir = dirname(path);
    if (name !== 'inblob') throw Object.assign(new Error('EACCES: read-only attribute'), { code: 'EACCES' });
    if (data.byteLength !== 64) throw Object.assign(new Error('EINVAL: inblob must be 64 bytes'), { code: 'EINVAL' });
    this.inblobWrites++;
    await writeFile(path, data);
    await this.#bump(dir);
    await this.options.afterInblobWrite?.(() => this.#bump(dir));
  }

  async readFile(path: string, maxBytes: number): Promise<Uint8Array> {
    const name = basename(path);
    const dir = dirname(path);
    if (name === 'outblob') {
      const inblob = new Uint8Array(await readFile(join(dir, 'inblob')));
      if (inblob.byteLength !== 64) throw Object.assign(new Error('EINVAL: no inblob'), { code: 'EINVAL' });
      await writeFile(path, this.options.outblob(inblob));
      await this.options.duringOutblobRead?.(() => this.#bump(dir));
    } else if (name === 'auxblob' && this.options.auxblob !== undefined) {
      await writeFile(path, this.options.auxblob);
    }
    return NODE_TSM_FS.readFile(path, maxBytes);
  }

  async exists(path: string): Promise<boolean> {
    try {
      await stat(path);
      return true;
    } catch {
      return false;
    }
  }
}

/** A throwaway P-384 key standing in for a VCEK. */
export function testSigningKey(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'P-384' });
}

/** A structurally valid v2 SEV-SNP report for `reportData`, signed by `key`. */
export function fakeSnpReport(reportData: Uint8Array, key: KeyObject, fields: { measurement?: Uint8Array; policy?: bigint } = {}): Uint8Array {
  const r = new Uint8Array(0x4a0);
  const dv = new DataView(r.buffer);
  dv.setUint32(0x00, 2, true);
  dv.setBigUint64(0x08, fields.policy ?? 0x30000n, true);
  dv.setUint32(0x34, 1, true);
  r.set(reportData, 0x50);
  r.set(fields.measurement ?? new Uint8Array(48).fill(0x5a), 0x90);
  r.set([3, 0, 0, 0, 0, 0, 8, 115], 0x180);
  r.set(new Uint8Array(64).fill(0xc1), 0x1a0);
  const sig = sign('sha384', r.subarray(0, 0x2a0), { key, dsaEncoding: 'ieee-p1363' });
  for (let i = 0; i < 48; i++) {
    r[0x2a0 + i] = sig[47 - i] ?? 0;
    r[0x2e8 + i] = sig[95 - i] ?? 0;
  }
  return r;
}

/** A structurally valid TDX v4 quote carrying `reportData` (unsigned: the attester only parses). */
export function fakeTdxQuote(reportData: Uint8Array, fields: { mrTd?: Uint8Array } = {}): Uint8Array {
  const header = new Uint8Array(48);
  const hv = new DataView(header.buffer);
  hv.setUint16(0, 4, true);
  hv.setUint16(2, 2, true);
  hv.setUint32(4, 0x81, true);
  header.set(Buffer.from('939a7233f79c4ca9940a0db3957f0607', 'hex'), 12);
  const body = new Uint8Array(584);
  if (fields.mrTd !== undefined) body.set(fields.mrTd, 136); // MRTD: offset 136 of the TD quote body
  body.set(reportData, 584 - 64);
  const certBody = new TextEncoder().encode('-----BEGIN CERTIFICATE-----\n');
  const inner = new Uint8Array(384 + 64 + 2 + 2 + 4 + certBody.byteLength);
  const iv = new DataView(inner.buffer);
  iv.setUint16(384 + 64, 0, true);
  iv.setUint16(384 + 64 + 2, 5, true);
  iv.setUint32(384 + 64 + 4, certBody.byteLength, true);
  inner.set(certBody, 384 + 64 + 8);
  const sig = new Uint8Array(128 + 6 + inner.byteLength);
  const sv = new DataView(sig.buffer);
  sv.setUint16(128, 6, true);
  sv.setUint32(130, inner.byteLength, true);
  sig.set(inner, 134);
  const out = new Uint8Array(48 + 584 + 4 + sig.byteLength);
  out.set(header, 0);
  out.set(body, 48);
  new DataView(out.buffer).setUint32(48 + 584, sig.byteLength, true);
  out.set(sig, 48 + 584 + 4);
  return out;
}
