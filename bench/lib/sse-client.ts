/**
 * A minimal OpenAI-style streaming client for the benchmarks: POST a chat completion with
 * stream: true, parse the SSE events, count content deltas (tokens) and time the first one.
 * The content itself is dropped at once.
 */
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';

export interface StreamTiming {
  readonly tokens: number;
  /** Milliseconds from sending the request to the first content delta. */
  readonly ttftMs: number;
}

export function keepAliveAgent(maxSockets: number): Agent {
  return new Agent({ keepAlive: true, maxSockets });
}

/** Streams one chat completion from `baseUrl` (e.g. http://127.0.0.1:1234/v1). */
export function streamChat(agent: Agent, baseUrl: string, model: string, maxTokens: number): Promise<StreamTiming> {
  const body = JSON.stringify({ model, stream: true, max_tokens: maxTokens, messages: [{ role: 'user', content: 'bench' }] });
  const url = new URL(`${baseUrl}/chat/completions`);
  const t0 = performance.now();
  return new Promise<StreamTiming>((resolve, reject) => {
    const req = request(
      url,
      { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(new Error(`HTTP ${res.statusCode ?? 0}`));
          return;
        }
        res.setEncoding('utf8');
        let buf = '';
        let tokens = 0;
        let ttft = Number.NaN;
        let done = false;
        res.on('data', (s: string) => {
          buf += s;
          let i: number;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const event = buf.slice(0, i);
            buf = buf.slice(i + 2);
            for (const line of event.split('\n')) {
              if (!line.startsWith('data:')) continue;
              const data = line.slice(5).trim();
              if (data === '[DONE]') {
                done = true;
                continue;
              }
              const v = JSON.parse(data) as { choices?: { delta?: { content?: unknown } }[] };
              const content = v.choices?.[0]?.delta?.content;
              if (typeof content === 'string' && content.length > 0) {
                if (tokens === 0) ttft = performance.now() - t0;
                tokens++;
              }
            }
          }
        });
        res.on('end', () => (done ? resolve({ tokens, ttftMs: ttft }) : reject(new Error('stream ended without [DONE]'))));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}
