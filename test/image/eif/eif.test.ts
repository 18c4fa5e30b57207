import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { Encoder } from 'cbor-x';
import { afterAll, describe, expect, it } from 'vitest';
import { measureEif, measureEifFile } from '../../../src/image/eif/measure.js';
import { Crc32 } from '../../../src/image/eif/crc32.js';
import { CloisterError } from '../../../src/errors.js';
import { run as eifCommand } from '../../../src/cli/commands/eif.js';

// A throwaway self-signed P-384 certificate (CN=cloister-test-eif-signer), test data only.
const SIGNING_CERT = `-----BEGIN CERTIFICATE-----
MIIB2zCCAWCgAwIBAgIUJXotO8j9L3buCZM93sw5rxy+slIwCgYIKoZIzj0EAwIw
IzEhMB8GA1UEAwwYY2xvaXN0ZXItdGVzdC1laWYtc2lnbmVyMCAXDTI2MTEyNjAz
MDAwOFoYDzIxMjYxMTAyMDMwMDA4WjAjMSEwHwYDVQQDDBhjbG9pc3Rlci10ZXN0
LWVpZi1zaWduZXIwdjAQBgcqhkjOPQIBBgUrgQQAIgNiAASUcyKSqKsAc+7CD15S
mv9p/5NKrqVMEYu3wHDv+7KuEyYHPQGN1ugiWO9LNQpRV338hP7MSjc8t2YB5d7X
GtxInHx35rgBry7RLc7dPRnTVxjQdec9o+QlqAW7uVJnnTCjUzBRMB0GA1UdDgQW
BBTO3U5BLblymqS5HEcfgNY3mSQNiDAfBgNVHSMEGDAWgBTO3U5BLblymqS5HEcf
gNY3mSQNiDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA2kAMGYCMQC2adup
yr1qxRZ+BQ/F5kpp22MV7W/wYHMLgrQanev8R099SnU+QUppksHyO089wcACMQDE
0hYPaajP+USpNjwQixhxikDMWinJQwHRk8nVLGLh5V10/yaarTXEtSDg6V0MSQg=
-----END CERTIFICATE-----
`;

type Section = { type: number; data: Buffer; flags?: number };

/**
 * An independent EIF writer following aws-nitro-enclaves-image-format's EifBuilder: header,
 * then kernel, cmdline, metadata, ramdisks, signature; offsets point at section headers;
 * CRC-32 (zlib) over everything except the crc field.
 */
function buildEif(sections: Section[], opts: { version?: number; flags?: number; crcDelta?: number } = {}): Buffer {
  const header = Buffer.alloc(548);
  header.write('.eif', 0, 'latin1');
  header.writeUInt16BE(opts.version ?? 4, 4);
  header.writeUInt16BE(opts.flags ?? 0, 6);
  header.writeBigUInt64BE(1024n * 1024n * 1024n, 8);
  header.writeBigUInt64BE(2n, 16);
  header.writeUInt16BE(sections.length, 26);
  let off = 548;
  const body: Buffer[] = [];
  sections.forEach((s, i) => {
    header.writeBigUInt64BE(BigInt(off), 28 + 8 * i);
    header.writeBigUInt64BE(BigInt(s.data.length), 28 + 256 + 8 * i);
    const sh = Buffer.alloc(12);
    sh.writeUInt16BE(s.type, 0);
    sh.writeUInt16BE(s.flags ?? 0, 2);
    sh.writeBigUInt64BE(BigInt(s.data.length), 4);
    body.push(sh, s.data);
    off += 12 + s.data.length;
  });
  let crc = crc32(header.subarray(0, 544));
  for (const b of body) crc = crc32(b, crc);
  header.writeUInt32BE((crc + (opts.crcDelta ?? 0)) >>> 0, 544);
  return Buffer.concat([header, ...body]);
}

const sha384 = (...parts: Buffer[]): Buffer => {
  const h = createHash('sha384');
  for (const p of parts) h.update(p);
  return h.digest();
};
/** The PCR formula, written out: SHA384(0^48 || SHA384(data)). */
const pcr = (...parts: Buffer[]): string => sha384(Buffer.alloc(48), sha384(...parts)).toString('hex');

const kernel = Buffer.from('bzImage'.repeat(300));
const cmdline = Buffer.from('reboot=k panic=30 pci=off nomodules console=ttyS0\0');
const metadata = Buffer.from(JSON.stringify({ ImageName: 'cloister', ImageVersion: '1' }));
const ramdisk1 = Buffer.alloc(5000, 7); // the AWS bootstrap ramdisk
const ramdisk2 = Buffer.alloc(7001, 9); // the customer ramdisk
const ramdisk3 = Buffer.from('third ramdisk');

function signatureSection(): Buffer {
  // serde_cbor of Vec<PcrSignature>: Vec<u8> fields are arrays of small integers.
  const enc = new Encoder({ useRecords: false, mapsAsObjects: true, variableMapSize: true, tagUint8Array: false });
  return Buffer.from(enc.encode([{ signing_certificate: [...Buffer.from(SIGNING_CERT)], signature: [1, 2, 3] }]));
}

