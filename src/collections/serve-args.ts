/**
 * `cloister serve` options for sealed collections and the output guard (docs/CONFIG.md):
 *   --collections DIR              serve sealed collections stored in DIR (host disk)
 *   --collections-key-file FILE    the 32-byte storage master key (64 hex digits); required
 *                                  with --collections until the key broker releases it
 *   --collections-embedder NAME    the embedder model (default: the first --embedder)
 *   --guard-policy allow|redact|block   the output guard's policy for every answer (default redact)
 */
import { CloisterError } from '../errors.js';
import type { Engine } from '../inference/types.js';
import { DEFAULT_GUARD_POLICY, isGuardPolicy } from '../guard/policy.js';
import type { GuardPolicy } from '../guard/policy.js';
import { CollectionsEngine } from './engine.js';
import { KeyFileStorageKeys } from './keys.js';
import type { LoadReport } from './store.js';

export const COLLECTIONS_SERVE_FLAGS: readonly string[] = ['collections', 'collections-key-file', 'collections-embedder', 'guard-policy'];

export const COLLECTIONS_SERVE_USAGE = `Collections and the output guard (docs/COLLECTIONS.md, docs/GUARD.md):
  --collections DIR              serve sealed document collections stored (encrypted) in DIR
  --collections-key-file FILE    storage master key: 64 hex digits (head -c 32 /dev/urandom | xxd -p -c 64);
                                 readable by the host operator: the key broker replaces it (said at start)
  --collections-embedder NAME    embedder model for collections (default: the first --embedder)
  --guard-policy allow|redact|block  PHI/PII guard on every answer (default redact)`;

export function guardPolicyArg(text: string | undefined): GuardPolicy {
  if (text === undefined) return DEFAULT_GUARD_POLICY;
  if (!isGuardPolicy(text)) throw new CloisterError('CONFIG_INVALID', '--guard-policy must be allow, redact or block');
  return text;
}

/** The collections engine the flags ask for (not started), or undefined. */
export async function collectionsFromArgs(
  arg: (name: string) => string | undefined,
  engines: readonly Engine[],
  defaultEmbedder: string | undefined,
  onLoad?: (report: LoadReport) => void,
): Promise<CollectionsEngine | undefined> {
  const dir = arg('collections');
  const keyFile = arg('collections-key-file');
  if (dir === undefined) {
    if (keyFile !== undefined || arg('collections-embedder') !== undefined) throw new CloisterError('CONFIG_INVALID', '--collections-key-file and --collections-embedder need --collections');
    return undefined;
  }
  if (keyFile === undefined) throw new CloisterError('CONFIG_INVALID', '--collections needs --collections-key-file (the storage master key)');
  const embedder = arg('collections-embedder') ?? defaultEmbedder;
  if (embedder === undefined) throw new CloisterError('CONFIG_INVALID', '--collections needs an embedder: --embedder NAME=DIR (or --collections-embedder NAME)');
  const keys = await KeyFileStorageKeys.fromFile(keyFile);
  return new CollectionsEngine({ dir, keys, embedder, engines, ...(onLoad === undefined ? {} : { onLoad }) });
}

/** The loud start-up lines for a key that the host can read. */
export function storageKeyWarning(keyFile: string): string[] {
  return [
    'WARNING: collections are sealed under a storage key read from an operator file',
    `(${keyFile}). Whoever can read that file on the host can decrypt the collections.`,
    'Until the key broker releases the key only to an attested TEE, treat the key file as',
    'the collections themselves.',
  ];
}
