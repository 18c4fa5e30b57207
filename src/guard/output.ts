/**
 * The guard on every answer (docs/GUARD.md): wraps an engine's results before the server seals
 * them. Operations guarded: classify, generate, chat, completion, rag (GUARDED_OPERATIONS);
 * embeddings are numbers, token-classify answers are themselves a PHI tagger's output, and
 * collection operations return the capability holder's own stored documents.
 *
 * - Whole answers (not streamed): every string value is scanned and the policy applied,
 *   except structural keys (ids, object type, model, role, finish reason) and the `citations`
 *   / `retrieval` facts of a rag answer.
 * - Streamed answers (OpenAI chunk events, as JsonResults or values): the text of each
 *   choice (`delta.content`, `text`) goes through a StreamGuard (stream.ts) per choice and
 *   field; what is held back is released into the event that carries the choice's
 *   `finish_reason`, or into one event added at the end.
 * - ReportFacts values from an engine (retrieval facts, a collection's policy floor) are not
 *   results: they are collected for the `report` chunk and may tighten the policy.
 */
import type { Operation } from '../inference/types.js';
import { JsonResults } from '../protocol/messages.js';
import { CloisterError } from '../errors.js';
import { isRecord } from '../core/validate.js';
import { GuardTally, stricter } from './policy.js';
import type { GuardPolicy, GuardReport } from './policy.js';
import { detectIdentifiers, mergeFindings } from './rules.js';
import type { Finding } from './rules.js';
import type { Tagger } from './tagger.js';
import { StreamGuard } from './stream.js';
import type { StreamGuardOptions } from './stream.js';

export const GUARDED_OPERATIONS: ReadonlySet<Operation> = new Set<Operation>(['classify', 'generate', 'chat', 'completion', 'rag']);

/** Facts an engine hands to the report (never sent as a result). */
export class ReportFacts {
  readonly facts: Readonly<Record<string, unknown>>;
  /** A policy floor for the rest of this answer (a collection's policy). */
  readonly policy: GuardPolicy | undefined;
  constructor(facts: Readonly<Record<string, unknown>>, policy?: GuardPolicy) {
    this.facts = facts;
    this.policy = policy;
  }
}

const STRUCTURAL_KEYS: ReadonlySet<string> = new Set(['id', 'object', 'model', 'role', 'finish_reason', 'system_fingerprint', 'citations', 'retrieval', 'label']);

export interface GuardedResults {
  readonly results: AsyncIterable<unknown>;
  /** The guard's verdict and the engines' facts; complete once `results` ended. */
  report(): { readonly guard: GuardReport; readonly facts: Readonly<Record<string, unknown>> };
}


type Detect = (text: string) => Finding[] | Promise<Finding[]>;

/** A whole value with the policy applied to each of its strings (structural keys kept). */
async function guardValue(v: unknown, tally: GuardTally, detect: Detect, key?: string): Promise<unknown> {
  if (typeof v === 'string') return key !== undefined && STRUCTURAL_KEYS.has(key) ? v : tally.apply(v, await detect(v));
  if (Array.isArray(v)) {
    const out: unknown[] = [];
    for (const x of v) out.push(await guardValue(x, tally, detect, key));
    return out;
  }
  if (isRecord(v) && !(v instanceof Uint8Array)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = STRUCTURAL_KEYS.has(k) ? x : await guardValue(x, tally, detect, k);
    return out;
  }
  return v;
}

export interface GuardOptions extends StreamGuardOptions {
  /** A tagger model whose findings count next to the rules' (./tagger.ts; serve --guard-tagger). */
  readonly tagger?: Tagger;
  /** Cancels the tagger's model calls (the request's signal). */
  readonly signal?: AbortSignal;
}

