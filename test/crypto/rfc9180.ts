/**
 * Test-only parser for the RFC 9180 Appendix A test-vector text (test/vectors/hpke).
 * Not a test file itself; locating vectors is test/helpers/vectors.ts.
 */
export type Rec = Map<string, string>;

export interface Rfc9180Vector {
  readonly suiteTitle: string;
  readonly modeTitle: string;
  readonly setup: Rec;
  readonly encryptions: readonly Rec[];
  readonly exports: readonly Rec[];
}

/** Records of one ~~~ block: `key: value` lines, wrapped hex continued on following lines. */
function parseBlock(lines: readonly string[]): Rec[] {
  const recs: Rec[] = [];
  let cur: Rec = new Map();
  let lastKey: string | undefined;
  for (const raw of lines) {
    const line = raw.trim();
    if (line === '') {
      if (cur.size > 0) recs.push(cur);
      cur = new Map();
      lastKey = undefined;
      continue;
    }
    const m = /^([a-zA-Z_ ]+):\s*(.*)$/.exec(line);
    if (m !== null) {
      const key = (m[1] ?? '').trim();
      cur.set(key, (m[2] ?? '').trim());
      lastKey = key;
    } else if (/^[0-9a-f]+$/.test(line) && lastKey !== undefined) {
      cur.set(lastKey, (cur.get(lastKey) ?? '') + line);
    } else {
      throw new Error(`unparseable vector line: ${line}`);
    }
  }
  if (cur.size > 0) recs.push(cur);
  return recs;
}

export function parseRfc9180(text: string): Rfc9180Vector[] {
  const lines = text.split('\n');
  const out: Rfc9180Vector[] = [];
  let suiteTitle = '';
  let modeTitle = '';
  let section = '';
  let setup: Rec | undefined;
  let encryptions: Rec[] = [];
  let exports: Rec[] = [];
  const flush = (): void => {
    if (setup !== undefined) out.push({ suiteTitle, modeTitle, setup, encryptions, exports });
    setup = undefined;
    encryptions = [];
    exports = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? '';
    if (line.startsWith('## ')) {
      flush();
      suiteTitle = line.slice(3).trim();
    } else if (line.startsWith('### ')) {
      flush();
      modeTitle = line.slice(4).trim();
      section = 'setup';
    } else if (line.startsWith('#### ')) {
      section = line.slice(5).trim();
    } else if (line.trim() === '~~~' && suiteTitle !== '') {
      const body: string[] = [];
      for (i++; i < lines.length && (lines[i] ?? '').trim() !== '~~~'; i++) body.push(lines[i] ?? '');
      const recs = parseBlock(body);
      if (section === 'setup') setup = recs[0];
      else if (section === 'Encryptions') encryptions = recs;
      else if (section === 'Exported Values') exports = recs;
    }
  }
  flush();
  return out;
}
