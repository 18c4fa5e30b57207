/**
 * `cloister eif measure <file> [--json]`: parse an Enclave Image File, check its CRC and
 * structure, and print PCR0/1/2 (and PCR8 for signed images) exactly as nitro-cli computes them.
 */
import { parseArgs } from 'node:util';
import { measureEifFile } from '../../attestation/nitro/eif/measure.js';

export const summary = 'inspect an enclave image file: cloister eif measure <file.eif> [--json]';

const HELP = `usage: cloister eif measure <file.eif> [--json]

Parses the EIF (strict: magic, version, section table, CRC32), then prints
  PCR0  SHA384 extend of kernel + cmdline + all ramdisks
  PCR1  SHA384 extend of kernel + cmdline + first ramdisk
  PCR2  SHA384 extend of the remaining ramdisks (the application)
  PCR8  SHA384 extend of the signing certificate (signed images only)
--json prints nitro-cli's {"Measurements": {...}} shape plus the file digest.`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { json: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h', default: false } },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const [sub, file, ...extra] = positionals;
  if (sub !== 'measure' || file === undefined || extra.length > 0) {
    console.error(HELP);
    return 2;
  }
  const report = await Promise.resolve().then(() => measureEifFile(file));
  const m = report.measurements;
  if (values.json) {
    const measurements: Record<string, string> = { HashAlgorithm: 'Sha384 { ... }', PCR0: m.pcr0, PCR1: m.pcr1, PCR2: m.pcr2 };
    if (m.pcr8 !== undefined) measurements['PCR8'] = m.pcr8;
    console.log(
      JSON.stringify(
        {
          Measurements: measurements,
          arch: report.arch,
          version: report.header.version,
          sections: report.sections.map((s) => ({ kind: s.kind, size: s.size })),
          fileSha256: report.fileSha256,
        },
        null,
        2,
      ),
    );
    return 0;
  }
  console.log(`EIF v${report.header.version} (${report.arch}), ${report.sections.length} sections, CRC32 ok`);
  console.log(`PCR0 ${m.pcr0}`);
  console.log(`PCR1 ${m.pcr1}`);
  console.log(`PCR2 ${m.pcr2}`);
  console.log(m.pcr8 === undefined ? 'PCR8 (unsigned image)' : `PCR8 ${m.pcr8}`);
  console.log(`sha256 ${report.fileSha256}`);
  return 0;
}