export function guardResults(
  op: Operation,
  stream: boolean,
  results: AsyncIterable<unknown>,
  policy: GuardPolicy,
  options: GuardOptions = {},
): GuardedResults {
  const tally = new GuardTally(policy);
  const tagger = options.tagger;
  const signal = options.signal ?? new AbortController().signal;
  const detect: Detect = tagger === undefined ? detectIdentifiers : async (t) => mergeFindings([...detectIdentifiers(t), ...(await tagger(t, signal))]);
  const push = (g: StreamGuard, t: string): string | Promise<string> => (tagger === undefined ? g.push(t) : g.pushTagged(t, tagger, signal));
  const finish = (g: StreamGuard): string | Promise<string> => (tagger === undefined ? g.finish() : g.finishTagged(tagger, signal));
  /** push (when `text` is a string) then finish (when `done`); synchronous without a tagger (no microtask per event). */
  const pushFinish = (g: StreamGuard, text: unknown, done: boolean): string | Promise<string> => {
    if (tagger === undefined) return (typeof text === 'string' ? g.push(text) : '') + (done ? g.finish() : '');
    return (async () => (typeof text === 'string' ? await push(g, text) : '') + (done ? await finish(g) : ''))();
  };
  const facts: Record<string, unknown> = {};
  const guarded = GUARDED_OPERATIONS.has(op);
  const guards = new Map<string, StreamGuard>();
  let lastEvent: Record<string, unknown> | undefined;
  let lastWasJson = false;

  const guardFor = (k: string): StreamGuard => {
    let g = guards.get(k);
    if (g === undefined) {
      g = new StreamGuard(tally, options);
      guards.set(k, g);
    }
    return g;
  };

  /**
   * One streamed chunk event with its choices' text guarded incrementally. `owned`: the event
   * was parsed here from relayed JSON, so it is changed in place instead of copied (no other
   * reference to it exists; an engine's own values are copied).
   */
  const guardEvent = async (ev: unknown, owned = false): Promise<unknown> => {
    if (!isRecord(ev) || !Array.isArray(ev['choices'])) return guardValue(ev, tally, detect);
    lastEvent = ev;
    const choices: unknown[] = [];
    for (const c of ev['choices'] as unknown[]) {
      if (!isRecord(c)) {
        choices.push(await guardValue(c, tally, detect));
        continue;
      }
      const index = typeof c['index'] === 'number' ? c['index'] : 0;
      const done = typeof c['finish_reason'] === 'string';
      const out: Record<string, unknown> = owned ? c : { ...c };
      const delta = c['delta'];
      if (isRecord(delta)) {
        const d: Record<string, unknown> = owned ? delta : { ...delta };
        for (const field of ['content', 'reasoning_content'] as const) {
          const g = typeof d[field] === 'string' || done ? guards.get(`${index}/${field}`) ?? (typeof d[field] === 'string' ? guardFor(`${index}/${field}`) : undefined) : undefined;
          if (g === undefined) continue;
          const p = pushFinish(g, d[field], done);
          const text = typeof p === 'string' ? p : await p;
          if (typeof d[field] === 'string' || text.length > 0) d[field] = text;
        }
        out['delta'] = d;
      }
      if (typeof c['text'] === 'string' || (done && guards.has(`${index}/text`))) {
        const g = guardFor(`${index}/text`);
        const p = pushFinish(g, c['text'], done);
        out['text'] = typeof p === 'string' ? p : await p;
      }
      if (done) for (const k of [...guards.keys()]) if (k.startsWith(`${index}/`)) guards.delete(k);
      choices.push(out);
    }
    if (owned) {
      for (const k of Object.keys(ev)) if (k !== 'choices' && !STRUCTURAL_KEYS.has(k)) ev[k] = await guardValue(ev[k], tally, detect, k);
      ev['choices'] = choices;
      return ev;
    }
    const rest: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(ev)) if (k !== 'choices') rest[k] = STRUCTURAL_KEYS.has(k) ? x : await guardValue(x, tally, detect, k);
    return { ...rest, choices };
  };

  /** What is still held when the stream ends, as one more event (undefined when nothing is). */
  const tail = async (): Promise<unknown> => {
    const choices: Record<string, unknown>[] = [];
    for (const [k, g] of guards) {
      const text = await finish(g);
      if (text.length === 0) continue;
      const [index, field] = k.split('/') as [string, string];
      choices.push(field === 'text' ? { index: Number(index), text, finish_reason: null } : { index: Number(index), delta: { [field]: text }, finish_reason: null });
    }
    guards.clear();
    if (choices.length === 0) return undefined;
    const base: Record<string, unknown> = {};
    for (const k of ['id', 'object', 'created', 'model']) if (lastEvent?.[k] !== undefined) base[k] = lastEvent[k];
    return { ...base, choices };
  };

  async function* run(): AsyncGenerator<unknown> {
    for await (const r of results) {
      if (r instanceof ReportFacts) {
        Object.assign(facts, r.facts);
        if (r.policy !== undefined) tally.tighten(r.policy);
        continue;
      }
      if (!guarded) {
        yield r;
        continue;
      }
      if (tally.policy === 'allow') {
        // allow: counted, relayed untouched (no hold-back, the relay's JSON text as it came).
        const texts = r instanceof JsonResults ? r.texts : [JSON.stringify(r) ?? ''];
        for (const t of texts) tally.apply(t, await detect(t));
        yield r;
        continue;
      }
      if (r instanceof JsonResults) {
        lastWasJson = true;
        const texts: string[] = [];
        for (const t of r.texts) {
          let v: unknown;
          try {
            v = JSON.parse(t);
          } catch {
            throw new CloisterError('ENGINE_FAILED', 'relayed engine output is not valid JSON');
          }
          texts.push(JSON.stringify(stream ? await guardEvent(v, true) : await guardValue(v, tally, detect)));
        }
        yield new JsonResults(texts);
        continue;
      }
      lastWasJson = false;
      yield stream ? await guardEvent(r) : await guardValue(r, tally, detect);
    }
    if (guarded && stream) {
      const t = await tail();
      if (t !== undefined) yield lastWasJson ? new JsonResults([JSON.stringify(t)]) : t;
    }
  }

  return {
    results: run(),
    report: () => ({ guard: tally.report(), facts }),
  };
}

/** The effective policy: the server's, made stricter by a request's `guard` param. */
export function requestPolicy(serverPolicy: GuardPolicy, requested: unknown): GuardPolicy {
  if (requested === undefined) return serverPolicy;
  if (requested !== 'allow' && requested !== 'redact' && requested !== 'block') {
    throw new CloisterError('INVALID_ARGUMENT', 'params.guard must be allow, redact or block', { detail: { public: true } });
  }
  return stricter(serverPolicy, requested);
}
