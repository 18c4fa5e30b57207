import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import { buildDemoModels } from '../../tools/demo-model/build.js';
import { OnnxEngine } from '../../src/inference/onnx/engine.js';
import type { Engine } from '../../src/inference/types.js';
import { startTestServer } from './helpers.js';
import type { TestServer } from './helpers.js';

async function inProcess(engine: Engine, op: 'classify' | 'embed', model: string, input: string | string[]): Promise<unknown> {
  const out: unknown[] = [];
  for await (const c of engine.run({ op, model, input, params: {}, stream: false }, { signal: new AbortController().signal })) out.push(c);
  expect(out).toHaveLength(1);
  return out[0];
}

describe('the real demo models through the sealed channel', () => {
  let dir: string;
  let engine: OnnxEngine;
  let t: TestServer;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cloister-demo-'));
    const built = await buildDemoModels({ outDir: dir });
    engine = new OnnxEngine({
      models: [
        { name: 'classifier', dir: built.classifierDir },
        { name: 'embedder', dir: built.embedderDir, task: 'feature-extraction' },
      ],
    });
    await engine.start();
    t = await startTestServer({ engines: [engine] });
  }, 180_000);
  afterAll(async () => {
    await t.close();
    await engine.close();
    await rm(dir, { recursive: true, force: true });
  });

  const notes = [
    'Patient reports crushing chest pain radiating to the left arm; troponin elevated.',
    'Follow-up after chemotherapy cycle 3, tolerating well, tumor markers decreasing.',
    'Worsening headaches and left-sided weakness; MRI ordered to rule out stroke.',
  ];

  for (const kind of ['ws', 'http'] as const) {
    it(`classify and embed over ${kind} equal the in-process engine`, async () => {
      const c = await connect(kind === 'ws' ? t.wsUrl : t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
      try {
        expect(c.models().map((m) => m.name).sort()).toEqual(['classifier', 'embedder']);
        for (const note of notes) {
          expect(await c.classify(note)).toEqual(await inProcess(engine, 'classify', 'classifier', note));
        }
        expect(await c.embed(notes)).toEqual(await inProcess(engine, 'embed', 'embedder', notes));
      } finally {
        await c.close();
      }
    });
  }
});
