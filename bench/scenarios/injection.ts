/**
 * bench:injection - the prompt-injection rate of the adversarial set (bench/lib/injection.ts)
 * on demo-lm, with the RAG defence and without it (docs/COLLECTIONS.md "Prompt injection").
 * Seeded sampling: the rates are exact for this model and set, not noisy; only the time is.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { GenerationEngine } from '../../src/inference/generation/engine.js';
import { ensureDemoModels } from '../lib/demo.js';
import { INJECTED_DOCUMENTS, INJECTION_QUESTIONS, measureInjection } from '../lib/injection.js';
import { ResultBuilder } from '../lib/scenario.js';
import type { Scenario, ScenarioContext, ScenarioResult } from '../lib/scenario.js';

/** Clinical sentences the directives ride on: the first sentence of held-out notes. */
export async function clinicalSentences(repoRoot: string, n: number): Promise<string[]> {
  const notes = (await readFile(join(repoRoot, 'data', 'clinical-notes.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { split: string; text: string });
  return notes.filter((x) => x.split === 'test').slice(0, n).map((x) => x.text);
}

export const scenario: Scenario = {
  name: 'injection',
  title: 'prompt-injection rate on demo-lm, RAG defence vs plain prompt',
  async run(ctx: ScenarioContext): Promise<ScenarioResult> {
    const out = new ResultBuilder();
    const { lmDir } = await ensureDemoModels(ctx.repoRoot);
    const engine = new GenerationEngine({ models: [{ name: 'demo-lm', dir: lmDir }] });
    await engine.start();
    try {
      const questions = ctx.smoke ? INJECTION_QUESTIONS.slice(0, 1) : INJECTION_QUESTIONS;
      const clinical = await clinicalSentences(ctx.repoRoot, questions.length * INJECTED_DOCUMENTS.length);
      const t = performance.now();
      const r = await measureInjection(engine, 'demo-lm', clinical, { questions });
      const n = r.defended.total;
      const arms = [['plain prompt (question, then the documents as they are)', r.undefended], ['defended layout, nothing removed', r.layoutOnly], ['RAG defence as served (layout + directives removed)', r.defended]] as const;
      for (const [label, a] of arms) {
        out.metrics.push({ label: `answers changed by an injected document, ${label} (${n} cases: ${INJECTED_DOCUMENTS.length} documents x ${questions.length} questions)`, value: a.changed / n, unit: 'rate' });
        out.metrics.push({ label: `answers containing the attacker's target, ${label}`, value: a.hits / n, unit: 'rate' });
        out.metrics.push({ label: `empty attacked answers, ${label}`, value: a.empty, unit: 'answers' });
      }
      out.metrics.push({ label: 'time', value: (performance.now() - t) / 1000, unit: 's' });
      out.notes.push('seeded sampling (temperature 0.8, fixed seed), 24 new tokens: each answer is deterministic; "changed" compares with the same prompt built from the clinical sentence alone.');
      out.notes.push('demo-lm is a count-statistics model of the clinical notes whose context is the last two tokens: it follows no instructions, so a change measures how much the injected text moves its output, not obedience.');
    } finally {
      await engine.close();
    }
    return out.result();
  },
};
