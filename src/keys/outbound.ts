/**
 * Outbound HTTP(S) from inside the TEE (the key broker, AWS KMS), bounded and, in a Nitro
 * Enclave, carried through the parent's egress relay (docs/KEYS.md "Reaching KMS and the
 * broker from an enclave").
 *
 * `Outbound` hands out an http.Agent and an https.Agent (for node:http requests and for the
 * AWS SDK's NodeHttpHandler). Their connections:
 * - with an egress route (`unix:/path`, the enclave end of the vsock bridge the image's
 *   entrypoint starts, since Node cannot open AF_VSOCK): open the stream, send the
 *   cloister-egress/1 header naming host:port (src/core/egress.ts), wait for "ok", then run
 *   TLS *over that stream* with servername = the real host name and the usual certificate
 *   checks, so TLS is end to end between the enclave and the endpoint and the parent relays
 *   ciphertext only. Plain http:// over egress is possible (a broker's release is HPKE-sealed
 *   anyway) but the relay then sees the HTTP framing.
 * - without: a direct TCP or TLS connection.
 * Either way, one connection per request (no keep-alive), and each is cut when it has read
 * more than `maxResponseBytes` (headers included) or lived longer than `timeoutMs`, so a
 * hostile or broken endpoint cannot make the TEE buffer without bound or wait forever. The
 * first such cut is kept in `tripped`, so the caller can name the limit instead of the
 * library's generic socket error.
 */
import { Agent as HttpAgent } from 'node:http';
import type { ClientRequestArgs } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { RequestOptions as HttpsRequestOptions } from 'node:https';
import { createConnection } from 'node:net';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { CloisterError } from '../errors.js';
import { encodeEgressRequest, MAX_EGRESS_REPLY_BYTES, parseEgressReply, readEgressLine } from '../core/egress.js';
import { checkUnixSocketPath } from '../core/unix-socket.js';
import { positiveInt } from '../core/validate.js';

export const OUTBOUND_DEFAULTS = {
  /** Key broker and KMS answers are a few KiB; 1 MiB leaves room and bounds memory. */
  maxResponseBytes: 1024 * 1024,
  timeoutMs: 15_000,
  connectTimeoutMs: 5_000,
} as const;

/** How the TEE reaches the outside: a Unix socket leading to the parent's `cloister relay --egress`. */
export interface EgressRoute {
  readonly path: string;
}

/** Parses `--egress unix:/path`. */
export function parseEgressRoute(text: string): EgressRoute {
  if (!text.startsWith('unix:') || text.length === 5) {
    throw new CloisterError('CONFIG_INVALID', `egress route '${text}' must be unix:/path (the enclave end of the vsock bridge to the parent's cloister relay --egress)`);
  }
  return { path: checkUnixSocketPath(text.slice(5)) };
}

export interface OutboundOptions {
  /** Through the parent's egress relay; default: connect directly. */
  readonly egress?: EgressRoute;
  /** Most bytes one connection may read (response headers and body). Default 1 MiB. */
  readonly maxResponseBytes?: number;
  /** Longest life of one connection, connect to last byte. Default 15 s. */
  readonly timeoutMs?: number;
  /** Reaching the egress relay (or the endpoint) and its answer. Default 5 s. */
  readonly connectTimeoutMs?: number;
  /** Extra trusted CA certificates (PEM) for https endpoints, e.g. a broker's private CA. */
  readonly ca?: string | Buffer;
}

type Callback = (err: Error | null, stream: Duplex) => void;

export class Outbound {
  readonly maxResponseBytes: number;
  readonly timeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly httpAgent: HttpAgent;
  readonly httpsAgent: HttpsAgent;
  /** The first limit that cut a connection (LIMIT_EXCEEDED or TIMEOUT), if any. */
  tripped: CloisterError | undefined;
  private readonly sockets = new Set<Duplex>();

  constructor(readonly options: OutboundOptions = {}) {
    this.maxResponseBytes = positiveInt('maxResponseBytes', options.maxResponseBytes, OUTBOUND_DEFAULTS.maxResponseBytes);
    this.timeoutMs = positiveInt('timeoutMs', options.timeoutMs, OUTBOUND_DEFAULTS.timeoutMs);
    this.connectTimeoutMs = positiveInt('connectTimeoutMs', options.connectTimeoutMs, OUTBOUND_DEFAULTS.connectTimeoutMs);
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    this.httpAgent = new (class extends HttpAgent {
      override createConnection(o: ClientRequestArgs, cb?: Callback): Duplex | null | undefined {
        self.open(o, false).then((s) => cb?.(null, s), (err: Error) => cb?.(err, undefined as unknown as Duplex));
        return undefined;
      }
    })({ keepAlive: false, maxSockets: 8 });
    this.httpsAgent = new (class extends HttpsAgent {
      override createConnection(o: HttpsRequestOptions, cb?: Callback): Duplex | null | undefined {
        self.open(o, true).then((s) => cb?.(null, s), (err: Error) => cb?.(err, undefined as unknown as Duplex));
        return undefined;
      }
    })({ keepAlive: false, maxSockets: 8, ...(options.ca === undefined ? {} : { ca: options.ca }) });
  }

