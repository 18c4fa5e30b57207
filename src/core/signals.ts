/** AbortSignal helpers shared by the server, the engines and the clients (see deadline.ts for deadlines). */
import { CloisterError } from '../errors.js';

/** A signal that aborts when either `a` or `b` does; `dispose()` detaches it from both. */
export function linkSignals(a: AbortSignal, b: AbortSignal): { readonly signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const onAbort = (): void => {
    a.removeEventListener('abort', onAbort);
    b.removeEventListener('abort', onAbort);
    controller.abort();
  };
  if (a.aborted || b.aborted) {
    controller.abort();
  } else {
    a.addEventListener('abort', onAbort, { once: true });
    b.addEventListener('abort', onAbort, { once: true });
  }
  return {
    signal: controller.signal,
    dispose() {
      a.removeEventListener('abort', onAbort);
      b.removeEventListener('abort', onAbort);
    },
  };
}

/** Resolves after `ms`, or rejects with CANCELLED as soon as `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(new CloisterError('CANCELLED', 'request cancelled'));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new CloisterError('CANCELLED', 'request cancelled'));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
