/**
 * `cloister serve` options for sealed collections and the output guard (docs/CONFIG.md):
 *   --collections DIR              serve sealed collections stored in DIR (host disk)
 *   --collections-key NAME         the storage key NAME, released by --key-broker to this TEE's
 *                                  evidence; its counters guard against rollback
 *   --collections-key-file FILE    fallback: the 32-byte storage master key (64 hex digits) in
 *                                  an operator file (the host can read it; no rollback counter)
 *   --collections-embedder NAME    the embedder model (default: the first --embedder)
 *   --guard-policy allow|redact|block   the output guard's policy for every answer (default redact)
 */
import { CloisterError } from '../errors.js';
import type { Engine } from '../inference/types.js';
import { DEFAULT_GUARD_POLICY, isGuardPolicy } from '../guard/policy.js';
import type { GuardPolicy } from '../guard/policy.js';
import { CollectionsEngine } from './engine.js';
import { KeyFileStorageKeys } from './keys.js';
import type { StorageKeySource } from './keys.js';
import { BrokerStorageKeys } from './broker-keys.js';
import type { OutboundOptions } from '../keys/outbound.js';
import type { Attester } from '../core/types.js';
import { KEY_NAME_PATTERN } from '../keys/release.js';
import type { LoadReport } from './store.js';

export const COLLECTIONS_SERVE_FLAGS: readonly string[] = ['collections', 'collections-key', 'collections-key-file', 'collections-embedder', 'guard-policy', 'guard-tagger'];

export const COLLECTIONS_SERVE_USAGE = `Collections and the output guard (docs/COLLECTIONS.md, docs/GUARD.md):
  --collections DIR              serve sealed document collections stored (encrypted) in DIR
  --collections-key NAME         the storage key, released by --key-broker URL to this TEE's evidence
                                 (cloister keys register NAME --kind storage); the broker also keeps
                                 the collections' rollback counters
  --collections-key-file FILE    fallback: storage master key, 64 hex digits (head -c 32 /dev/urandom | xxd -p -c 64);
                                 readable by the host operator, no rollback counter (said at start)
  --collections-embedder NAME    embedder model for collections (default: the first --embedder)
  --guard-policy allow|redact|block  PHI/PII guard on every answer (default redact)
  --guard-tagger NAME            a token-classification model served here (--model NAME=DIR, e.g. the demo
                                 phi-tagger) whose NAME and ID findings the guard adds to its rules'`;

export function guardPolicyArg(text: string | undefined): GuardPolicy {
  if (text === undefined) return DEFAULT_GUARD_POLICY;
  if (!isGuardPolicy(text)) throw new CloisterError('CONFIG_INVALID', '--guard-policy must be allow, redact or block');
  return text;
}

/** The key broker that releases the storage key (serve's --key-broker and its attester). */
export interface CollectionsKeyBroker {
  readonly url: string | undefined;
  readonly attester: () => Promise<Attester>;
  /** serve --egress: how the broker is reached (src/keys/outbound.ts); default directly. */
  readonly outbound?: OutboundOptions;
}

/** Checks the collections flags without reading anything (parse time: usage errors). */
export function checkCollectionsArgs(arg: (name: string) => string | undefined, keyBroker: string | undefined): void {
  const given = ['collections-key', 'collections-key-file', 'collections-embedder'].filter((f) => arg(f) !== undefined);
  if (arg('collections') === undefined) {
    if (given.length > 0) throw new CloisterError('CONFIG_INVALID', `--${given[0] ?? ''} needs --collections`);
    return;
  }
  const name = arg('collections-key');
  const keyFile = arg('collections-key-file');
  if (name !== undefined && keyFile !== undefined) throw new CloisterError('CONFIG_INVALID', 'give --collections-key (key broker) or --collections-key-file, not both');
  if (name === undefined && keyFile === undefined) {
    throw new CloisterError('CONFIG_INVALID', '--collections needs its storage key: --collections-key NAME with --key-broker URL, or (fallback) --collections-key-file FILE');
  }
  if (name !== undefined && !KEY_NAME_PATTERN.test(name)) throw new CloisterError('CONFIG_INVALID', '--collections-key must be a key name (1..64 of A-Z a-z 0-9 . _ -)');
  if (name !== undefined && keyBroker === undefined) throw new CloisterError('CONFIG_INVALID', '--collections-key needs --key-broker URL');
}

/** The collections engine the flags ask for (not started), or undefined. */
export async function collectionsFromArgs(
  arg: (name: string) => string | undefined,
  engines: readonly Engine[],
  defaultEmbedder: string | undefined,
  onLoad?: (report: LoadReport) => void,
  broker?: CollectionsKeyBroker,
): Promise<CollectionsEngine | undefined> {
  checkCollectionsArgs(arg, broker?.url);
  const dir = arg('collections');
  if (dir === undefined) return undefined;
  const embedder = arg('collections-embedder') ?? defaultEmbedder;
  if (embedder === undefined) throw new CloisterError('CONFIG_INVALID', '--collections needs an embedder: --embedder NAME=DIR (or --collections-embedder NAME)');
  const name = arg('collections-key');
  const keyFile = arg('collections-key-file');
  let keys: StorageKeySource;
  if (name !== undefined && broker?.url !== undefined) {
    keys = await BrokerStorageKeys.open({ brokerUrl: broker.url, key: name, attester: await broker.attester(), ...(broker.outbound === undefined ? {} : { outbound: broker.outbound }) });
  } else if (keyFile !== undefined) {
    keys = await KeyFileStorageKeys.fromFile(keyFile);
  } else {
    throw new CloisterError('CONFIG_INVALID', '--collections needs --collections-key NAME with --key-broker URL, or --collections-key-file FILE');
  }
  return new CollectionsEngine({ dir, keys, embedder, engines, ...(onLoad === undefined ? {} : { onLoad }) });
}

/** The loud start-up lines for a key that the host can read. */
export function storageKeyWarning(keyFile: string): string[] {
  return [
    'WARNING: collections are sealed under a storage key read from an operator file',
    `(${keyFile}). Whoever can read that file on the host can decrypt the collections.`,
    'There is no rollback counter either: the host can put back an older copy of a collection.',
    'Use --collections-key NAME --key-broker URL (the key is released only to an attested TEE,',
    'and the broker keeps rollback counters); until then treat the key file as the collections.',
  ];
}
