import { randomBytes } from 'node:crypto';
import { open, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { CloisterError } from '../../src/errors.js';
import { buildDemoModels } from '../../tools/demo-model/build.js';
import { modelDigest } from '../../src/inference/onnx/digest.js';
import { OnnxEngine } from '../../src/inference/onnx/engine.js';
import type { EngineRequest } from '../../src/inference/types.js';
import { encodeManifest, manifestMac, parseManifest } from '../../src/inference/sealed-model/format.js';
import type { Manifest } from '../../src/inference/sealed-model/format.js';
import { sealModelDirectory } from '../../src/inference/sealed-model/seal.js';
import { readManifest, unsealModel } from '../../src/inference/sealed-model/unseal.js';

let MODEL: string;
const WRAP = { kind: 'key-broker', key: 'demo', version: 1 } as const;
let root: string;
let sealed: string;
let dataKey: Uint8Array;

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) out.push(join(e.parentPath, e.name));
  return out;
}

async function copySealed(name: string): Promise<string> {
  const { cp } = await import('node:fs/promises');
  const dir = join(root, name);
  await cp(sealed, dir, { recursive: true });
  return dir;
}

async function codeOf(p: Promise<unknown>): Promise<CloisterError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CloisterError);
  return err as CloisterError;
}

async function classify(e: OnnxEngine, model: string, text: string): Promise<unknown> {
  const request: EngineRequest = { op: 'classify', model, input: text, params: {}, stream: false };
  const out: unknown[] = [];
  for await (const c of e.run(request, { signal: new AbortController().signal })) out.push(c);
  return out[0];
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'cloister-sealed-'));
  MODEL = (await buildDemoModels({ outDir: join(root, 'models') })).classifierDir;
  sealed = join(root, 'sealed');
  dataKey = new Uint8Array(randomBytes(32));
  // A small chunk size, so the 100 KB model file spans many chunks.
  await sealModelDirectory({ modelDir: MODEL, outDir: sealed, dataKey, wrapping: WRAP, chunkBytes: 4096 });
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('sealed model: seal', () => {
  it('records the plaintext model digest, and no 4 KiB block of plaintext appears in any sealed file', async () => {
    const m = await readManifest(sealed);
    expect(m.modelDigest).toBe(Buffer.from(await modelDigest(MODEL)).toString('hex'));
    const sealedBytes = await Promise.all((await filesUnder(sealed)).map((f) => readFile(f)));
    for (const f of await filesUnder(MODEL)) {
      const plain = await readFile(f);
      for (let off = 0; off + 4096 <= plain.length; off += 4096) {
        const block = plain.subarray(off, off + 4096);
        for (const s of sealedBytes) expect(s.includes(block)).toBe(false);
      }
      // Small files too: no 64-byte window of them shows up.
      if (plain.length >= 64) for (const s of sealedBytes) expect(s.includes(plain.subarray(0, 64))).toBe(false);
    }
  });

  it('refuses a non-empty output directory and a data key of the wrong length', async () => {
    expect((await codeOf(sealModelDirectory({ modelDir: MODEL, outDir: sealed, dataKey, wrapping: WRAP }))).code).toBe('CONFIG_INVALID');
    expect((await codeOf(sealModelDirectory({ modelDir: MODEL, outDir: join(root, 'x'), dataKey: new Uint8Array(16), wrapping: WRAP }))).code).toBe('INVALID_ARGUMENT');
  });

  it('the manifest parser rejects unknown fields and unsafe paths', async () => {
    const m = JSON.parse(await readFile(join(sealed, 'manifest.json'), 'utf8')) as Record<string, unknown>;
    expect(() => parseManifest(Buffer.from(JSON.stringify({ ...m, extra: 1 })))).toThrow(/unknown field/);
    const files = m['files'] as Record<string, unknown>[];
    const bad = { ...m, files: [{ ...files[0], path: '../etc/passwd' }] };
    expect(() => parseManifest(Buffer.from(JSON.stringify(bad)))).toThrow(/unsafe file path/);
  });
});

