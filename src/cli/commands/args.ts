/** A small strict argument parser shared by the commands in this folder. */
import { CloisterError } from '../../errors.js';

export interface ArgSpec {
  /** Options taking a value; a name listed in `multi` may repeat. */
  readonly values: readonly string[];
  readonly multi?: readonly string[];
  readonly flags?: readonly string[];
}

export interface ParsedArgs {
  readonly values: ReadonlyMap<string, string[]>;
  readonly flags: ReadonlySet<string>;
}

export function parseArgs(argv: readonly string[], spec: ArgSpec): ParsedArgs {
  const values = new Map<string, string[]>();
  const flags = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (!arg.startsWith('--')) throw new CloisterError('INVALID_ARGUMENT', `unexpected argument '${arg}'`);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    if (spec.flags?.includes(name) === true || name === 'help') {
      if (eq !== -1) throw new CloisterError('INVALID_ARGUMENT', `--${name} takes no value`);
      flags.add(name);
      continue;
    }
    if (!spec.values.includes(name)) throw new CloisterError('INVALID_ARGUMENT', `unknown option --${name}`);
    let value: string | undefined;
    if (eq !== -1) value = arg.slice(eq + 1);
    else value = argv[++i];
    if (value === undefined) throw new CloisterError('INVALID_ARGUMENT', `--${name} needs a value`);
    const list = values.get(name) ?? [];
    if (list.length > 0 && spec.multi?.includes(name) !== true) throw new CloisterError('INVALID_ARGUMENT', `--${name} given twice`);
    list.push(value);
    values.set(name, list);
  }
  return { values, flags };
}

export function one(args: ParsedArgs, name: string): string | undefined {
  return args.values.get(name)?.[0];
}
