/**
 * Loads @huggingface/transformers (lazily: it pulls in the ONNX Runtime native binding) and
 * locks its process-wide `env` to local files only, before any model is touched.
 *
 * What transformers.js 4.x does with these settings (src/utils/hub.js, loadResourceFile):
 * - a model id that is an absolute path is not a valid Hub id, so it is read verbatim from
 *   disk (`env.localModelPath` is not prefixed);
 * - a file missing locally with `allowRemoteModels = false` / `local_files_only` fails with
 *   "file was not found locally" instead of a Hub download;
 * - the file-system cache is consulted BEFORE the local path, so it is switched off: a
 *   stale cached file must never stand in for the measured model file; the one cache left
 *   is the in-memory one below, holding only models unsealed in this process (sealed models);
 * - `env.fetch` is replaced by a function that always rejects, so no code path in the library
 *   can reach the network even if a setting above is bypassed;
 * - logging is off (`LogLevel.NONE`, which also lowers ONNX Runtime's): the library prints
 *   runtime errors that can quote input-derived values (e.g. token ids out of range), and
 *   nothing about request content may reach a log. Errors still reach us as exceptions.
 */
import type * as Transformers from '@huggingface/transformers';

export type TransformersModule = typeof Transformers;

let loaded: Promise<TransformersModule> | undefined;

function refuseNetwork(): Promise<never> {
  return Promise.reject(new Error('network access is disabled in Cloister'));
}

function lockDownEnv(mod: TransformersModule, localModelPath: string): void {
  const { env } = mod;
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = localModelPath;
  env.useFS = true;
  env.useFSCache = false;
  env.useBrowserCache = false;
  // The only cache: models unsealed in memory (registerMemoryModel), keyed by virtual paths
  // that exist nowhere on disk; every other key misses and is read from the local path.
  env.useCustomCache = true;
  env.customCache = memoryCache;
  env.fetch = refuseNetwork;
  env.logLevel = mod.LogLevel.NONE;
}

/** Virtual absolute path -> plaintext bytes of a model unsealed in memory (src/inference/sealed-model). */
const memoryFiles = new Map<string, Uint8Array>();

/**
 * The bytes for a cache key: transformers.js looks a file up under its local path first and,
 * after a hit, once more under its "remote" key (remoteHost/<model id>/resolve/<rev>/<file>,
 * never fetched here: the network is refused), so both forms of a registered path answer.
 */
function memoryLookup(key: string): Uint8Array | undefined {
  const direct = memoryFiles.get(key);
  if (direct !== undefined) return direct;
  const m = /^[a-z]+:\/\/[^/]+\/+(.*)\/resolve\/[^/]+\/(.+)$/.exec(key);
  if (m === null) return undefined;
  return memoryFiles.get(`/${m[1] ?? ''}/${m[2] ?? ''}`.replace(/\/+/g, '/'));
}

const memoryCache = {
  match(key: string): Promise<Response | undefined> {
    const bytes = memoryLookup(key);
    return Promise.resolve(bytes === undefined ? undefined : new Response(bytes, { status: 200, headers: { 'content-length': String(bytes.byteLength) } }));
  },
  put(): Promise<void> {
    // Nothing is ever written to this cache: it serves the registered files only.
    return Promise.resolve();
  },
};

/**
 * Make the files of an in-memory model visible to transformers.js under the virtual
 * directory `dir` (an absolute path that must not exist on disk). Returns the function that
 * removes them again (call it once the pipeline has loaded).
 */
export function registerMemoryModel(dir: string, files: ReadonlyMap<string, Uint8Array>): () => void {
  const keys = [...files.keys()].map((rel) => `${dir}/${rel}`);
  files.forEach((bytes, rel) => memoryFiles.set(`${dir}/${rel}`, bytes));
  return () => {
    for (const k of keys) memoryFiles.delete(k);
  };
}

/** The transformers.js module with its environment locked down (idempotent). */
export function loadTransformers(localModelPath: string): Promise<TransformersModule> {
  loaded ??= import('@huggingface/transformers');
  return loaded.then((mod) => {
    lockDownEnv(mod, localModelPath);
    return mod;
  });
}
