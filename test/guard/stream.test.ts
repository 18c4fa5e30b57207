import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GuardTally } from '../../src/guard/policy.js';
import { detectIdentifiers, redactFindings } from '../../src/guard/rules.js';
import { StreamGuard } from '../../src/guard/stream.js';
import { guardResults } from '../../src/guard/output.js';
import { JsonResults } from '../../src/protocol/messages.js';
import { codeOfAsync } from '../helpers/errors.js';

const TEXT = 'Seen on 03/14/2024. Patient Jane, SSN 123-45-6789, phone (555) 123-4567, lives at 42 Elm Street. Email jane.doe@example.org for results. Old record: ssn 234567890, MRN 00482913 and more words to follow here, enough of them that the lookahead window moves well past every identifier above before the end.';

function pieces(text: string, cuts: number[]): string[] {
  const at = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b);
  const out: string[] = [];
  let prev = 0;
  for (const c of at) {
    out.push(text.slice(prev, c));
    prev = c;
  }
  out.push(text.slice(prev));
  return out;
}

describe('StreamGuard', () => {
  it('however the text is split, the released text equals the redacted whole and no released piece holds part of an identifier', () => {
    const expected = redactFindings(TEXT, detectIdentifiers(TEXT));
    fc.assert(
      fc.property(fc.array(fc.nat(), { maxLength: 40 }), (cuts) => {
        const g = new StreamGuard(new GuardTally('redact'));
        const released = pieces(TEXT, cuts).map((p) => g.push(p));
        released.push(g.finish());
        expect(released.join('')).toBe(expected);
        for (const r of released) expect(r).not.toMatch(/123|4567|6789|jane\.doe|Elm|234567890|00482913/);
      }),
      { numRuns: 300 },
    );
  });

  it('holds at most maxHoldChars of text without whitespace', () => {
    const g = new StreamGuard(new GuardTally('redact'), { lookaheadChars: 8, maxHoldChars: 64 });
    let out = '';
    for (let i = 0; i < 100; i++) {
      out += g.push('x'.repeat(10));
      expect(g.held).toBeLessThanOrEqual(64 + 10);
    }
    expect(out.length + g.held).toBe(1000);
  });

  it('rejects a hold bound at or below the lookahead', () => {
    expect(() => new StreamGuard(new GuardTally('redact'), { lookaheadChars: 64, maxHoldChars: 64 })).toThrow(/maxHoldChars/);
  });
});

async function* events(texts: string[]): AsyncGenerator<unknown> {
  for (const t of texts) yield new JsonResults([JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', model: 'm', choices: [{ index: 0, delta: { content: t }, finish_reason: null }] })]);
}

describe('guardResults', () => {
  it('streamed events: the held tail comes out in an added event when no finish_reason arrives', async () => {
    const g = guardResults('chat', true, events(['call 555', '-123-4567']), 'redact');
    const out: string[] = [];
    for await (const r of g.results) {
      for (const t of (r as JsonResults).texts) out.push(((JSON.parse(t) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content) ?? '');
    }
    expect(out.join('')).toBe('call [PHONE]');
    expect(g.report().guard).toEqual({ policy: 'redact', action: 'redacted', found: { PHONE: 1 } });
  });

  it('relayed JSON events (changed in place) and engine values (copied) guard the other fields too, keys in order', async () => {
    const ev = { id: 'c1', object: 'chat.completion.chunk', note: 'SSN 123-45-6789', choices: [{ index: 0, delta: { content: 'hi ' }, finish_reason: 'stop' }] };
    async function* both(): AsyncGenerator<unknown> {
      yield new JsonResults([JSON.stringify(ev)]);
      yield ev;
    }
    const g = guardResults('chat', true, both(), 'redact');
    const out: unknown[] = [];
    for await (const r of g.results) out.push(r instanceof JsonResults ? JSON.parse(r.texts[0] ?? 'null') : r);
    const want = { id: 'c1', object: 'chat.completion.chunk', note: 'SSN [SSN]', choices: [{ index: 0, delta: { content: 'hi ' }, finish_reason: 'stop' }] };
    expect(out).toEqual([want, want]);
    expect(Object.keys(out[0] as object)).toEqual(Object.keys(ev));
    // The engine's own value is not changed.
    expect(ev.note).toBe('SSN 123-45-6789');
  });

  it('operations that are not guarded pass untouched (embeddings, token-classify)', async () => {
    async function* one(): AsyncGenerator<unknown> {
      yield [{ word: '123-45-6789', entity: 'SSN' }];
    }
    const g = guardResults('token-classify', false, one(), 'block');
    const out: unknown[] = [];
    for await (const r of g.results) out.push(r);
    expect(out).toEqual([[{ word: '123-45-6789', entity: 'SSN' }]]);
  });

  it('block fails the stream before the identifier is released', async () => {
    const g = guardResults('chat', true, events(['SSN ', '123-45-', '6789 is on file. ', 'More text follows here, long enough to pass the lookahead window of the guard.']), 'block');
    const seen: string[] = [];
    const code = await codeOfAsync((async () => {
      for await (const r of g.results) seen.push(...(r as JsonResults).texts);
    })());
    expect(code).toBe('OUTPUT_BLOCKED');
    expect(seen.join('')).not.toContain('6789');
  });
});
