/**
 * The evidence file (src/verifier/evidence-file.ts) through `cloister verify FILE`: the
 * round trip passes, the binding to the key config inside is checked, and a flipped byte in any
 * region of the file (CBOR structure, platform, evidence, certificates inside it, signature,
 * key config, nonce) fails with exit 1. Real SEV-SNP and TDX evidence in the same format runs
 * the full vendor pipeline with the certificates / collateral taken from the file.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/commands/verify.js';
import { createSimulatedAttester } from '../../src/attester/simulated/attester.js';
import type { SimulatedAttester } from '../../src/attester/simulated/attester.js';
import { decodeEvidenceFile, encodeEvidenceFile, looksLikeEvidenceFile } from '../../src/verifier/evidence-file.js';
import { decodeCoseSign1 } from '../../src/verifier/nitro/cose.js';
import { parseNitroDocument } from '../../src/verifier/nitro/document.js';
import { encodeKeyConfig } from '../../src/protocol/key-config.js';
import type { KeyConfig } from '../../src/protocol/key-config.js';
import { encodeWireMessage } from '../../src/protocol/wire.js';
import type { EvidenceBundle, Platform } from '../../src/core/types.js';
import { describeWithVectors, readVector, readVectorJson } from '../helpers/vectors.js';

const T0 = Date.UTC(2026, 0, 15, 12, 0, 0);
const AT = new Date(T0 + 1000).toISOString();
const work = mkdtempSync(path.join(tmpdir(), 'cloister-evfile-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function keyConfig(platform: Platform, overrides: Partial<KeyConfig> = {}): Uint8Array {
  return encodeKeyConfig({
    version: 1,
    keyId: 9,
    kemId: 0x20,
    kdfId: 1,
    aeadIds: [1, 3],
    hpkePublicKey: new Uint8Array(32).fill(0x11),
    receiptPublicKey: new Uint8Array(32).fill(0x22),
    models: [{ name: 'classifier', task: 'text-classification', digest: new Uint8Array(createHash('sha256').update('m').digest()) }],
    configDigest: new Uint8Array(32).fill(0x33),
    platform,
    notBefore: Math.floor(T0 / 1000) - 60,
    expiresAt: Math.floor(T0 / 1000) + 3600,
    ...overrides,
  });
}

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await run(argv, { out: (t) => out.push(t), err: (t) => err.push(t) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

let n = 0;
function writeTemp(bytes: Uint8Array | string): string {
  const p = path.join(work, `f${n++}`);
  writeFileSync(p, bytes);
  return p;
}

function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  return Buffer.from(hay).indexOf(Buffer.from(needle));
}

function flipped(b: Uint8Array, i: number, mask: number): Uint8Array {
  const c = Uint8Array.from(b);
  c[i] = (c[i] ?? 0) ^ mask;
  return c;
}

describe('evidence file format', () => {
  it('round-trips, is deterministic, and refuses unknown fields, other versions, trailing bytes', () => {
    const bundle: EvidenceBundle = { platform: 'tdx', evidence: Uint8Array.of(4, 0, 2), keyConfig: Uint8Array.of(0xa1), collateral: Uint8Array.of(0x7b, 0x7d) };
    const file = encodeEvidenceFile(bundle, Uint8Array.of(1, 2, 3));
    expect(looksLikeEvidenceFile(file)).toBe(true);
    expect(encodeEvidenceFile(bundle, Uint8Array.of(1, 2, 3))).toEqual(file);
    expect(decodeEvidenceFile(file)).toEqual({ version: 1, bundle, nonce: Uint8Array.of(1, 2, 3) });
    const code = (b: Uint8Array): string => {
      try {
        decodeEvidenceFile(b);
        return 'none';
      } catch (err) {
        return (err as { code: string }).code;
      }
    };
    expect(code(Uint8Array.from([...file, 0]))).toBe('EVIDENCE_MALFORMED');
    // version 2 is not read by this build
    const v2 = Uint8Array.from(file);
    const vAt = indexOf(v2, new TextEncoder().encode('version')) + 7;
    expect(v2[vAt]).toBe(1);
    v2[vAt] = 2;
    expect(code(v2)).toBe('EVIDENCE_MALFORMED');
    // certificates on a tdx file: refused
    expect(() => decodeEvidenceFile(encodeEvidenceFile({ ...bundle, certificates: Uint8Array.of(1) }))).toThrow(/only carried for sev-snp/);
    // raw evidence does not look like a file
    expect(looksLikeEvidenceFile(Uint8Array.of(0x84))).toBe(false);
    expect(looksLikeEvidenceFile(Uint8Array.of(0x02, 0, 0, 0))).toBe(false);
  });
});

describe('cloister verify on a simulated evidence file', () => {
  let sim: SimulatedAttester;
  let rootPath: string;
  let file: Uint8Array;
  let filePath: string;
  /** A policy for this simulated attester: without one the result is only an inspection. */
  let policyPath: string;
  const nonce = new Uint8Array(32).fill(0x42);
  const kc = keyConfig('simulated');

  beforeAll(async () => {
    sim = await createSimulatedAttester({ clock: () => T0 });
    rootPath = writeTemp(sim.rootPem);
    const bundle = await sim.attest({ keyConfig: kc, hpkePublicKey: new Uint8Array(32).fill(0x11), nonce });
    file = encodeEvidenceFile(bundle, nonce);
    filePath = writeTemp(file);
    policyPath = writeTemp(JSON.stringify({ version: 1, platforms: { simulated: sim.policySection() } }));
  });

  it('verifies the evidence, the binding and the key config, and prints its summary (exit 0)', async () => {
    const r = await cli([filePath, '--platform', 'simulated', '--root', rootPath, '--at', AT, '--policy', policyPath]);
    expect(r.err).not.toMatch(/FAIL/);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^VERIFIED {2}platform simulated/);
    expect(r.out).toMatch(/ok +binding +public_key, user_data, nonce match/);
    expect(r.out).toMatch(/ok +key-config/);
    expect(r.out).toContain('key config (bound by the evidence above)');
    expect(r.out).toContain(`hpke        kem 0x0020 kdf 0x0001 aead 0x0001,0x0003  key ${'11'.repeat(32)}`);
    expect(r.out).toMatch(/model +classifier \(text-classification\) sha256 [0-9a-f]{64}/);
    // --platform may be left out: the file names it; --nonce must equal the saved one
    expect((await cli([filePath, '--root', rootPath, '--at', AT, '--policy', policyPath])).code).toBe(0);
    expect((await cli([filePath, '--root', rootPath, '--at', AT, '--policy', policyPath, '--nonce', '42'.repeat(32)])).code).toBe(0);
    // Without a policy the binding is checked but the measurements are not: exit 1 unless --inspect.
    const incomplete = await cli([filePath, '--root', rootPath, '--at', AT]);
    expect(incomplete.code).toBe(1);
    expect(incomplete.out).toMatch(/^NOT VERIFIED \(incomplete/);
    expect(incomplete.err).toMatch(/VERIFICATION_INCOMPLETE: .*NOT checked: policy: no --policy given/);
    expect(incomplete.err).not.toMatch(/binding:/);
    const inspected = await cli([filePath, '--root', rootPath, '--at', AT, '--inspect']);
    expect(inspected.code).toBe(0);
    expect(inspected.out).toMatch(/^INSPECTED/);
    expect(inspected.out).toMatch(/ok +binding +public_key, user_data, nonce match/);
    expect(inspected.out).toContain('NOT checked  policy: no --policy given');
    const other = await cli([filePath, '--root', rootPath, '--at', AT, '--nonce', '43'.repeat(32)]);
    expect(other.code).toBe(1);
    expect(other.err).toContain('BINDING_MISMATCH');
    // The state directory `cloister serve` writes: --root with its policy.json beside it is the
    // development policy (said on stderr); a policy that does not match still fails.
    const stateDir = mkdtempSync(path.join(work, 'state-'));
    writeFileSync(path.join(stateDir, 'simulated-root.pem'), sim.rootPem);
    writeFileSync(path.join(stateDir, 'policy.json'), JSON.stringify({ version: 1, platforms: { simulated: sim.policySection() } }));
    const dev = await cli([filePath, '--platform', 'simulated', '--root', path.join(stateDir, 'simulated-root.pem'), '--at', AT]);
    expect(dev.code).toBe(0);
    expect(dev.out).toMatch(/^VERIFIED/);
    expect(dev.err).toContain(`policy ${path.join(stateDir, 'policy.json')} (the development policy`);
    const pcrs = { ...sim.policySection().pcrs, '0': '00'.repeat(48) };
    writeFileSync(path.join(stateDir, 'policy.json'), JSON.stringify({ version: 1, platforms: { simulated: { ...sim.policySection(), pcrs } } }));
    expect((await cli([filePath, '--platform', 'simulated', '--root', path.join(stateDir, 'simulated-root.pem'), '--at', AT])).code).toBe(1);
    const wrongPlatform = await cli([filePath, '--platform', 'nitro', '--at', AT]);
    expect(wrongPlatform.code).toBe(1);
    expect(wrongPlatform.err).toMatch(/holds simulated evidence, but --platform is nitro/);
  });

  it('--root accepts DER as well as PEM', async () => {
    const derRoot = writeTemp(new Uint8Array(Buffer.from(sim.rootPem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64')));
    expect((await cli([filePath, '--root', derRoot, '--at', AT, '--policy', policyPath])).code).toBe(0);
  });

  it('a policy that pins the simulated root replaces --root (as the development policy does)', async () => {
    const pinned = writeTemp(JSON.stringify({ version: 1, platforms: { simulated: sim.policySection() } }));
    expect(sim.policySection().rootSha256).toBe(sim.rootSha256Hex);
    expect((await cli([filePath, '--policy', pinned, '--at', AT])).code).toBe(0);
    const wrong = writeTemp(JSON.stringify({ version: 1, platforms: { simulated: { ...sim.policySection(), rootSha256: 'ab'.repeat(32) } } }));
    const r = await cli([filePath, '--policy', wrong, '--at', AT]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`the presented root has SHA-256 ${sim.rootSha256Hex}; the pinned root SHA-256 is ${'ab'.repeat(32)}`);
    expect((await cli([filePath, '--at', AT])).code).toBe(2);
  });

  it('--json carries the key config', async () => {
    const r = await cli([filePath, '--root', rootPath, '--at', AT, '--json', '--policy', policyPath]);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out) as { ok: boolean; keyConfig: { keyId: number; hpkePublicKey: string; models: { name: string }[] } };
    expect(j.ok).toBe(true);
    expect(j.keyConfig.keyId).toBe(9);
    expect(j.keyConfig.models[0]?.name).toBe('classifier');
  });

  it('an expired key config fails KEY_STALE (verify as of the saved time with --at)', async () => {
    const late = new Date(T0 + 2 * 3600 * 1000).toISOString();
    const r = await cli([filePath, '--root', rootPath, '--at', late]);
    expect(r.code).toBe(1);
    // the 3-hour leaf still holds, the 5-minute document age does not: the first failure names it
    expect(r.err).toMatch(/EVIDENCE_STALE|KEY_STALE/);
  });

  it('evidence bound to another key config, or with no nonce, does not pass with this one', async () => {
    const bundle = await sim.attest({ keyConfig: kc, hpkePublicKey: new Uint8Array(32).fill(0x11), nonce });
    const swapped = encodeEvidenceFile({ ...bundle, keyConfig: keyConfig('simulated', { keyId: 10 }) }, nonce);
    const r = await cli([writeTemp(swapped), '--root', rootPath, '--at', AT]);
    expect(r.code).toBe(1);
    expect(r.err).toContain('BINDING_MISMATCH');
    const noNonce = encodeEvidenceFile(bundle);
    const r2 = await cli([writeTemp(noNonce), '--root', rootPath, '--at', AT]);
    expect(r2.code).toBe(1);
    expect(r2.err).toMatch(/BINDING_MISMATCH.*nonce/);
  });

  it('raw evidence with --key-config binds that key config (VERIFIED with a policy); another key config fails BINDING_MISMATCH', async () => {
    const bundle = await sim.attest({ keyConfig: kc, hpkePublicKey: new Uint8Array(32).fill(0x11), nonce });
    const raw = writeTemp(bundle.evidence);
    const kcPath = writeTemp(kc);
    const nonceHex = Buffer.from(nonce).toString('hex');
    const ok = await cli([raw, '--platform', 'simulated', '--policy', policyPath, '--key-config', kcPath, '--nonce', nonceHex, '--at', AT]);
    expect(ok.err).not.toMatch(/FAIL|INCOMPLETE/);
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/^VERIFIED/);
    expect(ok.out).toMatch(/ok +binding +public_key, user_data, nonce match/);
    const other = await cli([raw, '--platform', 'simulated', '--policy', policyPath, '--key-config', writeTemp(keyConfig('simulated', { keyId: 10 })), '--nonce', nonceHex, '--at', AT]);
    expect(other.code).toBe(1);
    expect(other.err).toContain('BINDING_MISMATCH');
    // --key-config does not apply to an evidence file, --report-data not to Nitro-format evidence.
    expect((await cli([filePath, '--policy', policyPath, '--key-config', kcPath, '--at', AT])).err).toContain('INVALID_ARGUMENT');
    expect((await cli([raw, '--platform', 'simulated', '--policy', policyPath, '--report-data', '00'.repeat(64), '--at', AT])).code).toBe(2);
  });

  it('a legacy `attest --out` file (the wire message) still verifies', async () => {
    const bundle = await sim.attest({ keyConfig: kc, hpkePublicKey: new Uint8Array(32).fill(0x11) });
    const legacy = encodeWireMessage({ t: 'evidence', bundle });
    const r = await cli([writeTemp(legacy), '--root', rootPath, '--at', AT, '--policy', policyPath]);
    expect(r.code).toBe(0);
  });

  it('fails (exit 1) for a flipped byte in every region of the file', async () => {
    const bundle = decodeEvidenceFile(file).bundle;
    const evStart = indexOf(file, bundle.evidence);
    const evEnd = evStart + bundle.evidence.byteLength;
    const kcStart = indexOf(file, kc);
    const nonceStart = indexOf(file, nonce);
    const doc = parseNitroDocument(decodeCoseSign1(bundle.evidence).payload);
    const certs = [...doc.cabundle, doc.certificate].map((c) => {
      const at = indexOf(file, c);
      return [at, at + c.byteLength] as const;
    });
    const sigStart = evEnd - 96;
    expect(Math.min(evStart, kcStart, nonceStart, ...certs.map((c) => c[0]))).toBeGreaterThan(0);
    const regions: Record<string, number[]> = { cbor: [], evidence: [], certificates: [], signature: [], keyConfig: [], nonce: [] };
    const regionOf = (i: number): string => {
      if (i >= kcStart && i < kcStart + kc.byteLength) return 'keyConfig';
      if (i >= nonceStart && i < nonceStart + nonce.byteLength) return 'nonce';
      if (i >= sigStart && i < evEnd) return 'signature';
      if (certs.some(([a, b]) => i >= a && i < b)) return 'certificates';
      if (i >= evStart && i < evEnd) return 'evidence';
      return 'cbor';
    };
    for (let i = 0; i < file.byteLength; i++) {
      const r = regionOf(i);
      // every byte outside the evidence, every signature byte, every 5th byte elsewhere
      if (r === 'cbor' || r === 'keyConfig' || r === 'nonce' || r === 'signature' || i % 5 === 0) regions[r]?.push(i);
    }
    const passed: string[] = [];
    let runs = 0;
    for (const [name, offsets] of Object.entries(regions)) {
      expect(offsets.length, name).toBeGreaterThan(0);
      for (const i of offsets) {
        for (const mask of name === 'evidence' || name === 'certificates' ? [0x01] : [0x01, 0x80]) {
          runs++;
          const r = await cli([writeTemp(flipped(file, i, mask)), '--platform', 'simulated', '--root', rootPath, '--at', AT]);
          if (r.code !== 1) passed.push(`${name}@${i}^${mask}: exit ${r.code}`);
        }
      }
    }
    expect(passed).toEqual([]);
    expect(runs).toBeGreaterThan(1000);
  }, 120_000);
});

