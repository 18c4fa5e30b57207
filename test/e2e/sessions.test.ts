/**
 * Protocol v2 sessions end to end (PROTOCOL.md section 11): the SDK opens one session and then
 * sends only session requests; v1 clients get the v1 key config and keep working; every
 * session bound (maxSessions, sessionMaxAgeMs, sessionMaxBytes, sessionIdleTimeoutMs) and key
 * rotation end sessions with their codes, and the SDK recovers without failing a request.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import type { ClientEvent } from '../../src/client/client.js';
import { HttpClientTransport } from '../../src/client/http-transport.js';
import type { ClientTransport, ExchangeKind } from '../../src/client/transport.js';
import { WsClientTransport } from '../../src/client/ws-transport.js';
import { decodeEvidenceFile } from '../../src/verifier/evidence-file.js';
import { CloisterError } from '../../src/errors.js';
import { decodeKeyConfig, sealTargetFromKeyConfig } from '../../src/protocol/key-config.js';
import { CAPABILITIES, verifyReceipt } from '../../src/protocol/messages.js';
import { checkReceipt } from '../../src/verifier/receipt.js';
import type { ReceiptRecord } from '../../src/verifier/receipt.js';
import { SessionOpening } from '../../src/protocol/session.js';
import type { ClientSession } from '../../src/protocol/session.js';
import type { KeyConfig } from '../../src/protocol/key-config.js';
import type { ServerLimits } from '../../src/server/options.js';
import { codeOfAsync as codeOf } from '../helpers/errors.js';
import { fakeClassify } from '../helpers/engines.js';
import { startTestServer } from '../helpers/test-server.js';
import type { TestServer } from '../helpers/test-server.js';

let servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers) await s.close();
  servers = [];
});

async function server(limits: Partial<ServerLimits> = {}, now?: () => number): Promise<TestServer> {
  const t = await startTestServer({ limits, ...(now === undefined ? {} : { now }) });
  servers.push(t);
  return t;
}

/** The bytes a transport delivers for one sealed body, or its coded error. */
async function exchange(tr: ClientTransport, body: Uint8Array, kind: ExchangeKind): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const p of tr.exchange(body, undefined, kind).pieces) parts.push(p);
  return Buffer.concat(parts);
}

/** A raw session over `tr` (no SDK): open it to the v2 key config. */
async function rawSession(tr: ClientTransport): Promise<{ session: ClientSession; keyConfig: KeyConfig }> {
  const keyConfig = decodeKeyConfig((await tr.fetchEvidence(undefined, 2)).keyConfig);
  expect(keyConfig.protocols).toEqual([1, 2]);
  const opening = new SessionOpening(sealTargetFromKeyConfig(keyConfig));
  opening.push(await exchange(tr, opening.bytes, 'sopen'));
  return { session: opening.finish(Date.now()), keyConfig };
}

/** One classify request in `session`: its results, or the (sealed or plaintext) error code. */
async function classify(tr: ClientTransport, session: ClientSession, keyConfig: KeyConfig, text = 'hello', bytes?: (b: Uint8Array) => void): Promise<unknown> {
  const sealed = session.seal(
    { v: 1, op: 'classify', model: 'fake-cls', input: text, stream: false, ts: Date.now(), id: new Uint8Array(randomBytes(16)), caps: CAPABILITIES },
    { pad: true, verify: (m, s) => verifyReceipt(keyConfig.receiptPublicKey, m, s) },
  );
  bytes?.(sealed.bytes);
  const results = [...sealed.reader.push(await exchange(tr, sealed.bytes, 'sreq')), ...sealed.reader.finish()];
  if (sealed.reader.serverError !== undefined) return `sealed:${sealed.reader.serverError.code}`;
  return results;
}

async function plainCode(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no-throw';
  } catch (err) {
    return err instanceof CloisterError ? `plain:${err.code}` : String(err);
  }
}

