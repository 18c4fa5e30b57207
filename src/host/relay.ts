/**
 * The parent-side relay: accepts client connections (TCP, optionally TLS) and forwards each
 * one, byte for byte, to the enclave through an UpstreamConnector (vsock via socat, or a
 * Unix socket). It is outside the trust boundary (DESIGN.md "Trust model"): everything it
 * carries is HPKE-sealed, and it never reads, logs or stores content. It keeps only counters.
 *
 * Limits (each a named option with a safe default): maxConnections, maxConnectionsPerSource, idleTimeoutMs,
 * connectTimeoutMs, handshakeTimeoutMs (TLS), drainTimeoutMs (shutdown).
 */
import { createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createSecureContext, TLSSocket } from 'node:tls';
import type { SecureContext } from 'node:tls';
import { CloisterError } from '../errors.js';
import type { UpstreamConnector } from './enclave-leg.js';
import { LOCAL_SOURCE, sourceOf } from '../core/source-address.js';
import { positiveInt } from '../core/validate.js';

export const RELAY_DEFAULTS = {
  maxConnections: 1024,
  maxConnectionsPerSource: 64,
  idleTimeoutMs: 120_000,
  connectTimeoutMs: 5_000,
  handshakeTimeoutMs: 10_000,
  drainTimeoutMs: 30_000,
} as const;

export type RelayListen = { readonly host: string; readonly port: number } | { readonly path: string };

export interface RelayOptions {
  readonly listen: RelayListen;
  readonly upstream: UpstreamConnector;
  /** PEM certificate chain and key: when given, clients speak TLS to the relay. */
  readonly tls?: { readonly cert: string | Uint8Array; readonly key: string | Uint8Array };
  /** Concurrent client connections; more are closed at once. Default 1024. */
  readonly maxConnections?: number;
  /**
   * Concurrent connections from one client address (IPv4-mapped IPv6 folded to IPv4); more
   * are closed at once, so one client cannot take every connection the relay (and, behind
   * it, the enclave) has. Not applied to clients on a Unix socket. Default 64.
   */
  readonly maxConnectionsPerSource?: number;
  /** Close a connection with no bytes in either direction for this long. Default 120 s. */
  readonly idleTimeoutMs?: number;
  /** Give up reaching the enclave after this long. Default 5 s. */
  readonly connectTimeoutMs?: number;
  /** Give up a TLS handshake after this long. Default 10 s. */
  readonly handshakeTimeoutMs?: number;
  /** On close(), wait this long for open connections before cutting them. Default 30 s. */
  readonly drainTimeoutMs?: number;
  /** Content-free events for the operator's log. */
  readonly onEvent?: (event: RelayEvent) => void;
}

export type RelayEvent =
  | { readonly type: 'listening'; readonly address: string }
  | { readonly type: 'rejected'; readonly reason: 'max-connections' | 'max-connections-per-source' | 'shutting-down' }
  | { readonly type: 'upstream-failed'; readonly code: string }
  | { readonly type: 'timeout'; readonly kind: 'idle' | 'connect' | 'handshake' }
  | { readonly type: 'closed'; readonly bytesIn: number; readonly bytesOut: number }
  | { readonly type: 'draining'; readonly active: number }
  | { readonly type: 'stopped'; readonly forced: number };

interface RelayStats {
  readonly connectionsAccepted: number;
  readonly connectionsActive: number;
  readonly connectionsRejected: number;
  readonly upstreamFailures: number;
  readonly idleTimeouts: number;
  readonly connectTimeouts: number;
  readonly handshakeFailures: number;
  /** Bytes from clients to the enclave. */
  readonly bytesToEnclave: number;
  /** Bytes from the enclave to clients. */
  readonly bytesFromEnclave: number;
}

/** One metrics line for logs: counters only, never content. */
export function formatRelayStats(s: RelayStats): string {
  return (
    `relay active=${s.connectionsActive} accepted=${s.connectionsAccepted} rejected=${s.connectionsRejected} ` +
    `upstream_failures=${s.upstreamFailures} idle_timeouts=${s.idleTimeouts} connect_timeouts=${s.connectTimeouts} ` +
    `handshake_failures=${s.handshakeFailures} bytes_to_enclave=${s.bytesToEnclave} bytes_from_enclave=${s.bytesFromEnclave}`
  );
}