describe('sealed model: unseal', () => {
  it('opens in memory to exactly the plaintext files', async () => {
    const m = await readManifest(sealed);
    const u = await unsealModel(sealed, m, dataKey);
    for (const f of m.files) expect(Buffer.compare(Buffer.from(u.files.get(f.path) ?? []), await readFile(join(MODEL, f.path)))).toBe(0);
  });

  it('a wrong key is SEALED_MODEL_KEY_MISMATCH naming the manifest', async () => {
    const err = await codeOf(unsealModel(sealed, await readManifest(sealed), new Uint8Array(randomBytes(32))));
    expect(err.code).toBe('SEALED_MODEL_KEY_MISMATCH');
    expect(err.message).toContain('manifest.json');
  });

  it('a flipped byte is SEALED_MODEL_TAMPERED naming the file and chunk', async () => {
    const dir = await copySealed('tampered');
    const target = join(dir, 'data', 'onnx', 'model.onnx');
    const fh = await open(target, 'r+');
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, 5000);
    b[0] = (b[0] ?? 0) ^ 1;
    await fh.write(b, 0, 1, 5000);
    await fh.close();
    const err = await codeOf(unsealModel(dir, await readManifest(dir), dataKey));
    expect(err.code).toBe('SEALED_MODEL_TAMPERED');
    expect(err.message).toContain(target);
    expect(err.detail?.['chunk']).toBe(1);
  });

  it('two chunks swapped within a file are SEALED_MODEL_TAMPERED', async () => {
    const dir = await copySealed('swapped');
    const target = join(dir, 'data', 'onnx', 'model.onnx');
    const bytes = await readFile(target);
    const n = 4096 + 16;
    const swapped = Buffer.concat([bytes.subarray(n, 2 * n), bytes.subarray(0, n), bytes.subarray(2 * n)]);
    await writeFile(target, swapped);
    expect((await codeOf(unsealModel(dir, await readManifest(dir), dataKey))).code).toBe('SEALED_MODEL_TAMPERED');
  });

  it('a truncated file, a file cut at a chunk boundary, and an extended file are SEALED_MODEL_TRUNCATED', async () => {
    const dir = await copySealed('truncated');
    const target = join(dir, 'data', 'onnx', 'model.onnx');
    const size = (await stat(target)).size;
    await truncate(target, 4096 + 16);
    let err = await codeOf(unsealModel(dir, await readManifest(dir), dataKey));
    expect(err.code).toBe('SEALED_MODEL_TRUNCATED');
    expect(err.message).toContain(target);
    expect(err.message).toContain(String(size));
    await writeFile(target, Buffer.concat([await readFile(join(sealed, 'data', 'onnx', 'model.onnx')), Buffer.of(0)]));
    err = await codeOf(unsealModel(dir, await readManifest(dir), dataKey));
    expect(err.code).toBe('SEALED_MODEL_TRUNCATED');
    await rm(target);
    expect((await codeOf(unsealModel(dir, await readManifest(dir), dataKey))).code).toBe('SEALED_MODEL_TRUNCATED');
  });

  it('a manifest changed without the key (a file dropped) is SEALED_MODEL_KEY_MISMATCH', async () => {
    const dir = await copySealed('dropped');
    const m = await readManifest(dir);
    await writeFile(join(dir, 'manifest.json'), encodeManifest({ ...m, files: m.files.filter((f) => f.path !== 'tokenizer_config.json') }));
    expect((await codeOf(unsealModel(dir, await readManifest(dir), dataKey))).code).toBe('SEALED_MODEL_KEY_MISMATCH');
  });

  it('a manifest (by the key holder) recording another digest is SEALED_MODEL_DIGEST_MISMATCH naming the directory', async () => {
    const dir = await copySealed('digest');
    const m = await readManifest(dir);
    const body: Omit<Manifest, 'mac'> = { format: m.format, modelDigest: '00'.repeat(32), chunkBytes: m.chunkBytes, files: m.files, wrapping: m.wrapping };
    await writeFile(join(dir, 'manifest.json'), encodeManifest({ ...body, mac: manifestMac(body, dataKey) }));
    const err = await codeOf(unsealModel(dir, await readManifest(dir), dataKey));
    expect(err.code).toBe('SEALED_MODEL_DIGEST_MISMATCH');
    expect(err.message).toContain(dir);
  });
});

describe('sealed model: served from memory', () => {
  it('an engine loads the unsealed model from memory, with the same digest and the same answers as the plaintext model', async () => {
    const m = await readManifest(sealed);
    const u = await unsealModel(sealed, m, dataKey);
    const virtual = join(root, 'virtual-not-on-disk', 'classifier');
    const mem = new OnnxEngine({ models: [{ name: 'c', dir: virtual, files: u.files }] });
    const disk = new OnnxEngine({ models: [{ name: 'c', dir: MODEL }] });
    await mem.start();
    await disk.start();
    try {
      expect(Buffer.from(mem.models()[0]?.digest ?? []).toString('hex')).toBe(m.modelDigest);
      // The decrypted bytes are zeroed once the engine has started (what serve does): the
      // engine answers from its own copies.
      const files = u.files as Map<string, Uint8Array>;
      for (const b of files.values()) b.fill(0);
      for (const text of ['chest pain radiating to the left arm', 'itchy rash on both forearms']) {
        expect(await classify(mem, 'c', text)).toEqual(await classify(disk, 'c', text));
      }
    } finally {
      await mem.close();
      await disk.close();
    }
  });
});
