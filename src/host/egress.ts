/**
 * The parent relay's egress mode (`cloister relay --egress ... --allow host:port,...`): the
 * enclave has no network, so its outbound streams (AWS KMS, the key broker) come through
 * vsock to the parent (socat `VSOCK-LISTEN:<port>,fork UNIX-CONNECT:<this listener>`), and
 * this listener connects each to one allow-listed host:port over TCP and moves bytes.
 *
 * Each stream starts with the one-line header of src/core/egress.ts naming the destination;
 * anything not on the allow-list is refused with EGRESS_DENIED. One listener for every
 * destination, rather than one per destination as AWS's vsock-proxy does, keeps a single
 * vsock port and a single bridge per enclave whatever the number of endpoints, and lets the
 * enclave report why a stream was refused; the header is one bounded ASCII line parsed
 * strictly, so it adds little to parse. The relay is outside the trust boundary: what follows the header
 * is the enclave's TLS (KMS) or HPKE-sealed release (broker), and the relay never reads,
 * logs or keeps it; it counts bytes only.
 *
 * Limits (named options, safe defaults): maxConnections, maxHeaderBytes, headerTimeoutMs,
 * connectTimeoutMs, idleTimeoutMs, drainTimeoutMs. Who may connect: the listener is a Unix
 * socket of mode 0600 (the relay's user) or a loopback address; any other is refused at start,
 * since whoever reaches it could reach the allow-listed destinations and take its streams.
 */
