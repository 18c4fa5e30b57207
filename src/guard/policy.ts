/**
 * The output guard's policy and its tally (docs/GUARD.md). `allow` counts what it finds and
 * lets it through, `redact` (the default) replaces each identifier with a typed placeholder,
 * `block` fails the answer with OUTPUT_BLOCKED. A request or a collection may make the policy
 * stricter than the server's, never looser.
 */
import { CloisterError } from '../errors.js';
import { IDENTIFIER_TYPES, redactFindings } from './rules.js';
import type { Finding, IdentifierType } from './rules.js';

export const GUARD_POLICIES = ['allow', 'redact', 'block'] as const;
export type GuardPolicy = (typeof GUARD_POLICIES)[number];
export const DEFAULT_GUARD_POLICY: GuardPolicy = 'redact';

export function isGuardPolicy(v: unknown): v is GuardPolicy {
  return typeof v === 'string' && (GUARD_POLICIES as readonly string[]).includes(v);
}

/** The stricter of two policies. */
export function stricter(a: GuardPolicy, b: GuardPolicy): GuardPolicy {
  return GUARD_POLICIES.indexOf(a) >= GUARD_POLICIES.indexOf(b) ? a : b;
}

/** What the guard did to one answer: content-free (types and counts). */
export interface GuardReport {
  readonly policy: GuardPolicy;
  /** pass: nothing found; flagged: found under `allow`; redacted; blocked. */
  readonly action: 'pass' | 'flagged' | 'redacted' | 'blocked';
  readonly found: Readonly<Partial<Record<IdentifierType, number>>>;
}

export class GuardTally {
  #policy: GuardPolicy;
  readonly #counts = new Map<IdentifierType, number>();
  #blocked = false;

  constructor(policy: GuardPolicy) {
    this.#policy = policy;
  }

  get policy(): GuardPolicy {
    return this.#policy;
  }

  /** Makes the policy stricter (a collection's floor); never looser. */
  tighten(policy: GuardPolicy): void {
    this.#policy = stricter(this.#policy, policy);
  }

  /**
   * Applies the policy to `text` and its findings: the text to release, or OUTPUT_BLOCKED
   * (content-free message: types and counts) under `block`.
   */
  apply(text: string, findings: readonly Finding[]): string {
    if (findings.length === 0) return text;
    for (const f of findings) this.#counts.set(f.type, (this.#counts.get(f.type) ?? 0) + 1);
    if (this.#policy === 'block') {
      this.#blocked = true;
      throw new CloisterError('OUTPUT_BLOCKED', `the output guard blocked the answer (policy block; found ${this.summary()})`, {
        detail: { public: true },
      });
    }
    return this.#policy === 'redact' ? redactFindings(text, findings) : text;
  }

  /** e.g. "SSN x1, PHONE x2" (types and counts only). */
  summary(): string {
    return [...this.#counts].map(([t, n]) => `${t} x${n}`).join(', ') || 'nothing';
  }

  get total(): number {
    let n = 0;
    for (const c of this.#counts.values()) n += c;
    return n;
  }

  report(): GuardReport {
    const found: Partial<Record<IdentifierType, number>> = {};
    for (const t of IDENTIFIER_TYPES) {
      const n = this.#counts.get(t);
      if (n !== undefined) found[t] = n;
    }
    const action = this.#blocked ? 'blocked' : this.total === 0 ? 'pass' : this.#policy === 'allow' ? 'flagged' : 'redacted';
    return { policy: this.#policy, action, found };
  }
}
