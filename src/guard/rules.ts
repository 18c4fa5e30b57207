/**
 * PHI/PII detection by rules (docs/GUARD.md): the identifier types below, each a regular
 * expression plus a validator where the identifier has structure to check (SSN ranges, the
 * Luhn checksum of card numbers, calendar ranges of dates). Findings never leave this module
 * with their text: callers get types and offsets, and report types and counts only.
 */

/** The rules' types, then the tagger model's (NAME, ID: src/guard/tagger.ts). */
export const IDENTIFIER_TYPES = ['SSN', 'MRN', 'PHONE', 'EMAIL', 'DATE', 'ADDRESS', 'CARD', 'IP', 'NAME', 'ID'] as const;
export type IdentifierType = (typeof IDENTIFIER_TYPES)[number];

export interface Finding {
  readonly type: IdentifierType;
  /** Offsets into the scanned text, UTF-16 code units, end exclusive. */
  readonly start: number;
  readonly end: number;
}

interface Rule {
  readonly type: IdentifierType;
  /** Global; a named group `pre` (a label such as "SSN:") is matched but not part of the span. */
  readonly re: RegExp;
  readonly valid?: (m: RegExpExecArray) => boolean;
}

const MONTHS = 'Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?';
const STREET = 'Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Circle|Parkway|Pkwy|Highway|Hwy';

/** SSA rules: area 001-899 except 666, group 01-99, serial 0001-9999. */
function validSsn(area: string, group: string, serial: string): boolean {
  const a = Number(area);
  return a !== 0 && a !== 666 && a < 900 && group !== '00' && serial !== '0000';
}

function luhn(digits: string): boolean {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}

function validDate(month: number, day: number): boolean {
  return month >= 1 && month <= 12 && day >= 1 && day <= 31;
}

const RULES: readonly Rule[] = [
  // A labelled SSN may lack separators; the label stays, the number goes.
  { type: 'SSN', re: /(?<pre>\b(?:SSN|social security(?: number| no\.?)?)\s*[:#]?\s*)(\d{3})[- ]?(\d{2})[- ]?(\d{4})\b/gi, valid: (m) => validSsn(m[2] ?? '', m[3] ?? '', m[4] ?? '') },
  { type: 'SSN', re: /\b(\d{3})[- ](\d{2})[- ](\d{4})\b/g, valid: (m) => validSsn(m[1] ?? '', m[2] ?? '', m[3] ?? '') },
  { type: 'MRN', re: /(?<pre>\b(?:MRN|medical record(?: number| no\.?| #)?)\s*[:#]?\s*)[A-Z]{0,3}-?\d{5,12}\b/gi },
  { type: 'EMAIL', re: /\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b/g },
  // 13 to 19 digits in groups of four with one separator style (or none), Luhn-checked.
  { type: 'CARD', re: /\b\d{4}([ -]?)\d{4}\1\d{4}\1\d{1,7}\b/g, valid: (m) => luhn(m[0].replace(/[ -]/g, '')) },
  { type: 'PHONE', re: /(?:\+?1[ .-]?)?(?:\(\d{3}\)[ .-]?|\b\d{3}[ .-])\d{3}[ .-]\d{4}\b/g },
  { type: 'DATE', re: /\b(\d{1,2})[/.-](\d{1,2})[/.-](\d{4}|\d{2})\b/g, valid: (m) => validDate(Number(m[1]), Number(m[2])) },
  { type: 'DATE', re: /\b(\d{4})-(\d{2})-(\d{2})\b/g, valid: (m) => validDate(Number(m[2]), Number(m[3])) },
  { type: 'DATE', re: new RegExp(`\\b(?:${MONTHS})\\.? \\d{1,2}(?:st|nd|rd|th)?,? \\d{4}\\b`, 'gi') },
  { type: 'DATE', re: new RegExp(`\\b\\d{1,2} (?:${MONTHS})\\.?,? \\d{4}\\b`, 'gi') },
  { type: 'ADDRESS', re: new RegExp(`\\b\\d{1,6} (?:[A-Z][a-z]+ ){1,3}(?:${STREET})\\b\\.?`, 'g') },
  { type: 'IP', re: /\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b/g },
];

/**
 * The longest identifier span the rules match, in characters, that may contain a space (a
 * space-free span is never cut by the streaming guard: see stream.ts). Addresses bound it.
 */
export const MAX_SPACED_IDENTIFIER_CHARS = 64;

/**
 * Every identifier in `text`: non-overlapping, in order; where two rules overlap the earlier
 * start wins, then the longer span.
 */
export function detectIdentifiers(text: string): Finding[] {
  const all: Finding[] = [];
  for (const rule of RULES) {
    rule.re.lastIndex = 0;
    for (let m = rule.re.exec(text); m !== null; m = rule.re.exec(text)) {
      if (m[0].length === 0) {
        rule.re.lastIndex++;
        continue;
      }
      const pre = m.groups?.['pre']?.length ?? 0;
      if (rule.valid === undefined || rule.valid(m)) all.push({ type: rule.type, start: m.index + pre, end: m.index + m[0].length });
    }
  }
  return mergeFindings(all);
}

/** Non-overlapping findings in order: where two overlap, the earlier start wins, then the longer span. */
export function mergeFindings(findings: readonly Finding[]): Finding[] {
  const all = [...findings].sort((a, b) => a.start - b.start || b.end - a.end);
  const out: Finding[] = [];
  let end = -1;
  for (const f of all) {
    if (f.start < end) continue;
    out.push(f);
    end = f.end;
  }
  return out;
}

/** `text` with every finding replaced by its typed placeholder, e.g. `[SSN]`. */
export function redactFindings(text: string, findings: readonly Finding[]): string {
  if (findings.length === 0) return text;
  let out = '';
  let at = 0;
  for (const f of findings) {
    out += `${text.slice(at, f.start)}[${f.type}]`;
    at = f.end;
  }
  return out + text.slice(at);
}
