/**
 * Version negotiation (PROTOCOL.md section 4, "Versions and capabilities"): the server sends a
 * `json` chunk only to a client that declared the `json` capability; a client from before
 * capabilities (no `caps`) gets the same values as `items`/`data`, which it understands; a
 * later inner-message version is answered VERSION_UNSUPPORTED inside the sealed response.
 */
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { sealChunkedRequest } from '../../src/protocol/chunked.js';
import { decodeKeyConfig, sealTargetFromKeyConfig } from '../../src/protocol/key-config.js';
import { decodeResponseChunk, encodeSealedRequest } from '../../src/protocol/messages.js';
import type { ResponseChunk } from '../../src/protocol/messages.js';
import { encodeCbor } from '../../src/core/cbor.js';
import { startTestServer } from '../e2e/helpers.js';
import type { TestServer } from '../e2e/helpers.js';

const open: TestServer[] = [];
afterEach(async () => {
  for (const t of open.splice(0)) await t.close();
});

function post(url: string, body: Uint8Array): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}/v1/sealed`, { method: 'POST', headers: { 'content-type': 'message/ohttp-chunked-req' } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve(new Uint8Array(Buffer.concat(parts))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Sends one sealed request (plaintext given as bytes) and returns the decoded response chunks. */
async function exchange(t: TestServer, plaintext: Uint8Array): Promise<ResponseChunk[]> {
  const kc = decodeKeyConfig(t.server.keys.current().keyConfig);
  const sealed = sealChunkedRequest(sealTargetFromKeyConfig(kc), plaintext);
  const body = await post(t.httpUrl, sealed.bytes);
  const chunks = [...sealed.response.push(body), ...sealed.response.finish()];
  return chunks.map((c) => decodeResponseChunk(c.plaintext));
}

const request0 = { v: 1 as const, op: 'generate' as const, model: 'fake-gen', input: 'json', params: { n: 2, size: 3 }, stream: false };

describe('capabilities', () => {
  it('json chunks go only to clients that declared json; an old client gets the same values as items', async () => {
    const t = await startTestServer();
    open.push(t);
    const fresh = () => ({ ts: Date.now(), id: new Uint8Array(randomBytes(16)) });
    const withJson = await exchange(t, encodeSealedRequest({ ...request0, ...fresh(), caps: ['json'] }));
    const old = await exchange(t, encodeSealedRequest({ ...request0, ...fresh(), caps: [] }));
    const types = (cs: ResponseChunk[]) => cs.map((c) => c.t);
    expect(types(withJson)).toContain('json');
    expect(types(old)).not.toContain('json');
    expect(types(old).at(-1)).toBe('end');
    const values = (cs: ResponseChunk[]): unknown[] =>
      cs.flatMap((c): unknown[] => (c.t === 'json' ? c.items.map((x) => JSON.parse(x) as unknown) : c.t === 'items' ? [...c.items] : c.t === 'data' ? [c.data] : []));
    expect(values(old)).toEqual(values(withJson));
    expect(values(old)).toHaveLength(4);
  });

  it('an unknown capability is ignored', async () => {
    const t = await startTestServer();
    open.push(t);
    const chunks = await exchange(t, encodeSealedRequest({ ...request0, ts: Date.now(), id: new Uint8Array(randomBytes(16)), caps: ['from-the-future'] }));
    expect(chunks.map((c) => c.t)).not.toContain('json');
    expect(chunks.at(-1)?.t).toBe('end');
  });

  it('a later inner-message version gets a sealed VERSION_UNSUPPORTED', async () => {
    const t = await startTestServer();
    open.push(t);
    const v2 = encodeCbor({ v: 2, op: 'generate', model: 'fake-gen', input: 'x', stream: false, ts: Date.now(), id: new Uint8Array(16).fill(9), more: 1 });
    const chunks = await exchange(t, v2);
    expect(chunks[0]).toMatchObject({ t: 'error', code: 'VERSION_UNSUPPORTED' });
    expect(chunks.at(-1)?.t).toBe('end');
  });
});
