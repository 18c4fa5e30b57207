import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import type { EvidenceBundle } from '../../src/attestation/types.js';
import type { WireMessage } from '../../src/protocol/wire.js';
import { WsClientTransport } from '../../src/client/ws-transport.js';
import { codeOf, fakeClassify, startTestServer } from './helpers.js';
import type { TestServer } from './helpers.js';
import { flip, startRelay } from './relay.js';
import type { Relay } from './relay.js';

describe('a man in the middle is detected, never yields a wrong result', () => {
  let a: TestServer;
  let b: TestServer;
  let relay: Relay;
  beforeAll(async () => {
    a = await startTestServer();
    b = await startTestServer();
    relay = await startRelay(a.wsUrl);
  });
  afterAll(async () => {
    await relay.close();
    await a.close();
    await b.close();
  });

  const client = () => connect(relay.url, { policy: a.policy, trustedRoots: a.trustedRoots });

  it('passes an untouched exchange', async () => {
    relay.tamper = (m) => [m];
    const c = await client();
    expect(await c.classify('hello there', { model: 'fake-cls' })).toEqual(fakeClassify('hello there'));
    await c.close();
  });

  it('a flipped byte in the sealed request: DECRYPT_FAILED (opaque)', async () => {
    const c = await client();
    relay.tamper = (m) => (m.t === 'req' ? [{ ...m, body: flip(m.body, m.body.byteLength - 3) }] : [m]);
    expect(await codeOf(c.classify('x', { model: 'fake-cls' }))).toBe('DECRYPT_FAILED');
    // a flipped header byte (key id) is a key problem, not a wrong answer
    relay.tamper = (m) => (m.t === 'req' ? [{ ...m, body: flip(m.body, 40) }] : [m]);
    expect(await codeOf(c.classify('x', { model: 'fake-cls' }))).toBe('DECRYPT_FAILED');
    await c.close();
  });

  it('a flipped byte in a response chunk: HPKE_OPEN_FAILED', async () => {
    const c = await client();
    let n = 0;
    relay.tamper = (m) => (m.t === 'res' && n++ === 1 ? [{ ...m, body: flip(m.body, m.body.byteLength - 1) }] : [m]);
    expect(await codeOf(c.classify('x', { model: 'fake-cls' }))).toBe('HPKE_OPEN_FAILED');
    await c.close();
  });

  it('a dropped final chunk: STREAM_TRUNCATED', async () => {
    const c = await client();
    const seenRes = new Map<number, number>();
    relay.tamper = (m) => {
      if (m.t !== 'res') return [m];
      const k = seenRes.get(m.sid) ?? 0;
      seenRes.set(m.sid, k + 1);
      // first res frame is the response nonce; a framed final chunk starts with varint 0
      return k > 0 && m.body[0] === 0 ? [] : [m];
    };
    expect(await codeOf(c.classify('x', { model: 'fake-cls' }))).toBe('STREAM_TRUNCATED');
    await c.close();
  });

  it('reordered chunks: HPKE_OPEN_FAILED', async () => {
    const c = await client();
    let held: WireMessage | undefined;
    let n = 0;
    relay.tamper = (m) => {
      if (m.t !== 'res') return [m];
      n++;
      if (n === 2) {
        held = m;
        return [];
      }
      if (n === 3 && held !== undefined) return [m, held];
      return [m];
    };
    const got: unknown[] = [];
    const code = await codeOf(async () => {
      for await (const x of c.request({ op: 'generate', model: 'fake-gen', input: 'y', params: { n: 4 }, stream: true })) got.push(x);
    });
    expect(code).toBe('HPKE_OPEN_FAILED');
    expect(got).toEqual([]);
    await c.close();
  });

  it('a replayed request: REPLAY (inside the sealed response)', async () => {
    const c = await client();
    const OFFSET = 1_000_000;
    relay.tamper = (m, dir, send) => {
      if (dir === 'up' && m.t === 'req') {
        send('up', m);
        return [{ ...m, sid: m.sid + OFFSET }];
      }
      if (dir === 'down' && (m.t === 'res' || m.t === 'end')) {
        // deliver the replay's answer to the client, drop the original's
        if (m.sid >= OFFSET) return [{ ...m, sid: m.sid - OFFSET }];
        return [];
      }
      return [m];
    };
    const before = a.server.stats.errors.get('REPLAY') ?? 0;
    expect(await codeOf(c.classify('replay me', { model: 'fake-cls' }))).toBe('REPLAY');
    expect(a.server.stats.errors.get('REPLAY')).toBe(before + 1);
    await c.close();
  });

  it('evidence swapped in from another server, replayed, or with its key config replaced: refused before sending', async () => {
    const other = await WsClientTransport.connect(b.wsUrl);
    const fromB = await other.fetchEvidence(undefined);
    await other.close();
    const direct = await WsClientTransport.connect(a.wsUrl);
    const oldFromA = await direct.fetchEvidence(new Uint8Array(32).fill(9));
    await direct.close();
    const before = a.server.stats.sealedRequestsReceived;
    const swap = (bundle: (orig: EvidenceBundle) => EvidenceBundle) => {
      relay.tamper = (m) => (m.t === 'evidence' ? [{ t: 'evidence', bundle: bundle(m.bundle) }] : [m]);
    };
    swap(() => fromB);
    expect(await codeOf(client())).toBe('ROOT_UNTRUSTED');
    swap(() => oldFromA);
    expect(await codeOf(client())).toBe('BINDING_MISMATCH');
    swap((orig) => ({ ...orig, keyConfig: fromB.keyConfig }));
    expect(await codeOf(client())).toBe('BINDING_MISMATCH');
    relay.tamper = (m) => (m.t === 'evidence' ? [{ t: 'evidence', bundle: { ...m.bundle, evidence: flip(m.bundle.evidence, m.bundle.evidence.byteLength - 5) } }] : [m]);
    expect(await codeOf(client())).toBe('EVIDENCE_SIGNATURE_INVALID');
    expect(a.server.stats.sealedRequestsReceived).toBe(before);
    relay.tamper = (m) => [m];
  });
});
