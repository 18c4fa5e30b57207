/** Test-only: what a call threw, as a string a test can compare. Not a test file itself. */
import { CloisterError } from '../../src/errors.js';

/** What `codeOf` returns when nothing was thrown. */
export const NO_THROW = 'no-throw';

function codeOfError(err: unknown): string {
  return err instanceof CloisterError ? err.code : `non-cloister:${String(err)}`;
}

/**
 * The CloisterError code `fn` throws; `non-cloister:...` for any other error and NO_THROW
 * when it returns, so `expect(codeOf(f)).toBe('MALFORMED')` fails in both cases.
 */
export function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return codeOfError(err);
  }
  return NO_THROW;
}

/** `codeOf` for a promise, or a function returning one (awaited). */
export async function codeOfAsync(p: Promise<unknown> | (() => Promise<unknown>)): Promise<string> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    return codeOfError(err);
  }
  return NO_THROW;
}

/** The CloisterError a promise rejects with; any other rejection, or none, fails the test. */
export async function rejectionOf(p: Promise<unknown>): Promise<CloisterError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CloisterError) return err;
    throw err;
  }
  throw new Error('expected a rejection');
}
