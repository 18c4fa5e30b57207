/** Test-only: bounded polling. Not a test file itself. */

/**
 * Waits until `cond` holds, polling every `stepMs` at most `tries` times; then throws, naming
 * `what`, so a condition that never comes fails the test at once instead of hanging it.
 * Not a timing assertion: the bound only keeps a broken test from running forever.
 */
export async function until(cond: () => boolean, tries = 500, stepMs = 10, what = 'condition'): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  if (cond()) return;
  throw new Error(`${what} not reached after ${tries} polls of ${stepMs} ms`);
}
