#!/usr/bin/env node
// Adds the demo clinical notes (data/clinical-notes.jsonl) to a sealed collection through the
// local gateway (docs/COLLECTIONS.md, "Walkthrough"). Plain HTTP to the gateway on this
// machine; the gateway seals each call to the attested server.
//
//   node examples/collection-add-notes.mjs GATEWAY_URL COLLECTION_ID CAPABILITY [FILE]
//   e.g. node examples/collection-add-notes.mjs http://127.0.0.1:8080 "$ID" "$CAP"
import { readFile } from 'node:fs/promises';

const [gateway, id, capability, file = new URL('../data/clinical-notes.jsonl', import.meta.url)] = process.argv.slice(2);
if (gateway === undefined || id === undefined || capability === undefined) {
  console.error('usage: node examples/collection-add-notes.mjs GATEWAY_URL COLLECTION_ID CAPABILITY [FILE]');
  process.exit(2);
}
const notes = (await readFile(file, 'utf8')).trim().split('\n').map((line) => JSON.parse(line));
const BATCH = 220;
let version;
for (let i = 0; i < notes.length; i += BATCH) {
  const documents = notes.slice(i, i + BATCH).map((n) => ({ id: n.id, text: n.text, metadata: { department: n.department } }));
  const res = await globalThis.fetch(`${gateway}/v1/collections/${id}/documents`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-cloister-capability': capability },
    body: JSON.stringify({ documents }),
  });
  /** @type {{ version?: number, error?: { code?: string, message?: string } }} */
  const body = /** @type {any} */ (await res.json());
  if (!res.ok) {
    console.error(`add failed: ${res.status} ${body.error?.code ?? ''} ${body.error?.message ?? ''}`);
    process.exit(1);
  }
  version = body.version;
}
console.log(`added ${notes.length} notes; collection version ${version}`);
