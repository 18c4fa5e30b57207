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
 *   stale cached file must never stand in for the measured model file;
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
  env.useCustomCache = false;
  env.fetch = refuseNetwork;
  env.logLevel = mod.LogLevel.NONE;
}

/** The transformers.js module with its environment locked down (idempotent). */
export function loadTransformers(localModelPath: string): Promise<TransformersModule> {
  loaded ??= import('@huggingface/transformers');
  return loaded.then((mod) => {
    lockDownEnv(mod, localModelPath);
    return mod;
  });
}
