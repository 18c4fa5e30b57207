/**
 * A man-in-the-middle WebSocket relay for tests: it decodes every frame in both directions,
 * lets a test rewrite, drop, reorder or inject messages, and records every byte it sees.
 */
import { WebSocket, WebSocketServer } from 'ws';
import type { AddressInfo } from 'node:net';
import { decodeWireMessage, encodeWireMessage } from '../../src/protocol/wire.js';
import type { WireMessage } from '../../src/protocol/wire.js';

export type Direction = 'up' | 'down';
/** Return the messages to forward instead (empty: drop). `send` injects toward either side. */
export type Tamper = (msg: WireMessage, dir: Direction, send: (dir: Direction, m: WireMessage) => void) => WireMessage[];

export interface Relay {
  readonly url: string;
  readonly seen: Buffer[];
  tamper: Tamper;
  close(): Promise<void>;
}

export async function startRelay(upstreamUrl: string): Promise<Relay> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  const relay: Relay = {
    url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`,
    seen: [],
    tamper: (m) => [m],
    close: () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => r());
      }),
  };
  wss.on('connection', (client) => {
    const upstream = new WebSocket(upstreamUrl, { perMessageDeflate: false });
    const pending: Buffer[] = [];
    const sendTo = (dir: Direction, m: WireMessage): void => {
      const bytes = Buffer.from(encodeWireMessage(m));
      if (dir === 'up') {
        if (upstream.readyState === WebSocket.OPEN) upstream.send(bytes);
        else pending.push(bytes);
      } else client.send(bytes);
    };
    const forward = (dir: Direction, data: Buffer): void => {
      relay.seen.push(Buffer.from(data));
      let msg: WireMessage;
      try {
        msg = decodeWireMessage(new Uint8Array(data));
      } catch {
        if (dir === 'up') upstream.send(data);
        else client.send(data);
        return;
      }
      for (const m of relay.tamper(msg, dir, sendTo)) sendTo(dir, m);
    };
    upstream.on('open', () => {
      for (const b of pending.splice(0)) upstream.send(b);
    });
    client.on('message', (d: Buffer) => forward('up', d));
    upstream.on('message', (d: Buffer) => forward('down', d));
    client.on('close', () => upstream.close());
    upstream.on('close', () => client.close());
    upstream.on('error', () => client.terminate());
  });
  return relay;
}

/** Flips one bit of a copy of `b` at `i`. */
export function flip(b: Uint8Array, i: number): Uint8Array {
  const out = Uint8Array.from(b);
  out[i] = (out[i] ?? 0) ^ 0x01;
  return out;
}