  /** Cuts every open connection and frees the agents. */
  destroy(): void {
    for (const s of this.sockets) s.destroy();
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }

  private async open(o: ClientRequestArgs & { servername?: string | undefined }, tls: boolean): Promise<Duplex> {
    const host = (o.hostname ?? o.host ?? '').replace(/^\[|\]$/g, '');
    const port = Number(o.port ?? (tls ? 443 : 80));
    const servername = typeof o.servername === 'string' && o.servername !== '' ? o.servername : host;
    const ca = this.options.ca;
    const raw = this.options.egress === undefined ? undefined : await this.viaEgress(this.options.egress, host, port);
    const socket: Socket = tls
      ? tlsConnect({ ...(raw === undefined ? { host, port } : { socket: raw, host }), servername: /^[\d.]+$/.test(servername) ? '' : servername, ...(ca === undefined ? {} : { ca }), minVersion: 'TLSv1.2', rejectUnauthorized: true })
      : (raw ?? createConnection({ host, port }));
    return this.guard(socket, raw);
  }

  /** The egress stream to host:port, after the relay said "ok". */
  private async viaEgress(route: EgressRoute, host: string, port: number): Promise<Socket> {
    const s = createConnection({ path: route.path });
    s.on('error', () => undefined);
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new CloisterError('TIMEOUT', `egress relay at ${route.path} did not accept within ${this.connectTimeoutMs} ms`)), this.connectTimeoutMs);
        s.once('connect', () => {
          clearTimeout(timer);
          resolve();
        });
        s.once('error', (err) => {
          clearTimeout(timer);
          reject(new CloisterError('CONNECTION_FAILED', `egress relay at ${route.path} is not reachable`, { cause: err }));
        });
      });
      s.write(encodeEgressRequest({ host, port }));
      const { line, rest } = await readEgressLine(s, MAX_EGRESS_REPLY_BYTES, this.connectTimeoutMs, `egress relay at ${route.path}`);
      const reply = parseEgressReply(line);
      if (reply !== 'ok') throw new CloisterError(reply, `egress relay at ${route.path} refused ${host}:${port}: ${reply}`, { detail: { target: `${host}:${port}`, origin: 'relay' } });
      if (rest.byteLength > 0) throw new CloisterError('PROTOCOL_VIOLATION', `egress relay at ${route.path} sent bytes before the endpoint did`);
      return s;
    } catch (err) {
      s.destroy();
      throw err;
    }
  }

  private guard(socket: Socket, raw: Socket | undefined): Socket {
    this.sockets.add(socket);
    let read = 0;
    const trip = (err: CloisterError): void => {
      this.tripped ??= err;
      socket.destroy(err);
      raw?.destroy();
    };
    const timer = setTimeout(() => trip(new CloisterError('TIMEOUT', `outbound connection to ${socket.remoteAddress ?? 'the endpoint'} still open after ${this.timeoutMs} ms`, { detail: { limitMs: this.timeoutMs } })), this.timeoutMs);
    timer.unref();
    socket.on('data', (chunk: Buffer) => {
      read += chunk.byteLength;
      if (read > this.maxResponseBytes) trip(new CloisterError('LIMIT_EXCEEDED', `outbound answer exceeds ${this.maxResponseBytes} bytes (maxResponseBytes)`, { detail: { limit: this.maxResponseBytes } }));
    });
    socket.once('close', () => {
      clearTimeout(timer);
      this.sockets.delete(socket);
      raw?.destroy();
    });
    // The egress stream was left paused after the relay's answer; our listener is attached, and
    // the HTTP client attaches its own before any byte can arrive (the request is not sent yet).
    socket.resume();
    return socket;
  }
}

/** The CloisterError in `err` or its `cause` chain (libraries wrap what our agents raise), if any. */
export function cloisterCause(err: unknown): CloisterError | undefined {
  let e: unknown = err;
  for (let i = 0; i < 8 && e instanceof Error; i++) {
    if (e instanceof CloisterError) return e;
    e = e.cause;
  }
  return undefined;
}
