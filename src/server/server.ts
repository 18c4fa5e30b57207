/**
 * The Cloister server: key generations, evidence, replay window, engine routing, and the
 * WebSocket + HTTP transports on one listener (TCP host:port or a Unix socket path).
 */
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer } from 'ws';
import { CloisterError } from '../errors.js';
import type { Attester, Platform } from '../core/types.js';
import type { Engine, ModelInfo } from '../inference/types.js';
import type { ServerContext } from './context.js';
import type { GuardPolicy } from '../guard/policy.js';
import { EvidenceService } from './evidence.js';
import type { HandlerDeps } from './handler.js';
import type { ClientKeyTable } from './client-keys.js';
import { DEFAULT_KEY_GRACE_MS, DEFAULT_KEY_ROTATION_INTERVAL_MS, KeyManager } from './keys.js';
import type { ReceiptLogOptions } from '../protocol/receipt-v2.js';
import type { FleetKey, KeyGeneration } from './keys.js';
import { silentLogger } from './log.js';
import type { Logger } from './log.js';
import { resolveLimits } from './options.js';
import type { ServerLimits } from './options.js';
import { SessionTable } from './sessions.js';
import { ReplayWindow } from './replay.js';
import { LOCAL_SOURCE, SourceTable, sourceOf } from './sources.js';
import { EngineRouter } from './router.js';
import { engineTagger } from '../guard/tagger.js';
import { renderMetrics } from './metrics.js';
import type { OpsProvider, Readiness } from './ops.js';
import { ServerStats } from './stats.js';
import { HttpTransport } from './transports/http.js';
import { WsSession } from './transports/ws.js';
import { MAX_FRAME_BYTES_HEADER, MAX_IN_FLIGHT_HEADER } from '../protocol/wire.js';
import { checkUnixSocketPath } from '../core/unix-socket.js';

export type ListenTarget = { readonly host: string; readonly port: number } | { readonly path: string };

export interface CloisterServerOptions {
  /** Engines, already started (their `models()` are final). */
  readonly engines: readonly Engine[];
  readonly attester: Attester;
  readonly logger?: Logger;
  readonly limits?: Partial<ServerLimits>;
  /** How long one key generation is current. Default 1 h. */
  readonly keyRotationIntervalMs?: number;
  /** How long the previous generation still opens requests after a rotation. Default 5 min. */
  readonly keyGraceMs?: number;
  /** Receipts v2 (PROTOCOL.md section 12): per-generation log bound (`maxLeaves`), head period (`treeHeadIntervalMs`), heads kept. */
  readonly receiptLog?: Omit<ReceiptLogOptions, 'now'>;
  /** Clock, for tests. */
  readonly now?: () => number;
  /**
   * Terminate TLS on the listener (`cloister serve --tls-cert/--tls-key`): PEM certificate
   * chain and private key. URLs become `https://` and `wss://`. The sealed channel does not
   * need TLS for confidentiality; browsers, proxies and load balancers often expect it.
   */
  readonly tls?: { readonly cert: string | Uint8Array; readonly key: string | Uint8Array };
  /**
   * Pad response chunks to size buckets for clients that declare the `pad` capability
   * (PROTOCOL.md section 4, "Padding"), so that sizes on the wire do not tell answers apart.
   * Default true; false is measured into the config digest (key config key 9).
   */
  readonly padResponses?: boolean;
  /**
   * Client API keys and per-key quotas (`cloister serve --client-keys FILE`,
   * src/server/client-keys.ts). When set, every sealed request must carry a listed key
   * (UNAUTHORIZED otherwise). Not measured into configDigest: the keys change without a new image.
   */
  readonly clientKeys?: ClientKeyTable;
  /** Fleet keys from the key broker (`cloister serve --fleet-key`; src/server/keys.ts FleetKey). */
  readonly fleetKeys?: readonly FleetKey[];
  /**
   * The output guard's policy for every answer (src/guard/, docs/GUARD.md). Default redact;
   * another value is measured into the config digest.
   */
  readonly guardPolicy?: GuardPolicy;
  /**
   * A token-classification model of `engines` whose NAME and ID findings the guard adds to its
   * rules' (src/guard/tagger.ts; `serve --guard-tagger`). Measured into the config digest.
   */
  readonly guardTagger?: string;
}

export interface ServerAddress {
  /** `ws://host:port/` (`wss://` with TLS) or `ws+unix:/path:/` */
  readonly wsUrl: string;
  /** `http://host:port` (`https://` with TLS; absent for a Unix socket). */
  readonly httpUrl?: string;
  readonly port?: number;
  readonly path?: string;
}

