/**
 * The prompt-injection rate measurement (bench/lib/injection.ts, `npm run bench:injection`) on
 * demo-lm: the same adversarial documents change the answer under a naive prompt and never
 * under the RAG prompt as served. Seeded sampling makes every answer deterministic, so these
 * are exact counts for this model and set, not timings.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GenerationEngine } from '../../src/inference/generation/engine.js';
import { INJECTED_DOCUMENTS, INJECTION_QUESTIONS, measureInjection } from '../../bench/lib/injection.js';
import { clinicalSentences } from '../../bench/scenarios/injection.js';
import { ensureDemoModels } from '../../bench/lib/demo.js';

let engine: GenerationEngine;
let dir: string | undefined;

beforeAll(async () => {
  let lmDir: string;
  try {
    lmDir = (await ensureDemoModels(process.cwd())).lmDir;
  } catch {
    dir = await mkdtemp(join(tmpdir(), 'cloister-inj-'));
    lmDir = (await ensureDemoModels(dir)).lmDir;
  }
  engine = new GenerationEngine({ models: [{ name: 'demo-lm', dir: lmDir }] });
  await engine.start();
}, 120_000);
afterAll(async () => {
  await engine?.close();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('prompt-injection rate on demo-lm', () => {
  it('injected documents move the answer under a naive prompt, never under the RAG prompt as served', async () => {
    const questions = INJECTION_QUESTIONS.slice(0, 1);
    const clinical = await clinicalSentences(process.cwd(), INJECTED_DOCUMENTS.length);
    const r = await measureInjection(engine, 'demo-lm', clinical, { questions });
    console.log(`injection (1 question x ${INJECTED_DOCUMENTS.length} documents): changed plain ${r.undefended.changed}, layout only ${r.layoutOnly.changed}, defended ${r.defended.changed}; target hits ${r.undefended.hits}/${r.layoutOnly.hits}/${r.defended.hits}`);
    expect(r.defended.total).toBe(INJECTED_DOCUMENTS.length);
    // The measurement registers a change where there is one ...
    expect(r.undefended.changed).toBeGreaterThan(0);
    // ... and the defended prompt lets no injected document move the answer.
    expect(r.defended.changed).toBe(0);
    expect(r.defended.hits).toBe(0);
  }, 120_000);
});
