/**
 * Confidentiality by traffic shape (issue 17, item 6): with padding (the default), the sealed
 * sizes on the wire do not tell the demo classifier's answers apart, nor inputs of different
 * lengths within one size bucket, over WebSocket and HTTP; and the server log holds only
 * bucketed sizes. Sizes are measured on the wire: every byte between the real client and the
 * server passes a counting loopback proxy.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect as tcpConnect } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/client.js';
import type { CloisterClient, ConnectOptions } from '../../src/client/client.js';
import { buildDemoModels } from '../../tools/demo-model/build.js';
import { OnnxEngine } from '../../src/inference/onnx/engine.js';
import { sealChunkedRequest } from '../../src/protocol/chunked.js';
import { decodeKeyConfig, sealTargetFromKeyConfig } from '../../src/protocol/key-config.js';
import { encodeSealedRequest } from '../../src/protocol/messages.js';
import { createLogger } from '../../src/server/log.js';
import { serverConfigDigest } from '../../src/server/server.js';
import { FakeEngine, startTestServer } from './helpers.js';
import type { TestServer } from './helpers.js';

interface CountingProxy {
  readonly port: number;
  /** Bytes client -> server and server -> client since the last reset. */
  readonly counts: { up: number; down: number };
  reset(): void;
  close(): Promise<void>;
}

/** A loopback TCP proxy that counts the bytes it forwards each way (before forwarding them). */
async function countingProxy(targetPort: number): Promise<CountingProxy> {
  const counts = { up: 0, down: 0 };
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = tcpConnect(targetPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    }
    client.on('data', (d: Buffer) => {
      counts.up += d.byteLength;
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      counts.down += d.byteLength;
      client.write(d);
    });
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    counts,
    reset() {
      counts.up = 0;
      counts.down = 0;
    },
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Clinical notes; the demo classifier answers neurology, cardiology, gastroenterology (and orthopedics) among them. */
const NOTES = [
  'Worsening headaches and left-sided weakness; MRI ordered to rule out stroke.',
  'Seizure last night, EEG abnormal, neurologist to review anticonvulsant dose.',
  'Patient reports crushing chest pain radiating to the left arm; troponin elevated.',
  'Atrial fibrillation with rapid ventricular rate, started on anticoagulation.',
  'Abdominal pain after meals, colonoscopy shows inflamed bowel; liver enzymes normal.',
  'Heartburn and reflux for months, endoscopy scheduled for the stomach and esophagus.',
];

describe('response and request sizes on the wire (demo classifier)', () => {
  let dir: string;
  let engine: OnnxEngine;
  let t: TestServer;
  let proxy: CountingProxy;
  const logLines: string[] = [];
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cloister-pad-'));
    const built = await buildDemoModels({ outDir: dir });
    engine = new OnnxEngine({ models: [{ name: 'classifier', dir: built.classifierDir }] });
    await engine.start();
    t = await startTestServer({ engines: [engine], logger: createLogger({ sink: (l) => logLines.push(l) }) });
    proxy = await countingProxy(t.urls.port ?? 0);
  }, 180_000);
  afterAll(async () => {
    await proxy.close();
    await t.close();
    await engine.close();
    await rm(dir, { recursive: true, force: true });
  });

  const url = (kind: 'ws' | 'http'): string => (kind === 'ws' ? `ws://127.0.0.1:${proxy.port}/` : `http://127.0.0.1:${proxy.port}`);

  /** Per note: the top label and the bytes each way for its classify call. */
  async function measure(kind: 'ws' | 'http', options: Partial<ConnectOptions> = {}): Promise<{ label: string; up: number; down: number }[]> {
    const c: CloisterClient = await connect(url(kind), { policy: t.policy, trustedRoots: t.trustedRoots, ...options });
    try {
      const out: { label: string; up: number; down: number }[] = [];
      for (const note of NOTES) {
        proxy.reset();
        const [top] = await c.classify(note, { model: 'classifier' });
        out.push({ label: top?.label ?? '', up: proxy.counts.up, down: proxy.counts.down });
      }
      return out;
    } finally {
      await c.close();
    }
  }

  for (const kind of ['ws', 'http'] as const) {
    it(`over ${kind}, every answer has the same size on the wire, and so has every request`, async () => {
      const m = await measure(kind);
      const labels = new Set(m.map((x) => x.label));
      for (const l of ['cardiology', 'gastroenterology', 'neurology']) expect(labels).toContain(l);
      // One size for every answer; and the notes differ in length (74 to 83 characters) but
      // share one bucket, so one size for every request too.
      const distinct = { responseSizes: new Set(m.map((x) => x.down)).size, requestSizes: new Set(m.map((x) => x.up)).size };
      expect(distinct).toEqual({ responseSizes: 1, requestSizes: 1 });
    }, 60_000);
  }

  it('the measurement sees the difference without padding (pad: false): labels differ in size', async () => {
    const m = await measure('ws', { pad: false });
    const byLabel = new Map(m.map((x) => [x.label, x.down]));
    // Labels of different lengths (neurology, cardiology, gastroenterology): different sizes.
    expect(byLabel.size).toBeGreaterThanOrEqual(3);
    expect(new Set(byLabel.values()).size).toBe(byLabel.size);
  }, 60_000);

  it('logs only bucketed sizes: no exact sealed size of a request appears in the log', async () => {
    // One request sealed here, so its exact sizes are known: unpadded, to make them odd.
    const kc = decodeKeyConfig(t.server.keys.current().keyConfig);
    const plaintext = encodeSealedRequest({
      v: 1, op: 'classify', model: 'classifier', input: NOTES[0] ?? '', stream: false, ts: Date.now(), id: new Uint8Array(randomBytes(16)), caps: [],
    });
    const sealed = sealChunkedRequest(sealTargetFromKeyConfig(kc), plaintext);
    logLines.length = 0;
    const body = await new Promise<Uint8Array>((resolve, reject) => {
      const req = request(`${t.httpUrl}/v1/sealed`, { method: 'POST', headers: { 'content-type': 'message/ohttp-chunked-req' } }, (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () => resolve(new Uint8Array(Buffer.concat(parts))));
      });
      req.on('error', reject);
      req.end(sealed.bytes);
    });
    const exact = [sealed.bytes.byteLength, body.byteLength];
    expect(exact.every((n) => (n & (n - 1)) !== 0)).toBe(true);
    const done = logLines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['event'] === 'request.done');
    expect(done).toHaveLength(1);
    const sizes = [done[0]?.['bytesIn'], done[0]?.['bytesOut']];
    // Both under 256 bytes: written as 256 (logSizeBucket), never as the exact values.
    expect(exact.every((n) => n < 256)).toBe(true);
    expect(sizes).toEqual([256, 256]);
    for (const n of exact) expect(logLines.join('\n')).not.toContain(`:${n}`);
  });
});