/**
 * SHA-256 over the server's effective configuration (PROTOCOL.md section 1, key 9): limits,
 * key lifetimes, platform, engines and the served models with their digests, as canonical
 * JSON. `cloister serve` computes it before the attester exists (the simulated platform
 * measures it into PCR1); the server computes the same value for its key config.
 */
export function serverConfigDigest(input: {
  readonly engines: readonly Engine[];
  readonly platform: Platform;
  readonly limits?: Partial<ServerLimits>;
  readonly keyRotationIntervalMs?: number;
  readonly keyGraceMs?: number;
  readonly padResponses?: boolean;
  readonly guardPolicy?: GuardPolicy;
  readonly guardTagger?: string;
}): Uint8Array {
  const limits = resolveLimits(input.limits);
  const models = new EngineRouter(input.engines).models();
  const canonical = JSON.stringify({
    v: 1,
    platform: input.platform,
    engines: input.engines.map((e) => e.kind),
    models: models.map((m: ModelInfo) => ({ name: m.name, task: m.task, ops: [...m.operations], digest: Buffer.from(m.digest).toString('hex') })),
    limits: Object.fromEntries(Object.entries(limits).sort(([a], [b]) => (a < b ? -1 : 1))),
    keyRotationIntervalMs: input.keyRotationIntervalMs ?? DEFAULT_KEY_ROTATION_INTERVAL_MS,
    keyGraceMs: input.keyGraceMs ?? DEFAULT_KEY_GRACE_MS,
    // Only when off, so the digest of a default configuration is unchanged.
    ...(input.padResponses === false ? { padResponses: false } : {}),
    // Only when not the default (redact), so the digest of a default configuration is unchanged.
    ...(input.guardPolicy === undefined || input.guardPolicy === 'redact' ? {} : { guardPolicy: input.guardPolicy }),
    ...(input.guardTagger === undefined ? {} : { guardTagger: input.guardTagger }),
  });
  return Uint8Array.from(createHash('sha256').update(canonical).digest());
}

export class CloisterServer {
  readonly limits: ServerLimits;
  readonly stats = new ServerStats();
  readonly keys: KeyManager;
  readonly router: EngineRouter;
  private readonly ctx: ServerContext;
  private readonly http: HttpServer;
  private readonly wss: WebSocketServer;
  private readonly sockets = new Map<Socket, { readonly conn: number; readonly source: string }>();
  /** Sockets accepted while at maxConnections (or maxConnectionsPerSource): answered 503 OVERLOADED, then closed. */
  private readonly excess = new WeakSet<Socket>();
  /** Accepted sockets that have not yet completed a request head or upgrade (connectionHeadTimeoutMs). */
  private readonly awaitingHead = new Map<Socket, NodeJS.Timeout>();
  private admitted = 0;
  private nextConn = 1;
  private address: ServerAddress | undefined;
  private readonly sessions = new Set<WsSession>();
  private readonly evidence: EvidenceService;
  private readonly tls: boolean;
  /** performance.now() and Unix ms when the server was created (uptime in /metrics). */
  private readonly startedAt = performance.now();
  private readonly startedAtUnixMs = Date.now();