const standard = (): Section[] => [
  { type: 1, data: kernel },
  { type: 2, data: cmdline },
  { type: 5, data: metadata },
  { type: 3, data: ramdisk1 },
  { type: 3, data: ramdisk2 },
  { type: 3, data: ramdisk3 },
];

function expectMalformed(fn: () => unknown, pattern: RegExp, code = 'MALFORMED'): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CloisterError);
    expect((err as CloisterError).code).toBe(code);
    expect((err as CloisterError).message).toMatch(pattern);
    return;
  }
  throw new Error('expected a CloisterError');
}

describe('EIF CRC32', () => {
  it('matches zlib crc32 incrementally', () => {
    const a = Buffer.from('hello '), b = Buffer.from('enclave world');
    expect(new Crc32().update(a).update(b).digest()).toBe(crc32(Buffer.concat([a, b])));
    expect(new Crc32().digest()).toBe(0);
  });
});

describe('EIF measurement', () => {
  it('computes PCR0/1/2 by the nitro-cli formula', () => {
    const report = measureEif(buildEif(standard()));
    expect(report.measurements.pcr0).toBe(pcr(kernel, cmdline, ramdisk1, ramdisk2, ramdisk3));
    expect(report.measurements.pcr1).toBe(pcr(kernel, cmdline, ramdisk1));
    expect(report.measurements.pcr2).toBe(pcr(ramdisk2, ramdisk3));
    expect(report.measurements.pcr8).toBeUndefined();
    expect(report.arch).toBe('x86_64');
    expect(report.sections.map((s) => s.kind)).toEqual(['kernel', 'cmdline', 'metadata', 'ramdisk', 'ramdisk', 'ramdisk']);
    expect(report.metadata).toEqual({ ImageName: 'cloister', ImageVersion: '1' });
  });

  it('metadata does not change the PCRs; the fileSha256 covers everything', () => {
    const a = measureEif(buildEif(standard()));
    const noMeta = standard().filter((s) => s.type !== 5);
    const b = measureEif(buildEif(noMeta));
    expect(b.measurements).toEqual(a.measurements);
    expect(b.fileSha256).not.toBe(a.fileSha256);
    const bytes = buildEif(standard());
    expect(a.fileSha256).toBe(createHash('sha256').update(bytes).digest('hex'));
  });

  it('PCR2 with a single ramdisk is the extend of the empty string', () => {
    const r = measureEif(buildEif([{ type: 1, data: kernel }, { type: 2, data: cmdline }, { type: 3, data: ramdisk1 }]));
    expect(r.measurements.pcr2).toBe(pcr(Buffer.alloc(0)));
  });

  it('hashes identically with tiny read chunks (streaming)', () => {
    const bytes = buildEif(standard());
    expect(measureEif(bytes, { chunkBytes: 7 }).measurements).toEqual(measureEif(bytes).measurements);
  });

  it('computes PCR8 from the DER of the signing certificate', () => {
    const bytes = buildEif([...standard(), { type: 4, data: signatureSection() }]);
    const der = Buffer.from(new X509Certificate(SIGNING_CERT).raw);
    const r = measureEif(bytes);
    expect(r.measurements.pcr8).toBe(pcr(der));
    expect(r.measurements.pcr0).toBe(pcr(kernel, cmdline, ramdisk1, ramdisk2, ramdisk3));
  });

  it('reports aarch64 from header flag bit 0', () => {
    expect(measureEif(buildEif(standard(), { flags: 1 })).arch).toBe('aarch64');
  });

  it('measures a file from disk and the CLI prints the same values', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cloister-eif-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'image.eif');
    writeFileSync(file, buildEif(standard()));
    const r = measureEifFile(file);
    expect(r.measurements.pcr0).toBe(pcr(kernel, cmdline, ramdisk1, ramdisk2, ramdisk3));
    const lines: string[] = [];
    const orig = console.log;
    console.log = (s: string) => lines.push(s);
    try {
      expect(await eifCommand(['measure', file, '--json'])).toBe(0);
    } finally {
      console.log = orig;
    }
    const out = JSON.parse(lines.join('\n')) as { Measurements: Record<string, string> };
    expect(out.Measurements['PCR0']).toBe(r.measurements.pcr0);
    expect(out.Measurements['PCR2']).toBe(r.measurements.pcr2);
    expect(out.Measurements['PCR8']).toBeUndefined();
    expectMalformed(() => measureEifFile(join(dir, 'missing.eif')), /cannot open/, 'NOT_FOUND');
  });
});

