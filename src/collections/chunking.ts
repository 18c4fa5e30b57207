/**
 * The chunking rule (docs/COLLECTIONS.md, "Chunking"): a document is cut into chunks of at
 * most `maxChars` characters, each next chunk starting `overlapChars` before the previous one
 * ended. A cut is placed at the last sentence end ('.', '!', '?' or a line break, followed by
 * whitespace) inside the window's second half, else at its last whitespace, else hard at
 * `maxChars`. Leading whitespace of a chunk is skipped. Offsets are UTF-16 code units into
 * the document text, so a citation (document id, start, end) selects exactly the chunk.
 * The defaults fit the demo embedder's 128-token window.
 */
import { CloisterError } from '../errors.js';

export interface ChunkingOptions {
  /** Most characters in one chunk. Default 400; 50 to 8000. */
  readonly maxChars: number;
  /** Characters shared with the previous chunk. Default 50; below maxChars / 2. */
  readonly overlapChars: number;
}

export const DEFAULT_CHUNKING: ChunkingOptions = Object.freeze({ maxChars: 400, overlapChars: 50 });

export interface Chunk {
  readonly start: number;
  readonly end: number;
  readonly text: string;
}

export function checkChunking(o: Partial<ChunkingOptions> | undefined): ChunkingOptions {
  const maxChars = o?.maxChars ?? DEFAULT_CHUNKING.maxChars;
  const overlapChars = o?.overlapChars ?? DEFAULT_CHUNKING.overlapChars;
  if (!Number.isSafeInteger(maxChars) || maxChars < 50 || maxChars > 8000) {
    throw new CloisterError('INVALID_ARGUMENT', `chunking.maxChars must be an integer from 50 to 8000 (got ${String(maxChars)})`, { detail: { public: true } });
  }
  if (!Number.isSafeInteger(overlapChars) || overlapChars < 0 || overlapChars * 2 >= maxChars) {
    throw new CloisterError('INVALID_ARGUMENT', `chunking.overlapChars must be an integer from 0 to below maxChars / 2 (got ${String(overlapChars)})`, { detail: { public: true } });
  }
  return { maxChars, overlapChars };
}

const isSpace = (c: number): boolean => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

export function chunkText(text: string, options: ChunkingOptions = DEFAULT_CHUNKING): Chunk[] {
  const { maxChars, overlapChars } = options;
  const chunks: Chunk[] = [];
  let start = 0;
  while (start < text.length) {
    while (start < text.length && isSpace(text.charCodeAt(start))) start++;
    if (start >= text.length) break;
    let end = Math.min(text.length, start + maxChars);
    if (end < text.length) {
      const half = start + Math.floor(maxChars / 2);
      let cut = -1;
      for (let i = end; i > half; i--) {
        const prev = text[i - 1];
        if ((prev === '.' || prev === '!' || prev === '?' || prev === '\n') && (i === text.length || isSpace(text.charCodeAt(i)))) {
          cut = i;
          break;
        }
      }
      if (cut < 0) {
        for (let i = end; i > half; i--) {
          if (isSpace(text.charCodeAt(i - 1))) {
            cut = i;
            break;
          }
        }
      }
      if (cut > 0) end = cut;
    }
    let stop = end;
    while (stop > start && isSpace(text.charCodeAt(stop - 1))) stop--;
    chunks.push({ start, end: stop, text: text.slice(start, stop) });
    if (end >= text.length) break;
    start = Math.max(start + 1, end - overlapChars);
  }
  return chunks;
}
