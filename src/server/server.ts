/**
 * The Cloister server: key generations, evidence, replay window, engine routing, and the
 * WebSocket + HTTP transports on one listener (TCP host:port or a Unix socket path).
 */
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { Server as HttpServer } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer } from 'ws';
import { CloisterError } from '../errors.js';
import type { Attester, Platform } from '../attestation/types.js';
import type { Engine, ModelInfo } from '../inference/types.js';
import type { ServerContext } from './context.js';
import { EvidenceService } from './evidence.js';
import type { HandlerDeps } from './handler.js';
import { DEFAULT_KEY_GRACE_MS, DEFAULT_KEY_ROTATION_INTERVAL_MS, KeyManager } from './keys.js';
import type { KeyGeneration } from './keys.js';
import { silentLogger } from './log.js';
import type { Logger } from './log.js';
import { resolveLimits } from './options.js';
import type { ServerLimits } from './options.js';
import { ReplayWindow } from './replay.js';
import { EngineRouter } from './router.js';
import { ServerStats } from './stats.js';
import { HttpTransport } from './transports/http.js';
import { WsSession } from './transports/ws.js';
import { checkUnixSocketPath } from '../util/unix-socket.js';

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
  /** Clock, for tests. */
  readonly now?: () => number;
}

export interface ServerAddress {
  /** `ws://host:port/` or `ws+unix:/path:/` */
  readonly wsUrl: string;
  /** `http://host:port` (absent for a Unix socket). */
  readonly httpUrl?: string;
  readonly port?: number;
  readonly path?: string;
}

export { DEFAULT_KEY_GRACE_MS, DEFAULT_KEY_ROTATION_INTERVAL_MS };

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
  private readonly sockets = new Map<Socket, number>();
  /** Sockets accepted while at maxConnections: answered 503 OVERLOADED, then closed. */
  private readonly excess = new WeakSet<Socket>();
  private admitted = 0;
  private nextConn = 1;
  private address: ServerAddress | undefined;

  constructor(options: CloisterServerOptions) {
    this.limits = resolveLimits(options.limits);
    const logger = options.logger ?? silentLogger;
    const now = options.now ?? Date.now;
    this.router = new EngineRouter(options.engines);
    const models = this.router.models();
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
      onRotate: (g: KeyGeneration) => logger.log('info', 'key.rotated', { keyId: g.keyId }),
    });
    const evidence = new EvidenceService(
      options.attester,
      this.keys,
      this.limits.evidenceRequestsPerMinutePerConnection,
      this.limits.evidenceRequestsPerMinute,
      now,
    );
    const handlerDeps: HandlerDeps = {
      keys: this.keys,
      replay: new ReplayWindow({ windowMs: this.limits.replayWindowMs, maxEntries: this.limits.maxReplayEntries, now }),
      router: this.router,
      logger,
      stats: this.stats,
      requestTimeoutMs: this.limits.requestTimeoutMs,
      maxRequestBytes: this.limits.maxRequestBytes,
      maxItemsPerChunk: this.limits.maxItemsPerChunk,
      maxChunkTextChars: this.limits.maxChunkTextChars,
      reportGraceMs: this.limits.reportGraceMs,
    };
    this.ctx = { limits: this.limits, keys: this.keys, evidence, logger, stats: this.stats, handlerDeps };

    const httpTransport = new HttpTransport(this.ctx, (s) => this.sockets.get(s) ?? 0);
    this.http = createServer({ requestTimeout: this.limits.requestTimeoutMs + 5000 }, (req, res) => {
      if (this.excess.has(req.socket)) httpTransport.refuse(req, res, 'OVERLOADED');
      else httpTransport.handle(req, res);
    });
    // maxConnections counts every client connection, HTTP and WebSocket (ServerLimits docs).
    // Sockets past twice the limit are closed by node at accept, without an answer.
    this.http.maxConnections = 2 * this.limits.maxConnections;
    this.http.on('connection', (socket: Socket) => {
      const conn = this.nextConn++;
      this.sockets.set(socket, conn);
      if (this.admitted >= this.limits.maxConnections) {
        this.excess.add(socket);
        this.stats.connectionsRejected++;
        this.stats.count('OVERLOADED');
        logger.log('warn', 'conn.rejected', { conn, code: 'OVERLOADED', connections: this.admitted });
        socket.on('close', () => this.sockets.delete(socket));
        return;
      }
      this.admitted++;
      this.stats.connectionsOpen = this.admitted;
      this.stats.connectionsTotal++;
      socket.on('close', () => {
        this.sockets.delete(socket);
        this.admitted--;
        this.stats.connectionsOpen = this.admitted;
      });
    });
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: this.limits.maxFrameBytes,
      perMessageDeflate: false, // compression would leak plaintext-size information and costs memory
      clientTracking: false,
    });
    this.http.on('upgrade', (req, socket: Socket, head) => {
      const conn = this.sockets.get(socket) ?? this.nextConn++;
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
        new WsSession(this.ctx, ws, conn);
      });
    });
  }

  /** Starts listening; resolves with the URLs clients use. */
  async listen(target: ListenTarget): Promise<ServerAddress> {
    if ('path' in target) checkUnixSocketPath(target.path);
    await new Promise<void>((resolve, reject) => {
      this.http.once('error', reject);
      const done = (): void => {
        this.http.off('error', reject);
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
      this.address = { wsUrl: `ws://${host}:${port}/`, httpUrl: `http://${host}:${port}`, port };
    }
    this.ctx.logger.log('info', 'server.listening', this.address.port === undefined ? {} : { port: this.address.port });
    return this.address;
  }

  get urls(): ServerAddress {
    if (this.address === undefined) throw new CloisterError('PROTOCOL_VIOLATION', 'server is not listening');
    return this.address;
  }

  /** Stops accepting, closes every connection, aborts every request. Does not close the engines. */
  async close(): Promise<void> {
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
