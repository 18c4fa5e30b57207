#!/usr/bin/env node
/**
 * The `cloister` command. Each subcommand lives in `commands/<name>.ts` and exports
 * `run(argv: string[]): Promise<number>` (the exit code) plus a one-line `summary`.
 * Add a subcommand by adding one line to COMMANDS.
 *
 * Exit codes, the same for every command: 0 success, 1 a runtime or verification failure,
 * 2 a usage error (unknown command or option, a missing or invalid option value, from a
 * flag or a CLOISTER_* environment variable).
 */
import { readFileSync } from 'node:fs';
import { CloisterError } from '../errors.js';
import { UsageError } from './commands/args.js';

interface Command {
  readonly summary: string;
  run(argv: string[]): Promise<number>;
}

const COMMANDS: Readonly<Record<string, () => Promise<Command>>> = {
  eif: () => import('./commands/eif.js'),
  gateway: () => import('./commands/gateway.js'),
  relay: () => import('./commands/relay.js'),
  verify: async () => import('./commands/verify.js'),
  serve: () => import('./commands/serve.js'),
  infer: () => import('./commands/infer.js'),
  attest: () => import('./commands/attest.js'),
  policy: () => import('./commands/policy.js'),
  receipt: () => import('./commands/receipt.js'),
};

const EXIT_OK = 0;
const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

/** The package version (package.json next to dist/ or src/). */
function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

async function usage(): Promise<string> {
  const names = Object.keys(COMMANDS).sort();
  const width = Math.max(...names.map((n) => n.length));
  const lines = [`cloister ${version()}: attested, end-to-end sealed inference`, '', 'usage: cloister <command> [options]', '', 'commands:'];
  for (const name of names) {
    const load = COMMANDS[name];
    const summary = load === undefined ? '' : (await load()).summary;
    lines.push(`  ${name.padEnd(width)}  ${summary}`);
  }
  lines.push(
    '',
    'options:',
    '  -h, --help     this help; `cloister <command> --help` for a command\'s options',
    '  -V, --version  print the version',
    '',
    'exit codes: 0 success, 1 runtime or verification failure, 2 usage error.',
    '`cloister serve` also reads CLOISTER_* environment variables (docs/CONFIG.md).',
  );
  return lines.join('\n');
}

/**
 * A reader that closed our stdout (`cloister verify ... | head`) is not an error: stop
 * writing and finish quietly instead of dying on EPIPE with a stack trace.
 */
function quietOnClosedPipe(stream: NodeJS.WriteStream): void {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED') return;
    throw err;
  });
}

/**
 * A usage error: ours, node:util parseArgs' (ERR_PARSE_ARGS_*), or an invalid argument that
 * did not come from the server.
 */
function isUsageError(err: unknown): boolean {
  if (err instanceof UsageError) return true;
  const nodeCode = (err as { code?: unknown } | null)?.code;
  if (err instanceof Error && typeof nodeCode === 'string' && nodeCode.startsWith('ERR_PARSE_ARGS_')) return true;
  return err instanceof CloisterError && err.code === 'INVALID_ARGUMENT' && err.detail?.['origin'] !== 'server';
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const text = await usage();
    if (name === undefined) {
      console.error(text);
      return EXIT_USAGE;
    }
    console.log(text);
    return EXIT_OK;
  }
  if (name === '--version' || name === '-V' || name === 'version') {
    console.log(version());
    return EXIT_OK;
  }
  const load = COMMANDS[name];
  if (load === undefined) {
    console.error(`cloister: unknown command '${name}'\n\n${await usage()}`);
    return EXIT_USAGE;
  }
  const command = await load();
  try {
    return await command.run(rest);
  } catch (err) {
    if (isUsageError(err)) {
      const message = err instanceof Error ? err.message : String(err);
      console.error(`cloister ${name}: ${message}${message.includes('usage:') ? '' : `\n(run 'cloister ${name} --help' for usage)`}`);
      return EXIT_USAGE;
    }
    throw err;
  }
}

quietOnClosedPipe(process.stdout);
quietOnClosedPipe(process.stderr);

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof CloisterError) {
      console.error(`cloister: ${err.code}: ${err.message}`);
    } else {
      console.error(`cloister: INTERNAL: ${err instanceof Error ? err.message : String(err)}`);
    }
    process.exitCode = EXIT_FAILURE;
  },
);
