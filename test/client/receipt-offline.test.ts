/**
 * Receipts handed to callers (issue 17 item 11): the SDK gives each request's verified
 * receipt to `onReceipt`, an auditor checks it offline with `checkReceipt` against the key
 * config of the evidence file the client kept, and it fails for another request, a changed
 * response, or another server's key. A final `end` chunk carrying data (which the receipt does
 * not cover) is refused.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { connect } from '../../src/client/client.js';
import { run as runReceiptCli } from '../../src/cli/commands/receipt.js';
import { decodeEvidenceFile } from '../../src/verifier/evidence-file.js';
import { openChunkedRequest } from '../../src/protocol/chunked.js';
import { decodeKeyConfig, keyConfigDigest } from '../../src/protocol/key-config.js';
import { ReceiptHasher, encodeResponseChunk } from '../../src/protocol/messages.js';
import { checkReceipt, digestsOfReceiptMessage, receiptFromJson, receiptToJson } from '../../src/verifier/receipt.js';
import type { ReceiptRecord } from '../../src/verifier/receipt.js';
import type { KeyGeneration } from '../../src/server/keys.js';
import { codeOfAsync } from '../helpers/errors.js';
import { fakeClassify } from '../helpers/engines.js';
import { startTestServer } from '../helpers/test-server.js';
import type { TestServer } from '../helpers/test-server.js';

describe('receipts for auditors', () => {
  let t: TestServer;
  let other: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
    other = await startTestServer();
  });
  afterAll(async () => {
    vi.restoreAllMocks();
    await t.close();
    await other.close();
  });

  /** Runs one classify while recording the message the server signed; returns the client's receipt and the server's digests. */
  async function classifyWithReceipt(url: string, text: string): Promise<{ record: ReceiptRecord; signed: { requestDigest: Uint8Array; responseDigest: Uint8Array }; keyConfig: Uint8Array }> {
    const signedMessages: Uint8Array[] = [];
    const lookup = t.server.keys.lookup.bind(t.server.keys);
    const spy = vi.spyOn(t.server.keys, 'lookup').mockImplementation((keyId, suite): KeyGeneration => {
      const gen = lookup(keyId, suite);
      return {
        ...gen,
        signReceipt: (message: Uint8Array) => {
          signedMessages.push(message.slice());
          return gen.signReceipt(message);
        },
      };
    });
    const records: ReceiptRecord[] = [];
    const c = await connect(url, { policy: t.policy, trustedRoots: t.trustedRoots, onReceipt: (r) => records.push(r), receiptsV2: false });
    try {
      expect(await c.classify(text, { model: 'fake-cls' })).toEqual(fakeClassify(text));
      const keyConfig = decodeEvidenceFile(c.evidenceFile()).bundle.keyConfig;
      expect(records).toHaveLength(1);
      expect(signedMessages).toHaveLength(1);
      return { record: records[0] as ReceiptRecord, signed: digestsOfReceiptMessage(signedMessages[0] as Uint8Array), keyConfig };
    } finally {
      spy.mockRestore();
      await c.close();
    }
  }

  it('hands each request its receipt; it verifies offline for its own request and response (WebSocket and HTTP)', async () => {
    for (const url of [t.wsUrl, t.httpUrl]) {
      const { record, signed, keyConfig } = await classifyWithReceipt(url, 'audit me');
      // The digests the client reports are the ones the server signed.
      expect(record.requestDigest).toEqual(signed.requestDigest);
      expect(record.responseDigest).toEqual(signed.responseDigest);
      expect(record.signature).toHaveLength(64);
      expect(() => checkReceipt(record, keyConfig, signed)).not.toThrow();
      // JSON round trip (what an auditor stores).
      const back = receiptFromJson(JSON.parse(JSON.stringify(receiptToJson(record))));
      expect(() => checkReceipt(back, keyConfig, signed)).not.toThrow();
    }
  });

  it('fails for another request, a changed response, and another server\'s key', async () => {
    const a = await classifyWithReceipt(t.wsUrl, 'first request');
    const b = await classifyWithReceipt(t.wsUrl, 'second request');
    const code = (f: () => void): string | undefined => {
      try {
        f();
        return undefined;
      } catch (err) {
        return (err as { code?: string }).code;
      }
    };
    // a's receipt is not a receipt for b's request (expected digests), nor with b's digests put in.
    expect(code(() => checkReceipt(a.record, a.keyConfig, { requestDigest: b.signed.requestDigest }))).toBe('RECEIPT_INVALID');
    expect(code(() => checkReceipt({ ...a.record, requestDigest: b.record.requestDigest }, a.keyConfig))).toBe('RECEIPT_INVALID');
    // A changed response: one bit of the response digest.
    const changed = a.record.responseDigest.slice();
    changed[0] = (changed[0] as number) ^ 1;
    expect(code(() => checkReceipt(a.record, a.keyConfig, { responseDigest: changed }))).toBe('RECEIPT_INVALID');
    expect(code(() => checkReceipt({ ...a.record, responseDigest: changed }, a.keyConfig))).toBe('RECEIPT_INVALID');
    // Another server's key config: refused by name, and also when the record is relabelled to it.
    const c = await connect(other.wsUrl, { policy: other.policy, trustedRoots: other.trustedRoots, receiptsV2: false });
    const otherKeyConfig = decodeEvidenceFile(c.evidenceFile()).bundle.keyConfig;
    await c.close();
    expect(code(() => checkReceipt(a.record, otherKeyConfig))).toBe('RECEIPT_INVALID');
    const relabelled: ReceiptRecord = { ...a.record, keyConfigDigest: keyConfigDigest(otherKeyConfig), keyId: decodeKeyConfig(otherKeyConfig).keyId };
    expect(code(() => checkReceipt(relabelled, otherKeyConfig))).toBe('RECEIPT_INVALID');
    // And the genuine receipt still passes (the checks above are not vacuous).
    expect(code(() => checkReceipt(a.record, a.keyConfig, a.signed))).toBeUndefined();
  });

  it('cloister receipt verify: 0 for the receipt and its evidence, RECEIPT_INVALID for another server\'s evidence', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cloister-receipt-'));
    try {
      const records: ReceiptRecord[] = [];
      const c = await connect(t.wsUrl, { policy: t.policy, trustedRoots: t.trustedRoots, onReceipt: (r) => records.push(r), receiptsV2: false });
      await c.classify('for the cli', { model: 'fake-cls' });
      await writeFile(join(dir, 'evidence.cbor'), c.evidenceFile());
      await c.close();
      const o = await connect(other.wsUrl, { policy: other.policy, trustedRoots: other.trustedRoots, receiptsV2: false });
      await writeFile(join(dir, 'other.cbor'), o.evidenceFile());
      await o.close();
      await writeFile(join(dir, 'receipt.json'), JSON.stringify(receiptToJson(records[0] as ReceiptRecord)));
      const log = vi.spyOn(console, 'log').mockImplementation(() => undefined);
      const err = vi.spyOn(console, 'error').mockImplementation(() => undefined);
      try {
        const args = (ev: string): string[] => ['verify', '--evidence', join(dir, ev), '--receipt', join(dir, 'receipt.json')];
        expect(await runReceiptCli(args('evidence.cbor'))).toBe(0);
        expect(String(log.mock.calls[0]?.[0])).toMatch(/^RECEIPT VERIFIED/);
        expect(await codeOfAsync(runReceiptCli(args('other.cbor')))).toBe('RECEIPT_INVALID');
        const wrongRequest = ['--request-digest', '00'.repeat(32)];
        expect(await codeOfAsync(runReceiptCli([...args('evidence.cbor'), ...wrongRequest]))).toBe('RECEIPT_INVALID');
      } finally {
        log.mockRestore();
        err.mockRestore();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a final end chunk that carries data the receipt does not cover', async () => {
    // A server speaking the real protocol with the real keys, whose answer puts the result in end.data.
    const fake = createServer((req, res) => {
      void (async () => {
        if (req.method === 'GET') {
          const upstream = await fetch(new URL(req.url ?? '/', t.httpUrl));
          res.writeHead(upstream.status, { 'content-type': upstream.headers.get('content-type') ?? 'application/cbor' });
          res.end(new Uint8Array(await upstream.arrayBuffer()));
          return;
        }
        const parts: Buffer[] = [];
        for await (const p of req) parts.push(p as Buffer);
        let gen: KeyGeneration | undefined;
        const opened = openChunkedRequest((keyId, suite) => {
          gen = t.server.keys.lookup(keyId, suite);
          return gen.recipient;
        }, new Uint8Array(Buffer.concat(parts)));
        const hasher = new ReceiptHasher(opened.plaintext);
        const signature = (gen as KeyGeneration).signReceipt(hasher.message());
        res.writeHead(200, { 'content-type': 'message/ohttp-chunked-res' });
        res.write(opened.response.start());
        res.end(opened.response.sealFinal(encodeResponseChunk({ t: 'end', data: fakeClassify('unsigned'), receipt: signature })));
      })().catch(() => res.destroy());
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(fake.address() as AddressInfo).port}`;
      const records: ReceiptRecord[] = [];
      // The fake answers v1 one-shot requests only.
      const c = await connect(url, { policy: t.policy, trustedRoots: t.trustedRoots, onReceipt: (r) => records.push(r), sessions: false, receiptsV2: false });
      try {
        expect(await codeOfAsync(c.classify('anything', { model: 'fake-cls' }))).toBe('PROTOCOL_VIOLATION');
        expect(records).toHaveLength(0);
      } finally {
        await c.close();
      }
    } finally {
      await new Promise<void>((r) => fake.close(() => r()));
    }
  });
});
