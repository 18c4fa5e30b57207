/**
 * Client transports: how evidence and sealed requests reach the server. Everything a
 * transport returns is attacker-controlled; the client verifies it (evidence) or opens it
 * (sealed response) before use.
 */
import type { EvidenceBundle } from '../core/types.js';

/** The response stream of one sealed request, as the transport delivers it. */
export interface SealedExchange {
  /** Yields pieces (arbitrary splits of the byte stream); returns at the transport's end of stream; throws a CloisterError on a coded error or a broken connection. */
  readonly pieces: AsyncIterable<Uint8Array>;
}

export interface ClientTransport {
  fetchEvidence(nonce: Uint8Array | undefined): Promise<EvidenceBundle>;
  /** Sends a sealed request; `signal` cancels it (the WebSocket transport sends `cancel`). */
  exchange(sealed: Uint8Array, signal?: AbortSignal): SealedExchange;
  close(): Promise<void>;
}

export interface TransportLimits {
  /** Largest message accepted from the server (WebSocket maxPayload, HTTP evidence body). Default 4 MiB. */
  readonly maxMessageBytes?: number;
  /** Response bytes queued for a slow consumer before the client stops reading the socket. Default 1 MiB. */
  readonly highWaterMarkBytes?: number;
  /** Connection handshake deadline. Default 10 s. */
  readonly connectTimeoutMs?: number;
  /**
   * WebSocket keepalive: a ping this often (0 turns it off). A connection whose previous ping
   * got no pong by the next one is taken as dead and closed (the client then reconnects).
   * The server counts pings as activity, so a pinging connection outlives its idle timeout
   * (ServerLimits.idleTimeoutMs, default 120 s): keep this below that. Default 30 s.
   */
  readonly keepAliveIntervalMs?: number;
}

export const DEFAULT_CLIENT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
export const DEFAULT_CLIENT_HIGH_WATER_MARK = 1024 * 1024;
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_KEEPALIVE_INTERVAL_MS = 30_000;