describe('streamed chunks, and a server with padding off (fake engine)', () => {
  /** Bytes server -> client for each `generate` call with these params, over WebSocket. */
  async function downSizes(serverPad: boolean, clientPad: boolean, sizes: readonly number[]): Promise<number[]> {
    const t = await startTestServer({ engine: new FakeEngine(), padResponses: serverPad });
    const proxy = await countingProxy(t.urls.port ?? 0);
    try {
      const c = await connect(`ws://127.0.0.1:${proxy.port}/`, { policy: t.policy, trustedRoots: t.trustedRoots, pad: clientPad });
      try {
        const out: number[] = [];
        for (const size of sizes) {
          proxy.reset();
          const got: unknown[] = [];
          for await (const r of c.request({ op: 'generate', model: 'fake-gen', input: 'x', params: { n: 2, size }, stream: true })) got.push(r);
          expect(got).toHaveLength(2);
          out.push(proxy.counts.down);
        }
        return out;
      } finally {
        await c.close();
      }
    } finally {
      await proxy.close();
      await t.close();
    }
  }

  it('stream chunks of different lengths within one bucket have the same size', async () => {
    expect(new Set(await downSizes(true, true, [1, 40, 150])).size).toBe(1);
  });

  it('padResponses: false (server) or pad: false (client): unpadded, answers still verify', async () => {
    expect(new Set(await downSizes(false, true, [1, 40, 150])).size).toBe(3);
    expect(new Set(await downSizes(true, false, [1, 40, 150])).size).toBe(3);
  });
});

describe('padding in the attested configuration', () => {
  it('padResponses: false changes the config digest (key config key 9); the default digest is as before', () => {
    const engines = [new FakeEngine()];
    const base = serverConfigDigest({ engines, platform: 'simulated' });
    expect(serverConfigDigest({ engines, platform: 'simulated', padResponses: true })).toEqual(base);
    expect(serverConfigDigest({ engines, platform: 'simulated', padResponses: false })).not.toEqual(base);
  });
});
