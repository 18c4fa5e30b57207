/**
 * Upstream connectors: how the relay reaches the enclave.
 *
 * Node cannot open AF_VSOCK sockets (libuv guesses the handle type from the socket family and
 * rejects vsock), so the vsock leg is made by `socat - VSOCK-CONNECT:<cid>:<port>`, one child
 * process per connection, its stdin/stdout being the byte stream. socat from Debian/Ubuntu
 * (>= 1.7.4) has VSOCK support. A Unix-socket connector covers tests and operators who run a
 * long-lived `socat UNIX-LISTEN:...,fork VSOCK-CONNECT:...` bridge themselves.
 *
 * Connectors carry only ciphertext: nothing here reads, logs or keeps the bytes.
 */
import { spawn } from 'node:child_process';
import { createConnection } from 'node:net';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { CloisterError } from '../errors.js';
import { checkUnixSocketPath } from '../core/unix-socket.js';

export interface UpstreamConnector {
  /** Human-readable, content-free description for logs, e.g. "vsock:16:5000". */
  readonly description: string;
  /** Opens one stream to the enclave. Must honour `signal` (the relay's connect timeout). */
  connect(signal: AbortSignal): Promise<Duplex>;
}

/** Connects to a Unix domain socket (tests, or a socat bridge the operator runs). */
export function unixConnector(path: string): UpstreamConnector {
  if (typeof path !== 'string' || path === '') throw new CloisterError('CONFIG_INVALID', 'unix socket path is empty');
  checkUnixSocketPath(path);
  return {
    description: `unix:${path}`,
    connect(signal: AbortSignal): Promise<Duplex> {
      return new Promise<Duplex>((resolve, reject) => {
        if (signal.aborted) {
          reject(new CloisterError('TIMEOUT', 'upstream connect aborted'));
          return;
        }
        const socket: Socket = createConnection({ path });
        const onAbort = (): void => {
          socket.destroy();
          reject(new CloisterError('TIMEOUT', 'upstream connect timed out'));
        };
        signal.addEventListener('abort', onAbort, { once: true });
        socket.once('connect', () => {
          signal.removeEventListener('abort', onAbort);
          resolve(socket);
        });
        socket.once('error', (err) => {
          signal.removeEventListener('abort', onAbort);
          reject(new CloisterError('CONNECTION_FAILED', 'upstream unix socket connect failed', { cause: err }));
        });
      });
    },
  };
}

interface VsockSocatOptions {
  readonly cid: number;
  readonly port: number;
  /** socat executable; default "socat" on PATH. */
  readonly socatPath?: string;
}

/** The argv for `socat` bridging stdin/stdout to vsock cid:port. Validates both numbers. */
export function socatVsockArgv(cid: number, port: number): string[] {
  // CIDs 0..2 are reserved (hypervisor, local, host); 0xFFFFFFFF is VMADDR_CID_ANY.
  if (!Number.isInteger(cid) || cid < 3 || cid >= 0xffffffff) throw new CloisterError('CONFIG_INVALID', 'vsock CID must be an integer 3..4294967294');
  if (!Number.isInteger(port) || port < 1 || port >= 0xffffffff) throw new CloisterError('CONFIG_INVALID', 'vsock port must be an integer 1..4294967294');
  return ['-', `VSOCK-CONNECT:${cid}:${port}`];
}

/**
 * A vsock connector that spawns socat per connection. The stream is "connected" once socat
 * has started; if socat then fails to reach the enclave it exits and the stream ends, which
 * the relay handles like any upstream close.
 */
export function vsockSocatConnector(options: VsockSocatOptions): UpstreamConnector {
  const argv = socatVsockArgv(options.cid, options.port);
  const socat = options.socatPath ?? 'socat';
  return {
    description: `vsock:${options.cid}:${options.port}`,
    connect(signal: AbortSignal): Promise<Duplex> {
      return new Promise<Duplex>((resolve, reject) => {
        if (signal.aborted) {
          reject(new CloisterError('TIMEOUT', 'upstream connect aborted'));
          return;
        }
        // stderr is discarded: socat's diagnostics can include addresses but never payload,
        // and we do not want them interleaved with the relay's own log.
        const child = spawn(socat, argv, { stdio: ['pipe', 'pipe', 'ignore'], shell: false });
        const stdin = child.stdin;
        const stdout = child.stdout;
        if (stdin === null || stdout === null) {
          child.kill('SIGKILL');
          reject(new CloisterError('CONNECTION_FAILED', 'socat stdio unavailable'));
          return;
        }
        const duplex = Duplex.from({ readable: stdout, writable: stdin });
        // Errors surface to the relay through its own listener once connected; before that,
        // a failed spawn is reported through the rejection below.
        duplex.on('error', () => undefined);
        const kill = (): void => {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        };
        duplex.once('close', kill);
        child.once('exit', () => {
          // socat gone: make sure the relay sees the stream end.
          if (!stdout.readableEnded) stdout.destroy();
        });
        const onAbort = (): void => {
          kill();
          duplex.destroy();
          reject(new CloisterError('TIMEOUT', 'upstream connect timed out'));
        };
        signal.addEventListener('abort', onAbort, { once: true });
        child.once('spawn', () => {
          signal.removeEventListener('abort', onAbort);
          resolve(duplex);
        });
        child.once('error', (err) => {
          signal.removeEventListener('abort', onAbort);
          duplex.destroy();
          reject(new CloisterError('CONNECTION_FAILED', `could not start ${socat} (install socat with VSOCK support)`, { cause: err }));
        });
      });
    },
  };
}
