/**
 * The session replay rule (docs/PROTOCOL.md section 11, "Replay"): each sequence number is
 * accepted once, in any order within SESSION_REPLAY_WINDOW below the highest seen - not
 * strictly increasing, because HTTP requests of one session travel on separate connections and
 * arrive out of order - and a session request is held to the same timestamp bound as a
 * one-shot request (replayWindowMs), so a host cannot hold one back and deliver it later.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { HttpClientTransport } from '../../src/client/http-transport.js';
import type { ClientTransport } from '../../src/client/transport.js';
import { CloisterError } from '../../src/errors.js';
import { decodeKeyConfig, sealTargetFromKeyConfig } from '../../src/protocol/key-config.js';
import type { KeyConfig } from '../../src/protocol/key-config.js';
import { CAPABILITIES, verifyReceipt } from '../../src/protocol/messages.js';
import type { ResponseReader } from '../../src/protocol/response.js';
import { SESSION_REPLAY_WINDOW, SessionOpening } from '../../src/protocol/session.js';
import type { ClientSession } from '../../src/protocol/session.js';
import { connect } from '../../src/client/client.js';
import { fakeClassify } from '../helpers/engines.js';
import { startTestServer } from '../helpers/test-server.js';
import type { TestServer } from '../helpers/test-server.js';

let servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers) await s.close();
  servers = [];
});

async function send(tr: ClientTransport, body: Uint8Array): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const p of tr.exchange(body, undefined, 'sreq').pieces) parts.push(p);
  return Buffer.concat(parts);
}

async function rawSession(tr: ClientTransport): Promise<{ session: ClientSession; keyConfig: KeyConfig }> {
  const keyConfig = decodeKeyConfig((await tr.fetchEvidence(undefined, 2)).keyConfig);
  const opening = new SessionOpening(sealTargetFromKeyConfig(keyConfig));
  const parts: Uint8Array[] = [];
  for await (const p of tr.exchange(opening.bytes, undefined, 'sopen').pieces) parts.push(p);
  opening.push(Buffer.concat(parts));
  return { session: opening.finish(Date.now()), keyConfig };
}

interface Sealed {
  readonly seq: number;
  readonly bytes: Uint8Array;
  readonly reader: ResponseReader;
  readonly text: string;
}

function seal(session: ClientSession, keyConfig: KeyConfig, text: string, ts = Date.now()): Sealed {
  const s = session.seal(
    { v: 1, op: 'classify', model: 'fake-cls', input: text, stream: false, ts, id: new Uint8Array(randomBytes(16)), caps: CAPABILITIES },
    { pad: true, verify: (m, sig) => verifyReceipt(keyConfig.receiptPublicKey, m, sig) },
  );
  return { seq: s.seq, bytes: s.bytes, reader: s.reader, text };
}

/** The answer to `s`: its results, `sealed:CODE` or `plain:CODE`. */
async function deliver(tr: ClientTransport, s: Sealed): Promise<unknown> {
  let bytes: Uint8Array;
  try {
    bytes = await send(tr, s.bytes);
  } catch (err) {
    return err instanceof CloisterError ? `plain:${err.code}` : String(err);
  }
  const results = [...s.reader.push(bytes), ...s.reader.finish()];
  if (s.reader.serverError !== undefined) return `sealed:${s.reader.serverError.code}`;
  return results;
}

describe('session replay rule', () => {
  it('requests that arrive out of order are each served once; a duplicate, and one more than SESSION_REPLAY_WINDOW behind, are REPLAY', async () => {
    const t = await startTestServer();
    servers.push(t);
    const tr = new HttpClientTransport(t.httpUrl);
    const { session, keyConfig } = await rawSession(tr);
    const sealed = Array.from({ length: 5 }, (_, i) => seal(session, keyConfig, `r${i + 1}`));
    // Arrival order 5, 3, 1, 4, 2: a strictly increasing rule would refuse 3, 1, 4 and 2.
    for (const i of [4, 2, 0, 3, 1]) {
      const s = sealed[i] as Sealed;
      expect(await deliver(tr, s)).toEqual([fakeClassify(s.text)]);
    }
    // A duplicate of 3 (the reader of the first copy is spent: a fresh reader is not needed for a plaintext refusal).
    expect(await deliver(tr, { ...(sealed[2] as Sealed), reader: seal(session, keyConfig, 'unused').reader })).toBe('plain:REPLAY');
    // Seal up to seq 6 + SESSION_REPLAY_WINDOW + 1; deliver the last first: seq 7 is then more than the window behind.
    const held = seal(session, keyConfig, 'held');
    expect(held.seq).toBe(7);
    let last: Sealed = held;
    while (last.seq < held.seq + SESSION_REPLAY_WINDOW + 1) last = seal(session, keyConfig, `later ${last.seq}`);
    expect(await deliver(tr, last)).toEqual([fakeClassify(last.text)]);
    expect(await deliver(tr, held)).toBe('plain:REPLAY');
  });

  it('concurrent SDK requests over HTTP in one session all succeed', async () => {
    const t = await startTestServer();
    servers.push(t);
    const c = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots });
    try {
      await c.classify('open the session', { model: 'fake-cls' });
      const texts = Array.from({ length: 24 }, (_, i) => `concurrent ${i}`);
      expect(await Promise.all(texts.map((x) => c.classify(x, { model: 'fake-cls' })))).toEqual(texts.map(fakeClassify));
    } finally {
      await c.close();
    }
  });

  it('a session request held back longer than replayWindowMs is refused, sealed REPLAY; within it, served', async () => {
    let offset = 0;
    const t = await startTestServer({ limits: { replayWindowMs: 60_000 }, now: () => Date.now() + offset });
    servers.push(t);
    const tr = new HttpClientTransport(t.httpUrl);
    const { session, keyConfig } = await rawSession(tr);
    const early = seal(session, keyConfig, 'held 30 s');
    const late = seal(session, keyConfig, 'held 61 s');
    offset = 30_000;
    expect(await deliver(tr, early)).toEqual([fakeClassify('held 30 s')]);
    offset = 61_000;
    expect(await deliver(tr, late)).toBe('sealed:REPLAY');
    // A request sealed now is served in the same session (the session itself is not over).
    expect(await deliver(tr, seal(session, keyConfig, 'fresh', Date.now() + offset))).toEqual([fakeClassify('fresh')]);
  });
});
