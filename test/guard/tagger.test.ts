/**
 * The guard's tagger model (src/guard/tagger.ts) with the demo PHI tagger
 * (tools/demo-model/phi.ts) on the real ONNX engine: it finds names and unlabelled
 * identifiers the rules miss; the guard redacts them as [NAME] / [ID], blocks under `block`,
 * counts them in the report, and does the same on a stream split anywhere.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OnnxEngine } from '../../src/inference/onnx/engine.js';
import { detectIdentifiers } from '../../src/guard/rules.js';
import { engineTagger, TAGGER_WINDOW_WORDS } from '../../src/guard/tagger.js';
import type { Tagger } from '../../src/guard/tagger.js';
import { guardResults } from '../../src/guard/output.js';
import type { Engine } from '../../src/inference/types.js';
import { loadClinicalNotes } from '../../tools/demo-model/dataset.js';
import { writePhiTagger } from '../../tools/demo-model/phi.js';
import { codeOfAsync } from '../helpers/errors.js';

const signal = new AbortController().signal;
let dir: string;
let engine: OnnxEngine;
let tagger: Tagger;
let heldOutNameRecall = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cloister-phi-'));
  const started = performance.now();
  const built = await writePhiTagger(join(dir, 'phi-tagger'), await loadClinicalNotes(), 'test');
  heldOutNameRecall = built.heldOutNameRecall;
  // Builds in seconds (the brief for npm start); not a speed assertion, a sanity bound.
  expect(performance.now() - started).toBeLessThan(30_000);
  engine = new OnnxEngine({ models: [{ name: 'phi-tagger', dir: built.dir }] });
  await engine.start();
  tagger = engineTagger(engine, 'phi-tagger');
}, 120_000);
afterAll(async () => {
  await engine?.close();
  await rm(dir, { recursive: true, force: true });
});

const spans = (text: string, fs: readonly { type: string; start: number; end: number }[]): string[] => fs.map((f) => `${f.type}:${text.slice(f.start, f.end)}`);

describe('demo PHI tagger', () => {
  it('is served as a token-classification model and recalls most held-out names', () => {
    expect(engine.models()[0]?.operations).toContain('token-classify');
    expect(heldOutNameRecall).toBeGreaterThan(0.8);
  });

  it('finds a name and an unlabelled identifier the rules miss, with exact spans', async () => {
    const text = 'Patient Maria Lopez reports chest pain. Discussed with Dr. Okafor; insurance id XK48213 on file.';
    expect(detectIdentifiers(text)).toEqual([]);
    expect(spans(text, await tagger(text, signal))).toEqual(['NAME:Maria Lopez', 'NAME:Okafor', 'ID:XK48213']);
  });

  it('finds a name it never saw, from its context', async () => {
    // "Zebulon" and "Quist" are in no list the model was built from: [UNK] after "Dr." / "patient".
    const text = 'Follow up with Dr. Quist next week. The patient Zebulon denies fever.';
    expect(spans(text, await tagger(text, signal))).toEqual(['NAME:Quist', 'NAME:Zebulon']);
  });

  it('leaves plain clinical text alone', async () => {
    const text = 'Exam notable for a harsh systolic murmur at the right upper sternal border. Plan: schedule a stress test and lipid panel.';
    expect(await tagger(text, signal)).toEqual([]);
  });

  it('places findings across window boundaries (texts longer than one model input)', async () => {
    const sentence = 'Exam notable for a harsh systolic murmur at the right upper sternal border.';
    const filler = Array.from({ length: Math.ceil((TAGGER_WINDOW_WORDS * 2) / 13) }, () => sentence).join(' ');
    const text = `${filler} seen with Dr. Okafor today. ${filler} Patient Maria Lopez again.`;
    expect(spans(text, await tagger(text, signal))).toEqual(['NAME:Okafor', 'NAME:Maria Lopez']);
  });
});

async function collect(it: AsyncIterable<unknown>): Promise<unknown[]> {
  const out: unknown[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function* source(values: unknown[]): AsyncGenerator<unknown> {
  for (const v of values) yield v;
}

describe('the guard with the tagger', () => {
  const answer = 'The note for Maria Lopez, SSN 123-45-6789, was signed by Dr. Okafor.';

  it('redact: names as [NAME] next to the rules, counted by type in the report', async () => {
    const g = guardResults('chat', false, source([{ choices: [{ index: 0, message: { role: 'assistant', content: answer } }] }]), 'redact', { tagger, signal });
    const [out] = (await collect(g.results)) as { choices: { message: { content: string } }[] }[];
    expect(out?.choices[0]?.message.content).toBe('The note for [NAME], SSN [SSN], was signed by Dr. [NAME].');
    expect(g.report().guard).toEqual({ policy: 'redact', action: 'redacted', found: { SSN: 1, NAME: 2 } });
  });

  it('without the tagger the names go through (what the model adds)', async () => {
    const g = guardResults('chat', false, source([{ choices: [{ index: 0, message: { role: 'assistant', content: answer } }] }]), 'redact');
    const [out] = (await collect(g.results)) as { choices: { message: { content: string } }[] }[];
    expect(out?.choices[0]?.message.content).toContain('Maria Lopez');
  });

  it('block: a name alone blocks the answer (OUTPUT_BLOCKED)', async () => {
    const g = guardResults('chat', false, source([{ choices: [{ index: 0, message: { role: 'assistant', content: 'Ask Maria Lopez.' } }] }]), 'block', { tagger, signal });
    expect(await codeOfAsync(collect(g.results))).toBe('OUTPUT_BLOCKED');
    expect(g.report().guard).toMatchObject({ action: 'blocked', found: { NAME: 1 } });
  });

  it('a stream split anywhere releases no part of a name', async () => {
    const text = `${answer} Further notes follow here so the lookahead moves past everything above before the end of the answer.`;
    for (const size of [1, 3, 7, 16]) {
      const events: unknown[] = [];
      for (let i = 0; i < text.length; i += size) events.push({ choices: [{ index: 0, delta: { content: text.slice(i, i + size) }, finish_reason: null }] });
      events.push({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] });
      const g = guardResults('chat', true, source(events), 'redact', { tagger, signal });
      const out = (await collect(g.results)) as { choices: { delta?: { content?: string } }[] }[];
      const pieces = out.map((e) => e.choices[0]?.delta?.content ?? '');
      for (const p of pieces) for (const part of ['Maria', 'Lopez', 'Okafor']) expect(p).not.toContain(part);
      expect(pieces.join('')).toBe(text.replace('Maria Lopez', '[NAME]').replace('123-45-6789', '[SSN]').replace('Okafor', '[NAME]'));
      expect(g.report().guard.found).toEqual({ SSN: 1, NAME: 2 });
    }
  });

  it('a tagger whose tokens do not line up with the words fails the answer (ENGINE_FAILED), never redacts a wrong span', async () => {
    const liar: Engine = {
      kind: 'test',
      models: () => [],
      start: () => Promise.resolve(),
      close: () => Promise.resolve(),
      run: () => source([[[{ entity: 'NAME', score: 0.9, index: 1, word: 'somethingelse' }]]]),
    };
    expect(await codeOfAsync(engineTagger(liar, 'x')('Maria Lopez', signal))).toBe('ENGINE_FAILED');
  });
});

describe('serve --guard-tagger: the server runs the tagger on every answer', () => {
  /** A chat engine that answers with the user's text (stands in for a generative model). */
  const echo: Engine = {
    kind: 'echo',
    models: () => [{ name: 'echo', task: 'text-generation', operations: ['chat'], digest: new Uint8Array(32).fill(5) }],
    start: () => Promise.resolve(),
    close: () => Promise.resolve(),
    run: (req) => {
      const input = req.input as { messages: { content: string }[] };
      return source([{ object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: input.messages[0]?.content ?? '' }, finish_reason: 'stop' }] }]);
    },
  };

  it('a name in a chat answer is redacted and counted in the signed report; a server naming no such model refuses to start', async () => {
    const { startTestServer } = await import('../helpers/test-server.js');
    const { connect } = await import('../../src/client/client.js');
    const s = await startTestServer({ engines: [echo, engine], guardTagger: 'phi-tagger' });
    try {
      const client = await connect(s.httpUrl, { policy: s.policy, trustedRoots: s.trustedRoots });
      let report: unknown;
      const out: unknown[] = [];
      for await (const r of client.request({ op: 'chat', model: 'echo', input: { messages: [{ role: 'user', content: 'Please call Maria Lopez about the results.' }] }, onReport: (x) => (report = x) })) out.push(r);
      await client.close();
      expect(JSON.stringify(out)).toContain('Please call [NAME] about the results.');
      expect(JSON.stringify(out)).not.toContain('Lopez');
      expect(report).toMatchObject({ guard: { action: 'redacted', found: { NAME: 1 } } });
    } finally {
      await s.close();
    }
    const { CloisterError } = await import('../../src/errors.js');
    await expect(startTestServer({ engines: [echo, engine], guardTagger: 'echo' })).rejects.toThrow(CloisterError);
  });
});
