// @ts-check
/**
 * An unchanged OpenAI application through Cloister: a local gateway verifies the server once
 * and seals everything the `openai` package sends to it.
 *
 *   npm run standin                             # a stand-in OpenAI engine (no GPU), docs/UPSTREAM.md
 *   npm start -- --upstream http://127.0.0.1:8000/v1 --upstream-model standin-model --upstream-kind openai
 *   node examples/gateway-openai.mjs [url] [policy.json]
 *
 * The same as `cloister gateway --url ... --policy ... --listen 127.0.0.1:PORT`, in-process.
 */
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';
import { connect, startGateway } from 'cloister/client';

const url = process.argv[2] ?? 'ws://127.0.0.1:8443/';
const policyPath = process.argv[3] ?? '.cloister/policy.json';

const client = await connect(url, { policy: readFileSync(policyPath, 'utf8') });
// Loopback only, any free port: the plaintext leg never leaves this machine.
const gateway = await startGateway({ client, port: 0 });
try {
  const ai = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: 'unused' });
  const stream = await ai.chat.completions.create({
    model: 'standin-model',
    stream: true,
    messages: [{ role: 'user', content: 'Summarise this discharge note in one line: ...' }],
  });
  for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta.content ?? '');
  process.stdout.write('\n');
} finally {
  await gateway.close();
  await client.close();
}
