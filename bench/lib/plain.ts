/**
 * BENCHMARK-ONLY plaintext baseline: the Cloister WebSocket transport minus the sealing.
 *
 * Same `ws` library and options as src/server/server.ts (no compression, same maxPayload),
 * the same wire framing (src/protocol/wire.ts: one CBOR message per frame, multiplexed by
 * stream id), the same inner request and response-chunk encodings
 * (src/protocol/messages.ts) and the same engine - but no HPKE, no chunked-OHTTP framing,
 * no receipt signature and no replay window. It is what the server would cost if it did
 * not protect anything, so sealed/plaintext isolates the price of the protection.
 * Never use outside bench/.
 */
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import { decodeWireMessage, encodeWireMessage } from '../../src/protocol/wire.js';
import { decodeResponseChunk, decodeSealedRequest, encodeResponseChunk, encodeSealedRequest } from '../../src/protocol/messages.js';
import type { CborInput } from '../../src/core/cbor.js';
import type { Engine } from '../../src/inference/types.js';

const MAX_PAYLOAD = 1024 * 1024;

function bytesOf(data: unknown): Uint8Array {
  if (!(data instanceof Buffer)) throw new Error('binary frames only');
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

export interface PlainServer {
  readonly url: string;
  close(): Promise<void>;
}

export async function startPlainServer(engine: Engine): Promise<PlainServer> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, maxPayload: MAX_PAYLOAD, clientTracking: true });
  wss.on('connection', (ws) => {
    const abort = new AbortController();
    ws.on('close', () => abort.abort());
    ws.on('message', (data) => {
      const msg = decodeWireMessage(bytesOf(data));
      if (msg.t !== 'req') return;
      const sid = msg.sid;
      const req = decodeSealedRequest(msg.body);
      void (async () => {
        try {
          for await (const chunk of engine.run(
            { op: req.op, model: req.model, input: req.input, params: req.params ?? {}, stream: req.stream },
            { signal: abort.signal },
          )) {
            ws.send(encodeWireMessage({ t: 'res', sid, body: encodeResponseChunk({ t: 'data', data: chunk as CborInput }) }));
          }
          ws.send(encodeWireMessage({ t: 'res', sid, body: new Uint8Array(0), fin: true }));
        } catch {
          ws.send(encodeWireMessage({ t: 'err', sid, code: 'ENGINE_FAILED' }));
        }
      })();
    });
  });
  await new Promise<void>((resolve) => wss.once('listening', resolve));
  const port = (wss.address() as AddressInfo).port;
  return {
    url: `ws://127.0.0.1:${port}/`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => resolve());
      }),
  };
}

interface Pending {
  readonly chunks: unknown[];
  resolve(v: unknown[]): void;
  reject(e: Error): void;
}

/** The matching client: one connection, many requests in flight. */
export class PlainClient {
  readonly #ws: WebSocket;
  readonly #pending = new Map<number, Pending>();
  #nextSid = 1;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.on('message', (data) => {
      const msg = decodeWireMessage(bytesOf(data));
      if (msg.t === 'evidence' || msg.t === 'evidence-req' || msg.t === 'req' || msg.t === 'cancel') return;
      if (msg.sid === undefined) return;
      const p = this.#pending.get(msg.sid);
      if (p === undefined) return;
      if (msg.t === 'res' && msg.fin !== true) {
        const c = decodeResponseChunk(msg.body);
        if (c.t === 'data') p.chunks.push(c.data);
      } else if (msg.t === 'res') {
        this.#pending.delete(msg.sid);
        p.resolve(p.chunks);
      } else {
        this.#pending.delete(msg.sid);
        p.reject(new Error(`plaintext request failed: ${msg.code}`));
      }
    });
    ws.on('close', () => {
      for (const p of this.#pending.values()) p.reject(new Error('connection closed'));
      this.#pending.clear();
    });
  }

  static async connect(url: string): Promise<PlainClient> {
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: MAX_PAYLOAD });
    ws.binaryType = 'nodebuffer';
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return new PlainClient(ws);
  }

  /** One request; resolves with its data chunks. */
  request(op: 'classify' | 'embed', model: string, input: CborInput): Promise<unknown[]> {
    const sid = this.#nextSid++;
    const body = encodeSealedRequest({ v: 1, op, model, input, stream: false, ts: Date.now(), id: new Uint8Array(randomBytes(16)) });
    return new Promise<unknown[]>((resolve, reject) => {
      this.#pending.set(sid, { chunks: [], resolve, reject });
      this.#ws.send(encodeWireMessage({ t: 'req', sid, body }));
    });
  }

  close(): void {
    this.#ws.close();
  }
}
