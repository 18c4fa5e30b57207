/**
 * A stand-in OpenAI-compatible engine for the streaming benchmark: a node:http server on
 * loopback that answers /v1/models and /v1/chat/completions, streaming `tokens` SSE
 * chat.completion.chunk events as fast as the socket takes them (it waits only for
 * backpressure). Each token is a fixed synthetic word. Bench-only; it reads request bodies
 * just far enough to find `stream` and `max_tokens`, and stores nothing.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface TokenEngine {
  /** e.g. http://127.0.0.1:PORT/v1 */
  readonly baseUrl: string;
  readonly model: string;
  close(): Promise<void>;
}

const MAX_BODY = 1 << 20;
const WORD = ' tok';

function readBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    req.on('data', (b: Buffer) => {
      n += b.byteLength;
      if (n > MAX_BODY) {
        req.destroy();
        reject(new Error('body too large'));
        return;
      }
      parts.push(b);
    });
    req.on('end', () => {
      try {
        const v: unknown = n === 0 ? {} : JSON.parse(Buffer.concat(parts).toString('utf8'));
        resolve(typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : {});
      } catch (err) {
        reject(err instanceof Error ? err : new Error('bad json'));
      }
    });
    req.on('error', reject);
  });
}

function chunk(id: string, model: string, content: string | null, finish: string | null): string {
  const delta = content === null ? {} : { content };
  return `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created: 0, model, choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
}

async function stream(res: ServerResponse, model: string, tokens: number): Promise<void> {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const id = 'chatcmpl-bench';
  for (let i = 0; i < tokens; i++) {
    if (res.destroyed) return;
    if (!res.write(chunk(id, model, WORD, null))) {
      await new Promise<void>((resolve) => {
        res.once('drain', resolve);
        res.once('close', resolve);
      });
    }
  }
  res.write(chunk(id, model, null, 'stop'));
  res.end('data: [DONE]\n\n');
}

export async function startTokenEngine(options: { tokens: number; model?: string; port?: number }): Promise<TokenEngine> {
  const model = options.model ?? 'bench-llm';
  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    if (req.method === 'GET' && url === '/v1/models') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ object: 'list', data: [{ id: model, object: 'model', created: 0, owned_by: 'bench' }] }));
      return;
    }
    if (req.method === 'POST' && url === '/v1/chat/completions') {
      readBody(req).then(
        (body) => {
          const max = typeof body['max_tokens'] === 'number' && body['max_tokens'] > 0 ? Math.min(body['max_tokens'], options.tokens) : options.tokens;
          if (body['stream'] === true) {
            void stream(res, model, max);
            return;
          }
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(
            JSON.stringify({
              id: 'chatcmpl-bench',
              object: 'chat.completion',
              created: 0,
              model,
              choices: [{ index: 0, message: { role: 'assistant', content: WORD.repeat(max) }, finish_reason: 'stop' }],
              usage: { prompt_tokens: 1, completion_tokens: max, total_tokens: max + 1 },
            }),
          );
        },
        () => {
          res.writeHead(400);
          res.end();
        },
      );
      return;
    }
    res.writeHead(404);
    res.end();
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', resolve);
  });
  const port = (server.address() as AddressInfo).port;
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    model,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
