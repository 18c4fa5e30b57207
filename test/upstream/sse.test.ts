import { describe, expect, it } from 'vitest';
import { SseParser } from '../../src/inference/upstream/sse.js';
import type { SseEvent } from '../../src/inference/upstream/sse.js';
import { codeOf } from '../helpers/errors.js';
import { mulberry32 } from '../helpers/random.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

function parseAll(chunks: readonly Uint8Array[], maxEventBytes?: number): SseEvent[] {
  const p = new SseParser(maxEventBytes === undefined ? {} : { maxEventBytes });
  return chunks.flatMap((c) => p.push(c));
}

describe('SseParser', () => {
  it('parses LF, CRLF and CR terminated events', () => {
    for (const nl of ['\n', '\r\n', '\r']) {
      const events = parseAll([enc(`data: one${nl}${nl}data: two${nl}${nl}`)]);
      expect(events.map((e) => e.data)).toEqual(['one', 'two']);
      expect(events.every((e) => e.event === 'message')).toBe(true);
    }
  });

  it('treats a CR at the end of a chunk and a LF at the start of the next as one terminator', () => {
    const events = parseAll([enc('data: a\r'), enc('\ndata: b\r'), enc('\n\r'), enc('\n')]);
    expect(events).toEqual([{ event: 'message', data: 'a\nb' }]);
  });

  it('joins multi-line data with LF and strips exactly one leading space', () => {
    const events = parseAll([enc('data: {"a":\ndata:  1}\ndata\n\n')]);
    expect(events).toHaveLength(1);
    expect(events[0]?.data).toBe('{"a":\n 1}\n');
  });

  it('ignores comments, retry and unknown fields; keeps event and id', () => {
    const events = parseAll([enc(': keep-alive\nretry: 10\nfoo: bar\nevent: error\nid: 7\ndata: x\n\n')]);
    expect(events).toEqual([{ event: 'error', data: 'x', id: '7' }]);
  });

  it('does not dispatch events without data lines', () => {
    expect(parseAll([enc('event: ping\n\n: only a comment\n\n')])).toEqual([]);
  });

  it('skips one leading BOM, even when split across chunks', () => {
    const bytes = new Uint8Array([0xef, 0xbb, 0xbf, ...enc('data: x\n\n')]);
    expect(parseAll([bytes.subarray(0, 1), bytes.subarray(1, 2), bytes.subarray(2)])).toEqual([{ event: 'message', data: 'x' }]);
  });

  it('reports an unfinished event', () => {
    const p = new SseParser();
    p.push(enc('data: [DONE]\n\n'));
    expect(p.hasPartialEvent).toBe(false);
    p.push(enc('data: {"cut'));
    expect(p.hasPartialEvent).toBe(true);
    const q = new SseParser();
    q.push(enc('data: x\n'));
    expect(q.hasPartialEvent).toBe(true);
  });

  it('rejects invalid UTF-8 with MALFORMED', () => {
    expect(codeOf(() => parseAll([new Uint8Array([0x64, 0x61, 0x74, 0x61, 0x3a, 0xff, 0x0a, 0x0a])]))).toBe('MALFORMED');
  });

  it('does not alias the caller buffer', () => {
    const p = new SseParser();
    const buf = enc('data: hello');
    p.push(buf);
    buf.fill(0x41);
    expect(p.push(enc('\n\n'))).toEqual([{ event: 'message', data: 'hello' }]);
  });

  describe('maxEventBytes', () => {
    it('rejects one oversized event', () => {
      expect(codeOf(() => parseAll([enc(`data: ${'x'.repeat(100)}\n\n`)], 64))).toBe('LIMIT_EXCEEDED');
    });

    it('rejects a line that never ends, fed one byte at a time', () => {
      const p = new SseParser({ maxEventBytes: 64 });
      const code = codeOf(() => {
        for (let i = 0; i < 1000; i++) p.push(enc('x'));
      });
      expect(code).toBe('LIMIT_EXCEEDED');
    });

    it('rejects endless comment lines without a blank line', () => {
      const p = new SseParser({ maxEventBytes: 64 });
      const code = codeOf(() => {
        for (let i = 0; i < 100; i++) p.push(enc(': ping\n'));
      });
      expect(code).toBe('LIMIT_EXCEEDED');
    });

    it('counts per event: many small events pass', () => {
      const chunks = Array.from({ length: 100 }, (_, i) => enc(`data: ${i}\n\n`));
      expect(parseAll(chunks, 16)).toHaveLength(100);
    });

    it('accepts an event of exactly the limit', () => {
      const text = `data: ${'y'.repeat(10)}\n\n`; // 18 bytes
      expect(parseAll([enc(text)], text.length)).toHaveLength(1);
      expect(codeOf(() => parseAll([enc(text)], text.length - 1))).toBe('LIMIT_EXCEEDED');
    });

    it('rejects a non-positive limit', () => {
      expect(codeOf(() => new SseParser({ maxEventBytes: 0 }))).toBe('INVALID_ARGUMENT');
    });
  });

  it('property: random split points give identical events (LF, CRLF, CR; multi-byte UTF-8)', () => {
    const rng = mulberry32(0xc10157e4);
    const payloads = ['{"choices":[{"delta":{"content":"Hé"}}]}', 'naïve — ünïcödé 😀', '[DONE]', '', 'a:b: c'];
    for (const nl of ['\n', '\r\n', '\r']) {
      let text = `: hello${nl}`;
      const expected: SseEvent[] = [];
      for (let i = 0; i < 30; i++) {
        const data = payloads[i % payloads.length] ?? '';
        const multi = i % 4 === 3;
        text += multi ? `event: e${i}${nl}data: ${data}${nl}data: ${data}${nl}${nl}` : `data: ${data}${nl}${nl}`;
        expected.push({ event: multi ? `e${i}` : 'message', data: multi ? `${data}\n${data}` : data });
      }
      const bytes = enc(text);
      expect(parseAll([bytes])).toEqual(expected);
      for (let round = 0; round < 150; round++) {
        const chunks: Uint8Array[] = [];
        let off = 0;
        while (off < bytes.length) {
          const n = 1 + Math.floor(rng() * (round % 3 === 0 ? 3 : 40));
          chunks.push(bytes.slice(off, off + n));
          off += n;
        }
        expect(parseAll(chunks)).toEqual(expected);
      }
    }
  });
});