  constructor(options: CloisterServerOptions) {
    this.limits = resolveLimits(options.limits);
    const logger = options.logger ?? silentLogger;
    const now = options.now ?? Date.now;
    this.router = new EngineRouter(options.engines);
    const models = this.router.models();
    const taggerModel = options.guardTagger;
    if (taggerModel !== undefined && !models.some((m) => m.name === taggerModel && m.operations.includes('token-classify'))) {
      throw new CloisterError('CONFIG_INVALID', `the guard's tagger model '${taggerModel}' is not a token-classification model of this server (serve --model ${taggerModel}=DIR)`);
    }
    const guardTagger = taggerModel === undefined ? undefined : engineTagger(this.router.route('token-classify', taggerModel), taggerModel);
    const keyRotationIntervalMs = options.keyRotationIntervalMs ?? DEFAULT_KEY_ROTATION_INTERVAL_MS;
    const keyGraceMs = options.keyGraceMs ?? DEFAULT_KEY_GRACE_MS;
    const digest = serverConfigDigest({ ...options, platform: options.attester.platform });
    // The key config has one `engine` field (PROTOCOL.md section 1, key 13): the first engine that fronts an external server.
    const engineIdentity = options.engines.find((e) => e.identity !== undefined)?.identity?.();
    this.keys = new KeyManager({
      platform: options.attester.platform,
      models,
      configDigest: digest,
      ...(engineIdentity === undefined ? {} : { engine: engineIdentity }),
      rotationIntervalMs: keyRotationIntervalMs,
      graceMs: keyGraceMs,
      now,
      ...(options.receiptLog === undefined ? {} : { receiptLog: { ...options.receiptLog, ...(options.now === undefined ? {} : { now: options.now }) } }),
      onRotate: (g: KeyGeneration) => logger.log('info', 'key.rotated', { keyId: g.keyId }),
      ...(options.fleetKeys === undefined ? {} : { fleet: options.fleetKeys }),
    });
    const evidence = new EvidenceService(
      options.attester,
      this.keys,
      this.limits.evidenceRequestsPerMinutePerConnection,
      this.limits.evidenceRequestsPerMinute,
      now,
      this.limits.evidenceRefreshMs,
    );
    const sources = new SourceTable(this.limits.evidenceRequestsPerMinutePerSource, this.limits.maxTrackedSources, now);
    const handlerDeps: HandlerDeps = {
      keys: this.keys,
      replay: new ReplayWindow({
        windowMs: this.limits.replayWindowMs,
        futureSkewMs: this.limits.replayFutureSkewMs,
        maxEntries: this.limits.maxReplayEntries,
        maxEntriesPerSource: this.limits.maxReplayEntriesPerSource,
        now,
      }),
      router: this.router,
      logger,
      stats: this.stats,
      requestTimeoutMs: this.limits.requestTimeoutMs,
      maxRequestBytes: this.limits.maxRequestBytes,
      maxItemsPerChunk: this.limits.maxItemsPerChunk,
      maxChunkTextChars: this.limits.maxChunkTextChars,
      reportGraceMs: this.limits.reportGraceMs,
      padResponses: options.padResponses !== false,
      ...(options.clientKeys === undefined ? {} : { clientKeys: options.clientKeys }),
      sessions: new SessionTable(this.limits, this.keys, now),
      ...(options.guardPolicy === undefined ? {} : { guardPolicy: options.guardPolicy }),
      ...(guardTagger === undefined ? {} : { guardTagger }),
      ...(options.fleetKeys === undefined ? {} : { replicaStatements: evidence }),
    };
    this.evidence = evidence;
    this.ctx = { limits: this.limits, keys: this.keys, evidence, sources, logger, stats: this.stats, handlerDeps, state: { draining: false } };

    const ops: OpsProvider = { readiness: () => this.readiness(), metrics: () => this.metrics() };
    const httpTransport = new HttpTransport(this.ctx, (s) => this.sockets.get(s) ?? { conn: 0, source: LOCAL_SOURCE }, ops);
    const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
      this.headArrived(req.socket);
      if (this.excess.has(req.socket)) httpTransport.refuse(req, res, 'OVERLOADED');
      else httpTransport.handle(req, res);
    };
    const httpOptions = {
      requestTimeout: this.limits.requestTimeoutMs + 5000,
      // A request head must be complete this soon (a head trickled byte by byte holds a
      // connection slot); node checks every connectionsCheckingInterval.
      headersTimeout: Math.min(this.limits.connectionHeadTimeoutMs, this.limits.requestTimeoutMs + 5000),
      keepAliveTimeout: this.limits.keepAliveTimeoutMs,
      connectionsCheckingInterval: Math.min(1000, this.limits.connectionHeadTimeoutMs),
    };
    this.tls = options.tls !== undefined;
    this.http =
      options.tls === undefined
        ? createServer(httpOptions, onRequest)
        : createTlsServer(
            // A TLS handshake that never completes is a silent connection too.
            { ...httpOptions, handshakeTimeout: this.limits.connectionHeadTimeoutMs, cert: Buffer.from(options.tls.cert), key: Buffer.from(options.tls.key) },
            onRequest,
          );
    // maxConnections counts every client connection, HTTP and WebSocket (ServerLimits docs).
    // Sockets past twice the limit are closed by node at accept, without an answer.
    this.http.maxConnections = 2 * this.limits.maxConnections;
    // With TLS the requests arrive on the TLS socket, which exists once the handshake is done.
    this.http.on(this.tls ? 'secureConnection' : 'connection', (socket: Socket) => {
      const conn = this.nextConn++;
      const source = sourceOf(socket.remoteAddress);
      this.sockets.set(socket, { conn, source });
      // A connection that never completes a request head is closed (node's headersTimeout
      // only starts with the first byte of a head, so a silent socket needs its own timer).
      const headTimer = setTimeout(() => {
        this.awaitingHead.delete(socket);
        this.stats.count('TIMEOUT');
        logger.log('info', 'conn.head-timeout', { conn, code: 'TIMEOUT' });
        socket.destroy();
      }, this.limits.connectionHeadTimeoutMs);
      headTimer.unref();
      this.awaitingHead.set(socket, headTimer);
      const perSource = source === LOCAL_SOURCE ? undefined : sources.entry(source);
      const refuse = (limit: 'maxConnections' | 'maxConnectionsPerSource'): void => {
        this.excess.add(socket);
        this.stats.connectionsRejected++;
        this.stats.count('OVERLOADED');
        logger.log('warn', 'conn.rejected', { conn, code: 'OVERLOADED', connections: this.admitted, limit });
        socket.on('close', () => {
          this.headArrived(socket);
          this.sockets.delete(socket);
          if (perSource !== undefined) sources.release(source);
        });
      };
      // At a limit, an admitted connection that has not sent a request head yet gives way to
      // the new one: the oldest such connection of the same source, or at maxConnections of
      // any source. Silent connections then cannot keep out a client that speaks at once.
      const evictable = (sameSource: boolean): Socket | undefined => {
        for (const s of this.awaitingHead.keys()) {
          if (s === socket || this.excess.has(s)) continue;
          if (!sameSource || this.sockets.get(s)?.source === source) return s;
        }
        return undefined;
      };
      const makeRoom = (limit: 'maxConnections' | 'maxConnectionsPerSource'): boolean => {
        const victim = evictable(limit === 'maxConnectionsPerSource');
        if (victim === undefined) return false;
        this.headArrived(victim);
        this.stats.connectionsEvicted++;
        logger.log('info', 'conn.evicted', { conn: this.sockets.get(victim)?.conn ?? 0, code: 'OVERLOADED', limit });
        // Its close handler gives its slot back (admitted, per source) when it has closed.
        victim.destroy();
        return true;
      };
      if (this.admitted >= this.limits.maxConnections && !makeRoom('maxConnections')) return refuse('maxConnections');
      if (perSource !== undefined && perSource.connections >= this.limits.maxConnectionsPerSource && !makeRoom('maxConnectionsPerSource')) {
        return refuse('maxConnectionsPerSource');
      }
      this.admitted++;
      if (perSource !== undefined) perSource.connections++;
      this.stats.connectionsOpen = this.admitted;
      this.stats.connectionsTotal++;
      socket.on('close', () => {
        this.headArrived(socket);
        this.sockets.delete(socket);
        this.admitted--;
        if (perSource !== undefined) {
          perSource.connections--;
          sources.release(source);
        }
        this.stats.connectionsOpen = this.admitted;
      });
    });
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: this.limits.maxFrameBytes,
      perMessageDeflate: false, // compression would leak plaintext-size information and costs memory
      clientTracking: false,
    });
    // Clients learn the largest message this server accepts, and refuse a bigger request by
    // name (LIMIT_EXCEEDED) instead of sending it into a 1009 close of the whole connection.
    this.wss.on('headers', (headers: string[]) => {
      headers.push(`${MAX_FRAME_BYTES_HEADER}: ${this.limits.maxFrameBytes}`, `${MAX_IN_FLIGHT_HEADER}: ${this.limits.maxInFlightPerConnection}`);
    });
    this.http.on('upgrade', (req, socket: Socket, head) => {
      this.headArrived(socket);
      const conn = this.sockets.get(socket)?.conn ?? this.nextConn++;
      const path = new URL(req.url ?? '/', 'http://localhost').pathname;
      if (path !== '/' && path !== '/v1/ws') {
        socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
        return;
      }
      if (this.excess.has(socket)) {
        // Counted and logged at accept (the 'connection' handler).
        socket.end('HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        logger.log('info', 'conn.open', { conn, connections: this.stats.connectionsOpen });
        const session = new WsSession(this.ctx, ws, conn, this.sockets.get(socket)?.source ?? LOCAL_SOURCE);
        this.sessions.add(session);
        ws.once('close', () => this.sessions.delete(session));
        if (this.ctx.state.draining) session.drain();
      });
    });
  }

  /** The socket sent a complete request head or upgrade: it is no longer a silent connection. */
  private headArrived(socket: Socket): void {
    const timer = this.awaitingHead.get(socket);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.awaitingHead.delete(socket);
  }

  /**
   * Starts listening; resolves with the URLs clients use. An address in use or not
   * permitted fails with CONFIG_INVALID naming the address.
   */
  async listen(target: ListenTarget): Promise<ServerAddress> {
    const where = 'path' in target ? target.path : `${target.host.includes(':') ? `[${target.host}]` : target.host}:${target.port}`;
    if ('path' in target) checkUnixSocketPath(target.path);
    await new Promise<void>((resolve, reject) => {
      this.http.once('error', (err: NodeJS.ErrnoException) => {
        const why = err.code === 'EADDRINUSE' ? 'address already in use' : err.code === 'EACCES' ? 'permission denied' : err.code === 'EADDRNOTAVAIL' ? 'address not available on this machine' : err.message;
        reject(new CloisterError('CONFIG_INVALID', `cannot listen on ${where}: ${why}${err.code === undefined ? '' : ` (${err.code})`}`, { cause: err, detail: { address: where } }));
      });
      const done = (): void => {
        this.http.removeAllListeners('error');
        resolve();
      };
      if ('path' in target) this.http.listen(target.path, done);
      else this.http.listen(target.port, target.host, done);
    });
    if ('path' in target) {
      this.address = { wsUrl: `ws+unix:${target.path}:/`, path: target.path };
    } else {
      const port = (this.http.address() as AddressInfo).port;
      const host = target.host.includes(':') ? `[${target.host}]` : target.host;
      const s = this.tls ? 's' : '';
      this.address = { wsUrl: `ws${s}://${host}:${port}/`, httpUrl: `http${s}://${host}:${port}`, port };
    }
    this.ctx.logger.log('info', 'server.listening', this.address.port === undefined ? {} : { port: this.address.port });
    // Ended and idle sessions are swept on a timer too (their receipts-v2 heads get signed).
    this.ctx.handlerDeps.sessions?.startSweeping();
    // Produce the first evidence now, so /readyz turns 200 without waiting for a client.
    this.evidence.available();
    return this.address;
  }

  /** What `GET /readyz` reports (src/server/ops.ts). */
  readiness(): Readiness {
    const draining = this.ctx.state.draining;
    // Engines: the server is constructed only after every engine's start() resolved.
    const evidence = !draining && this.evidence.available();
    return { ready: evidence && !draining, checks: { engines: true, evidence, draining } };
  }

  /** What `GET /metrics` answers: Prometheus text, numbers only (src/server/metrics.ts). */
  metrics(): string {
    const gen = this.keys.current();
    return renderMetrics({
      stats: this.stats,
      keyGeneration: gen.generation,
      keyId: gen.keyId,
      uptimeSeconds: (performance.now() - this.startedAt) / 1000,
      startTimeSeconds: Math.floor(this.startedAtUnixMs / 1000),
      ready: this.readiness().ready,
      maxInFlightTotal: this.limits.maxInFlightTotal,
    });
  }

  /**
   * Graceful stop (SIGTERM): stops accepting connections at once (the port is released),
   * reports not ready, refuses new sealed requests (OVERLOADED), lets the requests in flight
   * finish for up to `drainTimeoutMs`, closes WebSocket connections with 1001 as they become
   * idle, then closes everything (`close`). Resolves with whether every request finished in time.
   */
  async shutdown(drainTimeoutMs: number): Promise<{ readonly drained: boolean }> {
    this.ctx.state.draining = true;
    const listenerClosed = new Promise<void>((resolve) => {
      this.http.close(() => resolve());
    });
    this.http.closeIdleConnections();
    for (const session of this.sessions) session.drain();
    const deadline = performance.now() + Math.max(0, drainTimeoutMs);
    // Bounded wait: requests end by their own deadline at the latest; the drain timeout caps it.
    while (this.stats.inFlight > 0 && performance.now() < deadline) {
      await new Promise<void>((resolve) => setTimeout(resolve, Math.min(25, Math.max(1, deadline - performance.now()))));
    }
    const drained = this.stats.inFlight === 0;
    // Every session ends here: its receipts-v2 tree head is signed (sessions.ts).
    this.ctx.handlerDeps.sessions?.clear();
    await this.close();
    await listenerClosed;
    return { drained };
  }

  get urls(): ServerAddress {
    if (this.address === undefined) throw new CloisterError('PROTOCOL_VIOLATION', 'server is not listening');
    return this.address;
  }

  /** Stops accepting, closes every connection, aborts every request. Does not close the engines. */
  async close(): Promise<void> {
    this.ctx.state.draining = true;
    this.ctx.handlerDeps.sessions?.stopSweeping();
    for (const socket of this.sockets.keys()) socket.destroy();
    await new Promise<void>((resolve) => {
      this.wss.close(() => resolve());
    });
    await new Promise<void>((resolve) => {
      this.http.close(() => resolve());
      this.http.closeAllConnections();
    });
    this.ctx.logger.log('info', 'server.closed');
  }
}