/** Prometheus text exposition of the same counters. */
export function formatRelayMetrics(s: RelayStats): string {
  const lines: string[] = [];
  const add = (name: string, type: 'counter' | 'gauge', help: string, value: number): void => {
    lines.push(`# HELP cloister_relay_${name} ${help}`, `# TYPE cloister_relay_${name} ${type}`, `cloister_relay_${name} ${value}`);
  };
  add('connections_active', 'gauge', 'Open client connections.', s.connectionsActive);
  add('connections_accepted_total', 'counter', 'Client connections accepted.', s.connectionsAccepted);
  add('connections_rejected_total', 'counter', 'Client connections refused (limit or shutdown).', s.connectionsRejected);
  add('upstream_failures_total', 'counter', 'Failed attempts to reach the enclave.', s.upstreamFailures);
  add('idle_timeouts_total', 'counter', 'Connections closed for inactivity.', s.idleTimeouts);
  add('connect_timeouts_total', 'counter', 'Enclave connects that timed out.', s.connectTimeouts);
  add('handshake_failures_total', 'counter', 'TLS handshakes that failed or timed out.', s.handshakeFailures);
  add('bytes_to_enclave_total', 'counter', 'Bytes relayed from clients to the enclave.', s.bytesToEnclave);
  add('bytes_from_enclave_total', 'counter', 'Bytes relayed from the enclave to clients.', s.bytesFromEnclave);
  return lines.join('\n') + '\n';
}

export class Relay {
  private readonly server: Server;
  private readonly connections = new Set<{ client: Duplex; upstream?: Duplex }>();
  private readonly maxConnections: number;
  private readonly maxConnectionsPerSource: number;
  /** Open client connections per source address (sources with none are removed). */
  private readonly perSource = new Map<string, number>();
  private readonly idleTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly handshakeTimeoutMs: number;
  private readonly drainTimeoutMs: number;
  private readonly secureContext: SecureContext | undefined;
  private closing: Promise<void> | undefined;
  private counters = {
    connectionsAccepted: 0,
    connectionsRejected: 0,
    upstreamFailures: 0,
    idleTimeouts: 0,
    connectTimeouts: 0,
    handshakeFailures: 0,
    bytesToEnclave: 0,
    bytesFromEnclave: 0,
  };

  constructor(private readonly options: RelayOptions) {
    this.maxConnections = positiveInt('maxConnections', options.maxConnections, RELAY_DEFAULTS.maxConnections);
    this.maxConnectionsPerSource = positiveInt('maxConnectionsPerSource', options.maxConnectionsPerSource, RELAY_DEFAULTS.maxConnectionsPerSource);
    this.idleTimeoutMs = positiveInt('idleTimeoutMs', options.idleTimeoutMs, RELAY_DEFAULTS.idleTimeoutMs);
    this.connectTimeoutMs = positiveInt('connectTimeoutMs', options.connectTimeoutMs, RELAY_DEFAULTS.connectTimeoutMs);
    this.handshakeTimeoutMs = positiveInt('handshakeTimeoutMs', options.handshakeTimeoutMs, RELAY_DEFAULTS.handshakeTimeoutMs);
    this.drainTimeoutMs = positiveInt('drainTimeoutMs', options.drainTimeoutMs, RELAY_DEFAULTS.drainTimeoutMs);
    this.secureContext = options.tls === undefined ? undefined : createSecureContext({ cert: toPem(options.tls.cert), key: toPem(options.tls.key), minVersion: 'TLSv1.2' });
    this.server = createServer({ pauseOnConnect: true, noDelay: true }, (socket) => this.accept(socket));
  }

