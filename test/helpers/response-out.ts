/** Test-only: a fake transport for the sealed-request handler. Not a test file itself. */
import type { ErrorCode } from '../../src/errors.js';
import type { ResponseOut } from '../../src/server/handler.js';

export interface FakeResponseOut extends ResponseOut {
  /** Every write, in order. */
  readonly bytes: Uint8Array[];
  ended: boolean;
  /** Codes passed to fail(). */
  readonly failed: ErrorCode[];
}

export interface FakeResponseOutOptions {
  /**
   * 'eager': every write is taken at once and write() returns nothing (no backpressure).
   * 'promise' (default): write() returns a promise, resolved for the first `stallAfter`
   * writes and never for later ones (a peer that stopped reading).
   */
  readonly mode?: 'eager' | 'promise';
  readonly stallAfter?: number;
  /** Called after each write is recorded. */
  readonly onWrite?: () => void;
}

/** A ResponseOut that records what it gets. */
export function fakeResponseOut(options: FakeResponseOutOptions = {}): FakeResponseOut {
  const stallAfter = options.stallAfter ?? Infinity;
  const r: FakeResponseOut = {
    bytes: [],
    ended: false,
    failed: [],
    write(b: Uint8Array): Promise<void> | undefined {
      r.bytes.push(b);
      options.onWrite?.();
      if (options.mode === 'eager') return undefined;
      return r.bytes.length <= stallAfter ? Promise.resolve() : new Promise<void>(() => undefined);
    },
    end(): void {
      r.ended = true;
    },
    fail(code: ErrorCode): void {
      r.failed.push(code);
    },
  };
  return r;
}
