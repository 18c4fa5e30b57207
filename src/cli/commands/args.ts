/**
 * The commands' argument parsing: node:util parseArgs (strict, no positionals) from a small
 * spec, its errors as UsageError, plus the CLOISTER_* environment fallbacks (`withEnv`).
 */
import { parseArgs as parseNodeArgs } from 'node:util';
import { CloisterError } from '../../errors.js';

/**
 * A usage error: a bad flag, a missing option, an invalid value from the command line or a
 * CLOISTER_* environment variable. `cloister` exits 2 on it (1 is a runtime failure).
 */
export class UsageError extends CloisterError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message);
    this.name = 'UsageError';
  }
}

interface ArgSpec {
  /** Options taking a value; a name listed in `multi` may repeat. */
  readonly values: readonly string[];
  readonly multi?: readonly string[];
  readonly flags?: readonly string[];
}

export interface ParsedArgs {
  readonly values: ReadonlyMap<string, string[]>;
  readonly flags: ReadonlySet<string>;
}

type NodeOptions = Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }>;

/**
 * `--name value` / `--name=value` for the `values`, `--flag` for the `flags` (and `--help`,
 * `-h` always). Unknown options, positionals, a missing value, a value on a flag and a
 * non-`multi` option given twice are UsageErrors.
 */
export function parseArgs(argv: readonly string[], spec: ArgSpec): ParsedArgs {
  const options: NodeOptions = { help: { type: 'boolean', short: 'h' } };
  for (const name of spec.flags ?? []) options[name] = { type: 'boolean' };
  for (const name of spec.values) options[name] = { type: 'string', multiple: true };
  let parsed: ReturnType<typeof parseNodeArgs>;
  try {
    parsed = parseNodeArgs({ args: [...argv], options, strict: true, allowPositionals: false });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
  const values = new Map<string, string[]>();
  const flags = new Set<string>();
  for (const [name, value] of Object.entries(parsed.values)) {
    if (value === true) flags.add(name);
    else if (Array.isArray(value)) {
      const list = value.filter((v): v is string => typeof v === 'string');
      if (list.length > 1 && spec.multi?.includes(name) !== true) throw new UsageError(`--${name} given twice`);
      values.set(name, list);
    }
  }
  return { values, flags };
}

export function one(args: ParsedArgs, name: string): string | undefined {
  return args.values.get(name)?.[0];
}

/** The environment variable for an option: `--state-dir` is CLOISTER_STATE_DIR. */
function envNameOf(option: string): string {
  return `CLOISTER_${option.toUpperCase().replace(/-/g, '_')}`;
}

interface EnvMerged extends ParsedArgs {
  /** Options whose value came from the environment (not given as a flag). */
  readonly fromEnv: ReadonlySet<string>;
  /** Rewrites `--name` in a message to the environment variable it came from. */
  label(message: string): string;
}

/**
 * Adds CLOISTER_* environment variables for the value options not given as flags: flags
 * override the environment. An option listed in `multi` takes a comma-separated list. An
 * empty variable counts as unset.
 */
export function withEnv(
  args: ParsedArgs,
  spec: ArgSpec,
  env: Readonly<Record<string, string | undefined>>,
  /** Groups of options that exclude each other: a flag of the group hides the others' variables. */
  exclusive: readonly (readonly string[])[] = [],
): EnvMerged {
  const values = new Map(args.values);
  const fromEnv = new Set<string>();
  for (const name of spec.values) {
    if (values.has(name)) continue;
    if (exclusive.some((g) => g.includes(name) && g.some((o) => args.values.has(o)))) continue;
    const raw = env[envNameOf(name)];
    if (raw === undefined || raw === '') continue;
    const list = spec.multi?.includes(name) === true ? raw.split(',').map((v) => v.trim()).filter((v) => v !== '') : [raw];
    if (list.length === 0) continue;
    values.set(name, list);
    fromEnv.add(name);
  }
  const label = (message: string): string =>
    message.replace(/--([a-z][a-z0-9-]*)/g, (m, name: string) => (fromEnv.has(name) ? `${envNameOf(name)} (environment)` : m));
  return { values, flags: args.flags, fromEnv, label };
}

/** `--at TIME`: ISO 8601 with an explicit zone only (a local-time reading would depend on the machine); undefined when absent. */
export function parseAtOption(text: string | undefined): Date | undefined {
  if (text === undefined) return undefined;
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})$/.test(text)) {
    throw new UsageError('--at must be an ISO 8601 time with a zone, e.g. 2026-01-15T12:00:00Z');
  }
  const at = new Date(text);
  if (!Number.isFinite(at.getTime())) throw new UsageError('--at is not a valid time');
  return at;
}