describe('protocol v2 sessions', () => {
  it('the SDK opens one session and sends every request in it, over WebSocket and HTTP; receipts verify offline', async () => {
    const t = await server();
    for (const url of [t.wsUrl, t.httpUrl]) {
      const events: ClientEvent[] = [];
      const receipts: ReceiptRecord[] = [];
      const c = await connect(url, { policy: t.policy, trustedRoots: t.trustedRoots, onEvent: (e) => events.push(e), onReceipt: (r) => receipts.push(r), receiptsV2: false });
      try {
        for (let i = 0; i < 5; i++) expect(await c.classify(`text ${i}`, { model: 'fake-cls' })).toEqual(fakeClassify(`text ${i}`));
        await Promise.all([1, 2, 3].map(async (i) => expect(await c.classify(`c${i}`, { model: 'fake-cls' })).toEqual(fakeClassify(`c${i}`))));
        expect(events.filter((e) => e.type === 'session-opened')).toHaveLength(1);
        expect(receipts).toHaveLength(8);
        const keyConfig = decodeEvidenceFile(c.evidenceFile()).bundle.keyConfig;
        expect(decodeKeyConfig(keyConfig).protocols).toEqual([1, 2]);
        for (const r of receipts) expect(() => checkReceipt(r, keyConfig)).not.toThrow();
      } finally {
        await c.close();
      }
    }
  });

  it('a v1 client gets the v1 key config (no protocols key) and keeps working', async () => {
    const t = await server();
    const events: ClientEvent[] = [];
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots, sessions: false, onEvent: (e) => events.push(e) });
    try {
      expect(decodeKeyConfig(decodeEvidenceFile(c.evidenceFile()).bundle.keyConfig).protocols).toBeUndefined();
      expect(await c.classify('v1', { model: 'fake-cls' })).toEqual(fakeClassify('v1'));
      expect(events.filter((e) => e.type === 'session-opened')).toHaveLength(0);
    } finally {
      await c.close();
    }
    const tr = await WsClientTransport.connect(t.wsUrl);
    try {
      expect(decodeKeyConfig((await tr.fetchEvidence(undefined)).keyConfig).protocols).toBeUndefined();
    } finally {
      await tr.close();
    }
  });

  it('key rotation ends sessions cleanly: sealed SESSION_EXPIRED on the wire, and the SDK re-attests and reopens without failing', async () => {
    const t = await server();
    const tr = await WsClientTransport.connect(t.wsUrl);
    const events: ClientEvent[] = [];
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots, onEvent: (e) => events.push(e) });
    try {
      const raw = await rawSession(tr);
      expect(await classify(tr, raw.session, raw.keyConfig)).toEqual([fakeClassify('hello')]);
      expect(await c.classify('before', { model: 'fake-cls' })).toEqual(fakeClassify('before'));
      // Twice: the first generation leaves its grace and is retired.
      t.server.keys.rotate();
      t.server.keys.rotate();
      expect(await classify(tr, raw.session, raw.keyConfig)).toBe('sealed:SESSION_EXPIRED');
      expect(await c.classify('after', { model: 'fake-cls' })).toEqual(fakeClassify('after'));
      const opened = events.filter((e): e is Extract<ClientEvent, { type: 'session-opened' }> => e.type === 'session-opened');
      expect(opened).toHaveLength(2);
      expect(opened[1]?.keyId).not.toBe(opened[0]?.keyId);
    } finally {
      await c.close();
      await tr.close();
    }
  });

  it('maxSessions: a session beyond it is refused OVERLOADED; the SDK then sends that request one-shot', async () => {
    const t = await server({ maxSessions: 1 });
    const tr = await WsClientTransport.connect(t.wsUrl);
    try {
      await rawSession(tr);
      expect(await plainCode(rawSession(tr))).toBe('plain:OVERLOADED');
      const events: ClientEvent[] = [];
      const c = await connect(t.httpUrl, { policy: t.policy, trustedRoots: t.trustedRoots, onEvent: (e) => events.push(e) });
      try {
        expect(await c.classify('one-shot', { model: 'fake-cls' })).toEqual(fakeClassify('one-shot'));
        expect(events.filter((e) => e.type === 'session-opened')).toHaveLength(0);
      } finally {
        await c.close();
      }
    } finally {
      await tr.close();
    }
  });

  it('sessionMaxBytes: past it, requests get a sealed SESSION_EXPIRED; the SDK reopens without failing', async () => {
    const t = await server({ sessionMaxBytes: 1500 });
    const tr = new HttpClientTransport(t.httpUrl);
    const raw = await rawSession(tr);
    let code: unknown;
    for (let i = 0; i < 10 && typeof code !== 'string'; i++) code = await classify(tr, raw.session, raw.keyConfig);
    expect(code).toBe('sealed:SESSION_EXPIRED');
    const events: ClientEvent[] = [];
    const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots, onEvent: (e) => events.push(e) });
    try {
      for (let i = 0; i < 6; i++) expect(await c.classify(`t${i}`, { model: 'fake-cls' })).toEqual(fakeClassify(`t${i}`));
      expect(events.filter((e) => e.type === 'session-opened').length).toBeGreaterThan(1);
    } finally {
      await c.close();
    }
  });

  it('sessionMaxAgeMs and sessionIdleTimeoutMs: an old session is sealed SESSION_EXPIRED, a forgotten one plaintext SESSION_UNKNOWN', async () => {
    let offset = 0;
    const t = await server({ sessionMaxAgeMs: 60_000, sessionIdleTimeoutMs: 120_000 }, () => Date.now() + offset);
    const tr = new HttpClientTransport(t.httpUrl);
    const raw = await rawSession(tr);
    expect(await classify(tr, raw.session, raw.keyConfig)).toEqual([fakeClassify('hello')]);
    offset = 61_000;
    expect(await classify(tr, raw.session, raw.keyConfig)).toBe('sealed:SESSION_EXPIRED');
    offset = 61_000 + 121_000;
    expect(await plainCode(classify(tr, raw.session, raw.keyConfig))).toBe('plain:SESSION_UNKNOWN');
  });

  it('a replayed session request is REPLAY and runs nothing; a request spliced into an unknown session is SESSION_UNKNOWN', async () => {
    const t = await server();
    const tr = await WsClientTransport.connect(t.wsUrl);
    try {
      const raw = await rawSession(tr);
      let body: Uint8Array = new Uint8Array(0);
      expect(await classify(tr, raw.session, raw.keyConfig, 'once', (b) => (body = b))).toEqual([fakeClassify('once')]);
      expect(await plainCode(exchange(tr, body, 'sreq'))).toBe('plain:REPLAY');
      const spliced = Uint8Array.from(body);
      spliced[0] = (spliced[0] as number) ^ 1;
      expect(await plainCode(exchange(tr, spliced, 'sreq'))).toBe('plain:SESSION_UNKNOWN');
      expect(await codeOf(exchange(tr, new Uint8Array(10), 'sreq'))).toBe('MALFORMED');
    } finally {
      await tr.close();
    }
  });
});
