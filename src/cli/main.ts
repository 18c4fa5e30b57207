#!/usr/bin/env node
/**
 * The `cloister` command. Each subcommand lives in `commands/<name>.ts` and exports
 * `run(argv: string[]): Promise<number>` (the exit code) plus a one-line `summary`.
 * Add a subcommand by adding one line to COMMANDS.
 */
import { CloisterError } from '../errors.js';

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
};

function usage(): string {
  const lines = ['usage: cloister <command> [options]', '', 'commands:'];
  for (const name of Object.keys(COMMANDS).sort()) lines.push(`  ${name}`);
  lines.push('', "run 'cloister <command> --help' for a command's options");
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name === undefined ? 2 : 0;
  }
  const load = COMMANDS[name];
  if (load === undefined) {
    console.error(`cloister: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  const command = await load();
  return command.run(rest);
}

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
    process.exitCode = 1;
  },
);
