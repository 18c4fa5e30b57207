/**
 * `cloister eif measure <file> [--json]`: parse an Enclave Image File, check its CRC and
 * structure, and print PCR0/1/2 (and PCR8 for signed images) exactly as nitro-cli computes them.
 *
 * `cloister eif build --rootfs <dir|image> --kernel ... --init ... --nsm ... --cmdline <file>
 * --out app.eif`: assemble an unsigned EIF without Docker or nitro-cli
 * (src/image/eif/build.ts) and print the PCRs it measured.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { CloisterError } from '../../errors.js';
import { buildEif } from '../../image/eif/build.js';
import type { EifBuildResult } from '../../image/eif/build.js';
import { measureEifFile } from '../../image/eif/measure.js';
import { MAX_CLI_FILE_BYTES } from './read-file.js';

export const summary = 'enclave image files: cloister eif measure <file.eif> | cloister eif build --rootfs ... --out app.eif';

const BUILD_HELP = `usage: cloister eif build --rootfs <dir|image> --kernel <bzImage> --init <init> --nsm <nsm.ko>
                         --cmdline <file> --out <app.eif>
                         [--cmd-file <file> --env-file <file>] [--source-date-epoch N]
                         [--arch x86_64|aarch64] [--name NAME] [--json]

Assembles an unsigned EIF (version 4) as nitro-cli lays it out: a bootstrap ramdisk (dev/,
init, nsm.ko) and a customer ramdisk (rootfs/, cmd, env), deterministic cpio newc (sorted,
one mtime: --source-date-epoch, default $SOURCE_DATE_EPOCH or 0). The blobs are the ones
nitro-cli installs (usually /usr/share/nitro_enclaves/blobs: bzImage, init, nsm.ko, cmdline).
--rootfs is a directory (then --cmd-file and --env-file give the command and environment,
one item per line) or a local container image, read with buildah (its CMD, else ENTRYPOINT,
and ENV). Prints PCR0/1/2 as 'cloister eif measure' computes them from the written file.`;

function imageRootfs(image: string): { dir: string; cmd: string[]; env: string[]; done: () => void } {
  const buildah = (args: string[]): string => {
    try {
      return execFileSync('buildah', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
    } catch (cause) {
      throw new CloisterError('NOT_FOUND', `--rootfs ${image} is not a directory, and 'buildah ${args[0] ?? ''}' failed for it (a local image needs buildah, as root)`, { cause });
    }
  };
  const container = buildah(['from', '--pull-never', image]);
  try {
    const dir = buildah(['mount', container]);
    const inspected = JSON.parse(buildah(['inspect', '--type', 'container', container])) as {
      OCIv1?: { config?: { Cmd?: string[] | null; Entrypoint?: string[] | null; Env?: string[] | null } };
    };
    const config = inspected.OCIv1?.config ?? {};
    return { dir, cmd: config.Cmd ?? config.Entrypoint ?? [], env: config.Env ?? [], done: () => void buildah(['rm', container]) };
  } catch (err) {
    buildah(['rm', container]);
    throw err;
  }
}

function readLines(path: string, what: string): string[] {
  let text: string;
  try {
    // A cmd or env file is a few lines; the bound is the CLI's one for small files.
    const size = statSync(path).size;
    if (size > MAX_CLI_FILE_BYTES) throw new CloisterError('LIMIT_EXCEEDED', `${what} ${path} is ${size} bytes; the limit is ${MAX_CLI_FILE_BYTES}`);
    text = readFileSync(path, 'utf8');
  } catch (cause) {
    if (cause instanceof CloisterError) throw cause;
    throw new CloisterError('NOT_FOUND', `cannot read ${what} ${path}`, { cause });
  }
  return text.split('\n').filter((l, i, all) => !(l === '' && i === all.length - 1));
}

async function build(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      rootfs: { type: 'string' },
      kernel: { type: 'string' },
      init: { type: 'string' },
      nsm: { type: 'string' },
      cmdline: { type: 'string' },
      out: { type: 'string' },
      'cmd-file': { type: 'string' },
      'env-file': { type: 'string' },
      'source-date-epoch': { type: 'string' },
      arch: { type: 'string', default: 'x86_64' },
      name: { type: 'string', default: 'cloister' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    console.log(BUILD_HELP);
    return 0;
  }
  const { rootfs, kernel, init, nsm, cmdline, out } = values;
  if (positionals.length > 0 || rootfs === undefined || kernel === undefined || init === undefined || nsm === undefined || cmdline === undefined || out === undefined) {
    console.error(BUILD_HELP);
    return 2;
  }
  if (values.arch !== 'x86_64' && values.arch !== 'aarch64') throw new CloisterError('INVALID_ARGUMENT', '--arch must be x86_64 or aarch64');
  const epochText = values['source-date-epoch'] ?? process.env['SOURCE_DATE_EPOCH'] ?? '0';
  if (!/^\d{1,10}$/.test(epochText)) throw new CloisterError('INVALID_ARGUMENT', `--source-date-epoch must be seconds since 1970, got ${JSON.stringify(epochText)}`);
  const isDir = existsSync(rootfs) && statSync(rootfs).isDirectory();
  if (isDir && (values['cmd-file'] === undefined || values['env-file'] === undefined)) {
    throw new CloisterError('INVALID_ARGUMENT', 'a directory --rootfs needs --cmd-file and --env-file (the command and environment the Nitro init runs)');
  }
  const source = isDir
    ? { dir: rootfs, cmd: readLines(values['cmd-file'] ?? '', 'cmd file'), env: readLines(values['env-file'] ?? '', 'env file'), done: () => undefined }
    : imageRootfs(rootfs);
  let result: EifBuildResult;
  try {
    result = buildEif({
      rootfs: source.dir,
      cmd: source.cmd,
      env: source.env,
      kernel,
      init,
      nsm,
      cmdline: readFileSync(cmdline, 'utf8'),
      out,
      mtime: Number(epochText),
      arch: values.arch,
      name: values.name,
    });
  } finally {
    source.done();
  }
  const m = result.measurements;
  if (values.json) {
    console.log(JSON.stringify({ Measurements: { HashAlgorithm: 'Sha384 { ... }', PCR0: m.pcr0, PCR1: m.pcr1, PCR2: m.pcr2 }, fileSha256: result.fileSha256, bytes: result.bytes }, null, 2));
    return 0;
  }
  console.log(`wrote ${out} (${result.bytes} bytes; ramdisks ${result.ramdiskBytes.join(' + ')} bytes), unsigned`);
  console.log(`PCR0 ${m.pcr0}`);
  console.log(`PCR1 ${m.pcr1}`);
  console.log(`PCR2 ${m.pcr2}`);
  console.log(`sha256 ${result.fileSha256}`);
  return 0;
}

const HELP = `usage: cloister eif measure <file.eif> [--json]
       cloister eif build --rootfs <dir|image> --kernel <bzImage> --init <init> --nsm <nsm.ko> --cmdline <file> --out <app.eif>

Parses the EIF (strict: magic, version, section table, CRC32), then prints
  PCR0  SHA384 extend of kernel + cmdline + all ramdisks
  PCR1  SHA384 extend of kernel + cmdline + first ramdisk
  PCR2  SHA384 extend of the remaining ramdisks (the application)
  PCR8  SHA384 extend of the signing certificate (signed images only)
--json prints nitro-cli's {"Measurements": {...}} shape plus the file digest.`;

export async function run(argv: string[]): Promise<number> {
  if (argv[0] === 'build') return build(argv.slice(1));
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
