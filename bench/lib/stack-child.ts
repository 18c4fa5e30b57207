/**
 * Child-process entry of `startStack` (compiled bench only): runs the server stack, or the
 * bench token engine on its own (the stand-in for vLLM, a separate process in a deployment).
 */
import { createLocalStack } from './stack.js';
import type { LocalStack, StackOptions } from './stack.js';
import { startTokenEngine } from './token-engine.js';
import type { TokenEngine } from './token-engine.js';

let stack: LocalStack | undefined;
let engine: TokenEngine | undefined;

function send(m: unknown): void {
  process.send?.(m);
}

function failed(err: unknown): void {
  send({ type: 'error', message: err instanceof Error ? `${err.name}: ${err.message}` : 'failed' });
}

process.on('message', (m: { type: string; options?: StackOptions; tokens?: number; port?: number }) => {
  if (m.type === 'start' && m.options !== undefined) {
    createLocalStack(m.options).then((s) => {
      stack = s;
      send({ type: 'ready', info: s.info });
    }, failed);
  } else if (m.type === 'engine' && typeof m.tokens === 'number') {
    startTokenEngine({ tokens: m.tokens, ...(m.port === undefined ? {} : { port: m.port }) }).then((e) => {
      engine = e;
      send({ type: 'engine-ready', baseUrl: e.baseUrl, model: e.model });
    }, failed);
  } else if (m.type === 'rss') {
    send({ type: 'rss', rss: process.memoryUsage().rss });
  } else if (m.type === 'cpu') {
    const u = process.cpuUsage();
    send({ type: 'cpu', us: u.user + u.system });
  } else if (m.type === 'close') {
    void Promise.all([stack?.close(), engine?.close()]).finally(() => process.exit(0));
  }
});
process.on('disconnect', () => process.exit(0));
