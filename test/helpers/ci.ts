/**
 * Test prerequisites (vendored vectors, the built native addon): outside CI an absent one makes
 * its tests skip with a note; under CI=true it is a failure, so a CI run cannot pass by skipping
 * the strongest tests. Not a test file itself.
 */
import { describe, it } from 'vitest';

/** True when the run is a CI run (CI=true, as GitHub Actions and most CI systems set it). */
export const IN_CI = process.env['CI'] === 'true';

/**
 * Says what to do about a prerequisite. Returns true when the tests that need it must be
 * skipped (absent, not in CI). Absent in CI: registers a failing test naming it and returns
 * false, so the dependent tests run (and fail) as well.
 */
export function requirePresent(present: boolean, what: string): boolean {
  if (present) return false;
  if (IN_CI) {
    describe(`prerequisite: ${what}`, () => {
      it('is present (CI=true: an absent prerequisite fails, it is not skipped)', () => {
        throw new Error(`${what} is absent; under CI=true this is a failure, not a skip`);
      });
    });
    return false;
  }
  console.warn(`[prerequisite] ${what} is absent: skipping the tests that need it (CI=true makes this a failure)`);
  return true;
}