describe('EIF parser rejects', () => {
  const good = (): Buffer => buildEif(standard());

  it('a bad magic', () => {
    const b = good();
    b[0] = 0x2f;
    expectMalformed(() => measureEif(b), /magic/);
  });
  it('a file shorter than the header', () => expectMalformed(() => measureEif(good().subarray(0, 100)), /shorter/));
  it('unsupported versions (v1 had no CRC)', () => {
    expectMalformed(() => measureEif(buildEif(standard(), { version: 1 })), /version/);
    expectMalformed(() => measureEif(buildEif(standard(), { version: 5 })), /version/);
  });
  it('unknown header flags', () => expectMalformed(() => measureEif(buildEif(standard(), { flags: 2 })), /flags/));
  it('a CRC mismatch', () => expectMalformed(() => measureEif(buildEif(standard(), { crcDelta: 1 })), /CRC32/));
  it('a flipped data byte (CRC)', () => {
    const b = good();
    b.writeUInt8(b.readUInt8(b.length - 1) ^ 1, b.length - 1);
    expectMalformed(() => measureEif(b), /CRC32/);
  });
  it('trailing bytes', () => expectMalformed(() => measureEif(Buffer.concat([good(), Buffer.from([0])])), /trailing/));
  it('a truncated file', () => expectMalformed(() => measureEif(good().subarray(0, good().length - 1)), /past the end/));
  it('an invalid section type', () => {
    expectMalformed(() => measureEif(buildEif([...standard(), { type: 6, data: Buffer.from('x') }])), /invalid type 6/);
    expectMalformed(() => measureEif(buildEif([{ type: 0, data: kernel }])), /invalid type 0/);
  });
  it('non-zero section flags', () => {
    const s = standard();
    s[3] = { type: 3, data: ramdisk1, flags: 1 };
    expectMalformed(() => measureEif(buildEif(s)), /non-zero flags/);
  });
  it('a section table that disagrees with the sections', () => {
    const b = good();
    b.writeBigUInt64BE(b.readBigUInt64BE(28 + 256 + 8) + 1n, 28 + 256 + 8); // cmdline size
    expectMalformed(() => measureEif(b), /size does not match/);
    const c = good();
    c.writeBigUInt64BE(999n, 28 + 8 * 2); // metadata offset
    expectMalformed(() => measureEif(c), /offset does not match/);
    const d = good();
    d.writeBigUInt64BE(5n, 28 + 8 * 20); // entry beyond num_sections
    expectMalformed(() => measureEif(d), /beyond num_sections/);
  });
  it('too many sections / none', () => {
    const b = good();
    b.writeUInt16BE(33, 26);
    expectMalformed(() => measureEif(b), /num_sections/);
    b.writeUInt16BE(0, 26);
    expectMalformed(() => measureEif(b), /num_sections/);
  });
  it('must-be-zero header fields', () => {
    const b = good();
    b.writeUInt16BE(1, 24);
    expectMalformed(() => measureEif(b), /must-be-zero/);
  });
  it('wrong section order and missing pieces', () => {
    expectMalformed(() => measureEif(buildEif([{ type: 2, data: cmdline }, { type: 1, data: kernel }, { type: 3, data: ramdisk1 }])), /cmdline must follow the kernel/);
    expectMalformed(() => measureEif(buildEif([{ type: 1, data: kernel }, { type: 3, data: ramdisk1 }])), /ramdisk before the cmdline/);
    expectMalformed(() => measureEif(buildEif([{ type: 1, data: kernel }, { type: 2, data: cmdline }])), /no ramdisk/);
    expectMalformed(
      () => measureEif(buildEif([...standard(), { type: 4, data: signatureSection() }, { type: 3, data: ramdisk3 }])),
      /ramdisk after the signature/,
    );
  });
  it('a signature section that is not a PcrSignature list', () => {
    expectMalformed(() => measureEif(buildEif([...standard(), { type: 4, data: Buffer.from([0x80]) }])), /non-empty array/);
    expectMalformed(() => measureEif(buildEif([...standard(), { type: 4, data: Buffer.from([0x81, 0xa0]) }])), /signing_certificate/);
  });
  it('metadata that is not JSON', () => {
    const s = standard();
    s[2] = { type: 5, data: Buffer.from('{nope') };
    expectMalformed(() => measureEif(buildEif(s)), /metadata/);
  });
  it('each named limit', () => {
    const bytes = buildEif([...standard(), { type: 4, data: signatureSection() }]);
    expectMalformed(() => measureEif(bytes, { maxFileBytes: bytes.length - 1 }), /maxFileBytes/, 'LIMIT_EXCEEDED');
    expectMalformed(() => measureEif(bytes, { maxSignatureBytes: 100 }), /maxSignatureBytes/, 'LIMIT_EXCEEDED');
    expectMalformed(() => measureEif(bytes, { maxMetadataBytes: 10 }), /maxMetadataBytes/, 'LIMIT_EXCEEDED');
    expectMalformed(() => measureEif(bytes, { maxCmdlineBytes: 10 }), /maxCmdlineBytes/, 'LIMIT_EXCEEDED');
  });
});
