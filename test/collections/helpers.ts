/** Fixtures for the collections tests: the demo embedder (built when models/demo lacks it), a key, a store directory. */
import { existsSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { buildDemoModels } from '../../tools/demo-model/build.js';
import { OnnxEngine } from '../../src/inference/onnx/engine.js';
import { KeyFileStorageKeys } from '../../src/collections/keys.js';

export const TEST_MASTER_KEY = new Uint8Array(32).fill(7);

/** The demo embedder's directory: the repository's models/demo when built, else a fresh build. */
export async function demoEmbedderDir(): Promise<string> {
  const local = resolve('models', 'demo', 'embedder');
  if (existsSync(join(local, 'onnx', 'model.onnx'))) return local;
  const dir = await mkdtemp(join(tmpdir(), 'cloister-demo-'));
  return (await buildDemoModels({ outDir: dir })).embedderDir;
}

export async function startEmbedder(): Promise<OnnxEngine> {
  const engine = new OnnxEngine({ models: [{ name: 'embedder', dir: await demoEmbedderDir(), task: 'feature-extraction' }] });
  await engine.start();
  return engine;
}

export function testKeys(): KeyFileStorageKeys {
  return KeyFileStorageKeys.fromBytes(TEST_MASTER_KEY);
}
