/**
 * Downgrade defence for protocol v2 (docs/PROTOCOL.md section 11, docs/POLICY.md `protocols`):
 * the offer (key config field 14) is covered by the evidence binding, so a host cannot strip it
 * from the v2 key config; it can answer a v2 client's evidence request with the v1 key config
 * (attested too), which a policy with `protocols.require: [2]` refuses, PROTOCOL_DOWNGRADE.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import { CloisterError } from '../../src/errors.js';
import { HttpClientTransport } from '../../src/client/http-transport.js';
import { decodeKeyConfig, encodeKeyConfig } from '../../src/protocol/key-config.js';
import type { WireMessage } from '../../src/protocol/wire.js';
import { policyFromJson } from '../../src/verifier/policy.js';
import { verifyEvidence } from '../../src/verifier/verify.js';
import { codeOf, codeOfAsync } from '../helpers/errors.js';
import { fakeClassify } from '../helpers/engines.js';
import { startTestServer } from '../helpers/test-server.js';
import type { TestServer } from '../helpers/test-server.js';
import { startRelay } from './relay.js';
import type { Relay } from './relay.js';

describe('protocol downgrade', () => {
  let t: TestServer;
  let relay: Relay;
  beforeAll(async () => {
    t = await startTestServer();
    relay = await startRelay(t.wsUrl);
  });
  afterAll(async () => {
    await relay.close();
    await t.close();
  });

  const requiring = (require: unknown) => policyFromJson({ ...t.policyJson, protocols: { require } });

  it('the policy field is strict', () => {
    expect(requiring([2]).requireProtocols).toEqual([2]);
    expect(requiring([1, 2]).requireProtocols).toEqual([1, 2]);
    for (const bad of [[], [3], [0], [2, 1], [2, 2], ['2'], 2]) expect(codeOf(() => requiring(bad))).toBe('POLICY_INVALID');
    expect(codeOf(() => policyFromJson({ ...t.policyJson, protocols: { require: [2], prefer: [2] } }))).toBe('POLICY_INVALID');
    expect(policyFromJson(t.policyJson).requireProtocols).toBeUndefined();
  });

  it('the offer is bound by the evidence: the v2 key config with field 14 stripped fails the binding', async () => {
    const bundle = await new HttpClientTransport(t.httpUrl).fetchEvidence(undefined, 2);
    const kc = decodeKeyConfig(bundle.keyConfig);
    expect(kc.protocols).toEqual([1, 2]);
    const rest: Record<string, unknown> = { ...kc };
    delete rest['protocols'];
    const stripped = { ...bundle, keyConfig: encodeKeyConfig(rest as unknown as typeof kc) };
    const options = { policy: t.policy, trustedRoots: t.trustedRoots };
    expect((await verifyEvidence(bundle, options)).keyConfig.protocols).toEqual([1, 2]);
    expect(await codeOfAsync(verifyEvidence(stripped, options))).toBe('BINDING_MISMATCH');
  });

  it('a host that answers v2 with the v1 key config: accepted silently without the policy field, PROTOCOL_DOWNGRADE with it', async () => {
    // The host drops `v: 2` from the evidence request: the server answers with the v1 key config.
    relay.tamper = (m: WireMessage): WireMessage[] => (m.t === 'evidence-req' ? [{ t: 'evidence-req', ...(m.nonce === undefined ? {} : { nonce: m.nonce }) }] : [m]);
    try {
      const silent = await connect(relay.url, { policy: t.policy, trustedRoots: t.trustedRoots });
      try {
        expect(silent.keyConfig.protocols).toBeUndefined();
        expect(await silent.classify('still answered, one-shot', { model: 'fake-cls' })).toEqual(fakeClassify('still answered, one-shot'));
      } finally {
        await silent.close();
      }
      expect(await codeOfAsync(connect(relay.url, { policy: requiring([2]), trustedRoots: t.trustedRoots }))).toBe('PROTOCOL_DOWNGRADE');
    } finally {
      relay.tamper = (m) => [m];
    }
    // Untouched, the same policy connects and uses a session.
    const c = await connect(relay.url, { policy: requiring([2]), trustedRoots: t.trustedRoots });
    try {
      expect(c.keyConfig.protocols).toEqual([1, 2]);
      expect(await c.classify('sealed in a session', { model: 'fake-cls' })).toEqual(fakeClassify('sealed in a session'));
    } finally {
      await c.close();
    }
  });

  it('sessions: false with a policy that requires version 2 is a configuration error; an old server (v1 only) is PROTOCOL_DOWNGRADE', async () => {
    expect(await codeOfAsync(connect(t.httpUrl, { policy: requiring([2]), trustedRoots: t.trustedRoots, sessions: false }))).toBe('CONFIG_INVALID');
    // A server from before sessions refuses `v` (MALFORMED); the client asks again as v1 and gets the v1 key config.
    relay.tamper = (m: WireMessage, _dir, send): WireMessage[] => {
      if (m.t === 'evidence-req' && m.v !== undefined) {
        send('down', { t: 'err', code: 'MALFORMED' });
        return [];
      }
      return [m];
    };
    try {
      expect(await codeOfAsync(connect(relay.url, { policy: requiring([2]), trustedRoots: t.trustedRoots }))).toBe('PROTOCOL_DOWNGRADE');
    } finally {
      relay.tamper = (m) => [m];
    }
  });

  it('old server, new client: receipts v2 asked of a server that does not offer version 2 is VERSION_UNSUPPORTED (upgrade the server), decided before sending', async () => {
    const up: string[] = [];
    relay.tamper = (m: WireMessage, dir, send): WireMessage[] => {
      if (dir === 'up') up.push(m.t);
      if (m.t === 'evidence-req' && m.v !== undefined) {
        send('down', { t: 'err', code: 'MALFORMED' });
        return [];
      }
      return [m];
    };
    try {
      const c = await connect(relay.url, { policy: t.policy, trustedRoots: t.trustedRoots, receiptsV2: true });
      try {
        expect(c.keyConfig.protocols).toBeUndefined();
        let err: unknown;
        await c.classify('not sent', { model: 'fake-cls' }).catch((e: unknown) => (err = e));
        expect(err).toBeInstanceOf(CloisterError);
        expect((err as CloisterError).code).toBe('VERSION_UNSUPPORTED');
        expect((err as CloisterError).detail?.['upgrade']).toBe('server');
        expect((err as CloisterError).message).toMatch(/upgrade the server/);
        expect(up.filter((x) => x !== 'evidence-req')).toEqual([]);
      } finally {
        await c.close();
      }
    } finally {
      relay.tamper = (m) => [m];
    }
    // The same client options against the server as it is: receipts v2, one-shot (sessions: false) too.
    const c = await connect(relay.url, { policy: t.policy, trustedRoots: t.trustedRoots, receiptsV2: true, sessions: false });
    try {
      expect(c.keyConfig.protocols).toEqual([1, 2]);
      expect(await c.classify('sent', { model: 'fake-cls' })).toEqual(fakeClassify('sent'));
    } finally {
      await c.close();
    }
  });
});
