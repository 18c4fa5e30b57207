/** Option validators shared by every layer: one message and one code (CONFIG_INVALID) for each rule. */
import { CloisterError } from '../errors.js';

/** A plain object (not null, not an array): the shape of a JSON object or an options bag. */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `value`, or `fallback` when undefined; a safe integer >= 1, else CONFIG_INVALID naming `name`. */
export function positiveInt(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < 1) throw new CloisterError('CONFIG_INVALID', `${name} must be a positive integer`);
  return v;
}

/** `value`, or `fallback` when undefined; a safe integer >= 0, else CONFIG_INVALID naming `name`. */
export function nonNegativeInt(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < 0) throw new CloisterError('CONFIG_INVALID', `${name} must be a non-negative integer`);
  return v;
}