import { createConnection, createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { CloisterError, isErrorCode } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { encodeEgressReply, formatEgressTarget, parseEgressRequest, parseEgressTarget, readEgressLine } from '../core/egress.js';
import type { EgressTarget } from '../core/egress.js';
import { positiveInt } from '../core/validate.js';
import { isLoopbackHost } from '../core/loopback.js';
import { chmodSync } from 'node:fs';
import type { RelayListen } from './relay.js';

export const EGRESS_DEFAULTS = {
  maxConnections: 64,
  maxHeaderBytes: 512,
  headerTimeoutMs: 5_000,
  connectTimeoutMs: 5_000,
  idleTimeoutMs: 120_000,
  drainTimeoutMs: 30_000,
} as const;

export interface EgressRelayOptions {
  /** Where the enclave's streams arrive: a Unix socket (behind socat VSOCK-LISTEN) or TCP. */
  readonly listen: RelayListen;
  /** The only destinations, "host:port" (lower-case DNS name or IPv4 address). At least one. */
  readonly allow: readonly string[];
  /** Concurrent streams; more are refused LIMIT_EXCEEDED. Default 64. */
  readonly maxConnections?: number;
  /** Longest header line, LF included; longer is refused LIMIT_EXCEEDED. Default 512. */
  readonly maxHeaderBytes?: number;
  /** The header must arrive within this long, else TIMEOUT. Default 5 s. */
  readonly headerTimeoutMs?: number;
  /** Give up connecting to the destination after this long (TIMEOUT). Default 5 s. */
  readonly connectTimeoutMs?: number;
  /** Close a stream with no bytes in either direction for this long. Default 120 s. */
  readonly idleTimeoutMs?: number;
  /** On close(), wait this long for open streams before cutting them. Default 30 s. */
  readonly drainTimeoutMs?: number;
  /** Content-free events (codes, destinations, byte counts) for the operator's log. */
  readonly onEvent?: (event: EgressEvent) => void;
}

export type EgressEvent =
  | { readonly type: 'egress-listening'; readonly address: string; readonly allow: readonly string[] }
  | { readonly type: 'egress-refused'; readonly code: ErrorCode; readonly target?: string }
  | { readonly type: 'egress-opened'; readonly target: string }
  | { readonly type: 'egress-closed'; readonly target: string; readonly bytesOut: number; readonly bytesIn: number; readonly reason: 'end' | 'idle' | 'error' };

export interface EgressStats {
  readonly active: number;
  readonly opened: number;
  readonly refused: number;
  readonly bytesOut: number;
  readonly bytesIn: number;
}

export class EgressRelay {
  private readonly server: Server;
  private readonly allow: ReadonlySet<string>;
  private readonly maxConnections: number;
  private readonly maxHeaderBytes: number;
  private readonly headerTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly idleTimeoutMs: number;
  private readonly drainTimeoutMs: number;
  private readonly streams = new Set<{ enclave: Socket; remote?: Socket }>();
  private closing: Promise<void> | undefined;
  private readonly drainWaiters: (() => void)[] = [];
  private counters = { opened: 0, refused: 0, bytesOut: 0, bytesIn: 0 };

  constructor(private readonly options: EgressRelayOptions) {
    // Only the enclave's bridge on this host may open streams: anyone else reaching the
    // listener could use the allow-listed destinations through it and take its stream slots.
    const l = options.listen;
    if (!('path' in l) && !isLoopbackHost(l.host)) {
      throw new CloisterError('CONFIG_INVALID', `the egress listener takes the enclave's streams from this host only: listen on a Unix socket (unix:PATH, mode 0600) or a loopback address, not ${l.host}`);
    }
    if (options.allow.length === 0) throw new CloisterError('CONFIG_INVALID', 'the egress relay needs at least one allowed host:port');
    const allow = new Set<string>();
    for (const a of options.allow) {
      try {
        allow.add(formatEgressTarget(parseEgressTarget(a)));
      } catch (cause) {
        throw new CloisterError('CONFIG_INVALID', `egress allow-list entry '${a}' is not host:port (lower-case DNS name or IPv4 address, port 1-65535)`, { cause });
      }
    }
    this.allow = allow;
    this.maxConnections = positiveInt('egress maxConnections', options.maxConnections, EGRESS_DEFAULTS.maxConnections);
    this.maxHeaderBytes = positiveInt('egress maxHeaderBytes', options.maxHeaderBytes, EGRESS_DEFAULTS.maxHeaderBytes);
    this.headerTimeoutMs = positiveInt('egress headerTimeoutMs', options.headerTimeoutMs, EGRESS_DEFAULTS.headerTimeoutMs);
    this.connectTimeoutMs = positiveInt('egress connectTimeoutMs', options.connectTimeoutMs, EGRESS_DEFAULTS.connectTimeoutMs);
    this.idleTimeoutMs = positiveInt('egress idleTimeoutMs', options.idleTimeoutMs, EGRESS_DEFAULTS.idleTimeoutMs);
    this.drainTimeoutMs = positiveInt('egress drainTimeoutMs', options.drainTimeoutMs, EGRESS_DEFAULTS.drainTimeoutMs);
    this.server = createServer({ pauseOnConnect: true, noDelay: true }, (s) => void this.accept(s));
  }

  /** The allow-list, normalised. */
  allowed(): readonly string[] {
    return [...this.allow];
  }

  listen(): Promise<string> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(new CloisterError('CONFIG_INVALID', `egress relay could not listen on ${describe(this.options.listen)}`, { cause: err }));
      this.server.once('error', onError);
      const done = (): void => {
        this.server.off('error', onError);
        // The socket file: the relay's user only (the parent's socat bridge runs as that user).
        if ('path' in this.options.listen) {
          try {
            chmodSync(this.options.listen.path, 0o600);
          } catch (cause) {
            this.server.close();
            reject(new CloisterError('CONFIG_INVALID', `egress relay could not restrict ${this.options.listen.path} to mode 0600`, { cause }));
            return;
          }
        }
        this.emit({ type: 'egress-listening', address: this.address(), allow: this.allowed() });
        resolve(this.address());
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
    return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  }

  stats(): EgressStats {
    return { ...this.counters, active: this.streams.size };
  }

  private emit(e: EgressEvent): void {
    try {
      this.options.onEvent?.(e);
    } catch {
      // A logging hook never breaks relaying.
    }
  }

  private refuse(enclave: Socket, code: ErrorCode, target?: string): void {
    this.counters.refused += 1;
    this.emit({ type: 'egress-refused', code, ...(target === undefined ? {} : { target }) });
    // end() flushes the reply line before the FIN; destroy soon after in case the peer never reads.
    enclave.end(encodeEgressReply(code));
    setTimeout(() => enclave.destroy(), 1000).unref();
  }

  private async accept(enclave: Socket): Promise<void> {
    enclave.on('error', () => undefined);
    if (this.closing !== undefined || this.streams.size >= this.maxConnections) {
      this.refuse(enclave, this.closing !== undefined ? 'OVERLOADED' : 'LIMIT_EXCEEDED');
      return;
    }
    const entry: { enclave: Socket; remote?: Socket } = { enclave };
    this.streams.add(entry);
    let target: EgressTarget;
    try {
      const { line, rest } = await readEgressLine(enclave, this.maxHeaderBytes, this.headerTimeoutMs, 'egress header');
      target = parseEgressRequest(line);
      // The client waits for "ok" before it sends: bytes already here break the protocol.
      if (rest.byteLength > 0) throw new CloisterError('PROTOCOL_VIOLATION', 'egress client sent bytes before the relay answered');
    } catch (err) {
      this.release(entry);
      this.refuse(enclave, err instanceof CloisterError ? err.code : 'MALFORMED');
      return;
    }
    const name = formatEgressTarget(target);
    if (!this.allow.has(name)) {
      this.release(entry);
      this.refuse(enclave, 'EGRESS_DENIED', name);
      return;
    }
    let remote: Socket;
    try {
      remote = await this.connect(target);
    } catch (err) {
      this.release(entry);
      this.refuse(enclave, err instanceof CloisterError && isErrorCode(err.code) ? err.code : 'CONNECTION_FAILED', name);
      return;
    }
    if (enclave.destroyed || this.closing !== undefined) {
      remote.destroy();
      this.release(entry);
      enclave.destroy();
      return;
    }
    entry.remote = remote;
    this.counters.opened += 1;
    this.emit({ type: 'egress-opened', target: name });
    let bytesOut = 0;
    let bytesIn = 0;
    let reason: 'end' | 'idle' | 'error' = 'end';
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      enclave.destroy();
      remote.destroy();
      this.release(entry);
      this.emit({ type: 'egress-closed', target: name, bytesOut, bytesIn, reason });
    };
    enclave.on('data', (c: Buffer) => {
      bytesOut += c.byteLength;
      this.counters.bytesOut += c.byteLength;
    });
    remote.on('data', (c: Buffer) => {
      bytesIn += c.byteLength;
      this.counters.bytesIn += c.byteLength;
    });
    for (const s of [enclave, remote]) {
      s.on('error', () => {
        reason = 'error';
        finish();
      });
      s.once('close', finish);
      s.setTimeout(this.idleTimeoutMs, () => {
        reason = 'idle';
        finish();
      });
    }
    enclave.write(encodeEgressReply('ok'));
    // pipe() applies backpressure both ways and half-closes on 'end'.
    enclave.pipe(remote);
    remote.pipe(enclave);
    enclave.resume();
  }

  private connect(t: EgressTarget): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const s = createConnection({ host: t.host, port: t.port, noDelay: true });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new CloisterError('TIMEOUT', `egress connect to ${formatEgressTarget(t)} took longer than ${this.connectTimeoutMs} ms`));
      }, this.connectTimeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(new CloisterError('CONNECTION_FAILED', `egress connect to ${formatEgressTarget(t)} failed`, { cause: err }));
      });
    });
  }

  private release(entry: { enclave: Socket; remote?: Socket }): void {
    if (!this.streams.delete(entry)) return;
    if (this.streams.size === 0) for (const w of this.drainWaiters.splice(0)) w();
  }

  /** Stops accepting, lets open streams finish for up to drainTimeoutMs, then cuts them. Idempotent. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      const listenerClosed = new Promise<void>((r) => this.server.close(() => r()));
      const drained = new Promise<void>((r) => {
        if (this.streams.size === 0) {
          r();
          return;
        }
        const timer = setTimeout(() => {
          for (const s of [...this.streams]) {
            s.enclave.destroy();
            s.remote?.destroy();
          }
          r();
        }, this.drainTimeoutMs);
        this.drainWaiters.push(() => {
          clearTimeout(timer);
          r();
        });
      });
      void drained.then(() => listenerClosed).then(resolve);
    });
    return this.closing;
  }
}

function describe(l: RelayListen): string {
  return 'path' in l ? l.path : `${l.host}:${l.port}`;
}

export async function startEgressRelay(options: EgressRelayOptions): Promise<EgressRelay> {
  const relay = new EgressRelay(options);
  await relay.listen();
  return relay;
}
