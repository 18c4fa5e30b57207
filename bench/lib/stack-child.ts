/** Child-process entry of `startStack` (compiled bench only): runs the server stack. */
import { createLocalStack } from './stack.js';
import type { LocalStack, StackOptions } from './stack.js';

let stack: LocalStack | undefined;

function send(m: unknown): void {
  process.send?.(m);
}

process.on('message', (m: { type: string; options?: StackOptions }) => {
  if (m.type === 'start' && m.options !== undefined) {
    createLocalStack(m.options).then(
      (s) => {
        stack = s;
        send({ type: 'ready', info: s.info });
      },
      (err: unknown) => send({ type: 'error', message: err instanceof Error ? `${err.name}: ${err.message}` : 'failed' }),
    );
  } else if (m.type === 'rss') {
    send({ type: 'rss', rss: process.memoryUsage().rss });
  } else if (m.type === 'close') {
    void (stack?.close() ?? Promise.resolve()).finally(() => process.exit(0));
  }
});
process.on('disconnect', () => process.exit(0));