interface SnpSide {
  readonly expected_measurement: string;
}

describeWithVectors(['sev-snp', 'tdx'], 'real SEV-SNP and TDX evidence in the evidence-file format', () => {
  const snpFile = (kcBytes: Uint8Array): Uint8Array =>
    encodeEvidenceFile({
      platform: 'sev-snp',
      evidence: readVector('sev-snp/snp_virtee_milan_report.bin'),
      keyConfig: kcBytes,
      certificates: readVector('sev-snp/snp_virtee_milan_vcek.der'),
    });
  const tdxFile = (): Uint8Array =>
    encodeEvidenceFile({
      platform: 'tdx',
      evidence: readVector('tdx/tdx_phala_v4_quote.bin'),
      keyConfig: keyConfig('tdx'),
      collateral: readVector('tdx/tdx_phala_v4_collateral.json'),
    });
  const snpAt = '2024-06-01T00:00:00Z';
  // An hour before the sidecar's now_used: the PCK CRL expires 15 minutes before it.
  const tdxAt = (): string => new Date((readVectorJson<{ now_used: number }>('tdx/tdx_phala_v4.json').now_used - 3600) * 1000).toISOString();

  function steps(out: string): Map<string, boolean> {
    const m = new Map<string, boolean>();
    for (const line of out.split('\n')) {
      const s = /^ {2}(ok {2}|FAIL) (\S+)/.exec(line);
      if (s?.[2] !== undefined) m.set(s[2], s[1] === 'ok  ');
    }
    return m;
  }

  it('sev-snp: the certificates come from the file; every stage passes except the binding (this report binds no Cloister key)', async () => {
    const side = readVectorJson<SnpSide>('sev-snp/snp_virtee_milan.json');
    const measurement = side.expected_measurement.split(' ')[0] ?? '';
    const policy = writeTemp(JSON.stringify({ version: 1, platforms: { 'sev-snp': { measurements: [measurement] } } }));
    const r = await cli([writeTemp(snpFile(keyConfig('sev-snp'))), '--policy', policy, '--at', snpAt]);
    expect(r.code).toBe(1);
    expect(r.out, r.err).toMatch(/ok +endorsement-key +VCEK from evidence/);
    const s = steps(r.out);
    expect([...s.entries()].filter(([, ok]) => !ok).map(([k]) => k)).toEqual(['binding']);
    expect(r.err).toContain('BINDING_MISMATCH at step binding');
  });

  it('tdx: the collateral comes from the file; every stage passes except the binding', async () => {
    const r = await cli([writeTemp(tdxFile()), '--at', tdxAt()]);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/ok +collateral +from evidence/);
    const s = steps(r.out);
    expect([...s.entries()].filter(([, ok]) => !ok).map(([k]) => k)).toEqual(['binding']);
    // --collateral next to a file that carries collateral: refused (the file's bytes are what is verified)
    const both = await cli([writeTemp(tdxFile()), '--at', tdxAt(), '--collateral', 'x.json']);
    expect(both.code).toBe(1);
    expect(both.err).toContain('--collateral does not apply');
  });

  it('a flipped byte in the SNP report or its certificate fails before the binding stage', async () => {
    const file = snpFile(keyConfig('sev-snp'));
    const report = readVector('sev-snp/snp_virtee_milan_report.bin');
    const vcek = readVector('sev-snp/snp_virtee_milan_vcek.der');
    const spans: [string, number, number][] = [
      ['report', indexOf(file, report), report.byteLength],
      ['vcek', indexOf(file, vcek), vcek.byteLength],
    ];
    const missed: string[] = [];
    for (const [name, start, len] of spans) {
      for (let i = start; i < start + len; i += name === 'report' ? 3 : 7) {
        const r = await cli([writeTemp(flipped(file, i, 0x01)), '--at', snpAt]);
        const s = steps(r.out);
        const firstFail = [...s.entries()].find(([, ok]) => !ok)?.[0];
        if (r.code !== 1 || firstFail === 'binding') missed.push(`${name}+${i - start}: exit ${r.code}, first failure ${String(firstFail)}`);
      }
    }
    expect(missed).toEqual([]);
  }, 120_000);

  it('a flipped byte in the TDX quote or its collateral fails before the binding stage', async () => {
    const file = tdxFile();
    const quote = readVector('tdx/tdx_phala_v4_quote.bin');
    const coll = readVector('tdx/tdx_phala_v4_collateral.json');
    const spans: [string, number, number, number][] = [
      ['quote', indexOf(file, quote), quote.byteLength, 17],
      ['collateral', indexOf(file, coll), coll.byteLength, 41],
    ];
    const missed: string[] = [];
    for (const [name, start, len, stride] of spans) {
      for (let i = start; i < start + len; i += stride) {
        const r = await cli([writeTemp(flipped(file, i, 0x01)), '--at', tdxAt()]);
        const firstFail = [...steps(r.out).entries()].find(([, ok]) => !ok)?.[0];
        if (r.code !== 1 || firstFail === 'binding') missed.push(`${name}+${i - start} (${String.fromCharCode(file[i] ?? 0)}): exit ${r.code}, first failure ${String(firstFail)}`);
      }
    }
    expect(missed).toEqual([]);
  }, 180_000);
});