  /** Starts listening; resolves with the bound address ("host:port" or the socket path). */
  listen(): Promise<string> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(new CloisterError('CONFIG_INVALID', 'relay could not listen', { cause: err }));
      this.server.once('error', onError);
      const done = (): void => {
        this.server.off('error', onError);
        const a = this.address();
        this.emit({ type: 'listening', address: a });
        resolve(a);
      };
      const l = this.options.listen;
      if ('path' in l) this.server.listen(l.path, done);
      else this.server.listen(l.port, l.host, done);
    });
  }

  address(): string {
    const a = this.server.address();
    if (a === null) return '';
    if (typeof a === 'string') return a;
    const info: AddressInfo = a;
    return info.family === 'IPv6' ? `[${info.address}]:${info.port}` : `${info.address}:${info.port}`;
  }

  /** The bound TCP port (0 when listening on a path or not yet listening). */
  port(): number {
    const a = this.server.address();
    return a !== null && typeof a === 'object' ? a.port : 0;
  }

  stats(): RelayStats {
    return { ...this.counters, connectionsActive: this.connections.size };
  }

  private emit(event: RelayEvent): void {
    try {
      this.options.onEvent?.(event);
    } catch {
      // A logging hook must never break relaying.
    }
  }

  private accept(socket: Socket): void {
    const source = sourceOf(socket.remoteAddress);
    const held = source === LOCAL_SOURCE ? 0 : (this.perSource.get(source) ?? 0);
    const reason = this.closing !== undefined
      ? 'shutting-down'
      : this.connections.size >= this.maxConnections
        ? 'max-connections'
        : held >= this.maxConnectionsPerSource
          ? 'max-connections-per-source'
          : undefined;
    if (reason !== undefined) {
      this.counters.connectionsRejected += 1;
      this.emit({ type: 'rejected', reason });
      socket.destroy();
      return;
    }
    if (source !== LOCAL_SOURCE) {
      this.perSource.set(source, held + 1);
      socket.once('close', () => {
        const n = (this.perSource.get(source) ?? 1) - 1;
        if (n <= 0) this.perSource.delete(source);
        else this.perSource.set(source, n);
      });
    }
    this.counters.connectionsAccepted += 1;
    socket.on('error', () => undefined);
    if (this.secureContext === undefined) {
      this.bridge(socket, socket);
      return;
    }
    const tlsSocket = new TLSSocket(socket, { isServer: true, secureContext: this.secureContext });
    const entry = { client: tlsSocket as Duplex };
    this.connections.add(entry); // count the handshake against maxConnections
    tlsSocket.on('error', () => undefined);
    const timer = setTimeout(() => {
      this.counters.handshakeFailures += 1;
      this.emit({ type: 'timeout', kind: 'handshake' });
      tlsSocket.destroy();
    }, this.handshakeTimeoutMs);
    const drop = (): void => {
      clearTimeout(timer);
      this.connections.delete(entry);
    };
    tlsSocket.once('close', () => {
      if (this.connections.has(entry)) {
        drop();
        this.counters.handshakeFailures += 1;
        this.closed();
      }
    });
    tlsSocket.once('secure', () => {
      drop();
      this.bridge(tlsSocket, socket);
    });
    socket.resume();
  }

  /** Connects the client to the enclave and pumps bytes both ways. */
  private bridge(client: Socket | TLSSocket, raw: Socket): void {
    const entry: { client: Duplex; upstream?: Duplex } = { client };
    this.connections.add(entry);
    let bytesIn = 0;
    let bytesOut = 0;
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      client.destroy();
      entry.upstream?.destroy();
      this.connections.delete(entry);
      this.emit({ type: 'closed', bytesIn, bytesOut });
      this.closed();
    };
    client.on('error', finish);
    client.once('close', finish);
    // Idle: no bytes either way on the client socket (reads and writes both reset it).
    raw.setTimeout(this.idleTimeoutMs, () => {
      this.counters.idleTimeouts += 1;
      this.emit({ type: 'timeout', kind: 'idle' });
      finish();
    });

    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), this.connectTimeoutMs);
    this.options.upstream.connect(ac.signal).then(
      (upstream) => {
        clearTimeout(timer);
        if (finished) {
          upstream.destroy();
          return;
        }
        entry.upstream = upstream;
        upstream.on('error', finish);
        upstream.once('close', finish);
        client.on('data', (chunk: Buffer) => {
          bytesIn += chunk.byteLength;
          this.counters.bytesToEnclave += chunk.byteLength;
        });
        upstream.on('data', (chunk: Buffer) => {
          bytesOut += chunk.byteLength;
          this.counters.bytesFromEnclave += chunk.byteLength;
        });
        // pipe() applies backpressure both ways and half-closes on 'end'.
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      },
      (err: unknown) => {
        clearTimeout(timer);
        if (ac.signal.aborted) {
          this.counters.connectTimeouts += 1;
          this.emit({ type: 'timeout', kind: 'connect' });
        } else {
          this.counters.upstreamFailures += 1;
          this.emit({ type: 'upstream-failed', code: err instanceof CloisterError ? err.code : 'CONNECTION_FAILED' });
        }
        finish();
      },
    );
  }

  private drainWaiters: (() => void)[] = [];

  private closed(): void {
    if (this.connections.size === 0) {
      for (const w of this.drainWaiters.splice(0)) w();
    }
  }

  /**
   * Stops accepting, lets open connections finish for up to drainTimeoutMs, then cuts the
   * rest. Idempotent.
   */
  close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    this.closing = new Promise<void>((resolve) => {
      const listenerClosed = new Promise<void>((r) => this.server.close(() => r()));
      this.emit({ type: 'draining', active: this.connections.size });
      const drained = new Promise<number>((r) => {
        if (this.connections.size === 0) {
          r(0);
          return;
        }
        const timer = setTimeout(() => {
          const forced = this.connections.size;
          for (const c of [...this.connections]) {
            c.client.destroy();
            c.upstream?.destroy();
          }
          r(forced);
        }, this.drainTimeoutMs);
        this.drainWaiters.push(() => {
          clearTimeout(timer);
          r(0);
        });
      });
      void drained.then(async (forced) => {
        await listenerClosed;
        this.emit({ type: 'stopped', forced });
        resolve();
      });
    });
    return this.closing;
  }
}

function toPem(v: string | Uint8Array): string | Buffer {
  return typeof v === 'string' ? v : Buffer.from(v);
}

/** Creates a relay and starts listening. */
export async function startRelay(options: RelayOptions): Promise<Relay> {
  const relay = new Relay(options);
  await relay.listen();
  return relay;
}
