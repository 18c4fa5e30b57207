/**
 * One coded error (CONNECTION_FAILED) for every way of not reaching a Cloister server, naming
 * the address and the underlying reason, so "502 connection closed" never stands alone:
 * refused, DNS, timeout, reset, TLS spoken to a plain port (or plain to a TLS port), and an
 * HTTP answer that shows the peer is not a Cloister server at all.
 */
import { CloisterError } from '../errors.js';

/** `host:port` of a server URL (the default port of its scheme when none is given); the path for ws+unix. */
export function targetOf(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return url;
  }
  if (u.protocol === 'ws+unix:') return `unix:${u.pathname.split(':')[0] ?? u.pathname}`;
  const port = u.port !== '' ? u.port : u.protocol === 'https:' || u.protocol === 'wss:' ? '443' : '80';
  return `${u.hostname}:${port}`;
}

/** The errno-style code of an error or of one of its causes (fetch wraps them), if any. */
function systemCode(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 4 && typeof e === 'object' && e !== null; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code !== '') return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

function messageChain(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let depth = 0; depth < 4 && e instanceof Error; depth++) {
    parts.push(e.message);
    e = e.cause;
  }
  return parts.join(': ');
}

/** The underlying reason in words (no content: these are socket-level errors). */
export function reasonOf(err: unknown): string {
  const code = systemCode(err);
  const text = messageChain(err);
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection refused (ECONNREFUSED): is the server running on that port?';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_FAIL':
    case 'EAI_NONAME':
      return `DNS lookup failed (${code})`;
    case 'ETIMEDOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
      return `timed out (${code})`;
    case 'ECONNRESET':
    case 'UND_ERR_SOCKET':
      return `connection reset (${code})`;
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return `host unreachable (${code})`;
    case 'ENOENT':
      return 'no such socket (ENOENT)';
    case 'EPROTO':
    case 'ERR_SSL_WRONG_VERSION_NUMBER':
      return `TLS handshake failed (${code}): is this a plain-TCP port? use ws:// or http:// for a server without TLS`;
    default:
      break;
  }
  if (/wrong version number|packet length too long|ssl|tls/i.test(text)) {
    return 'TLS handshake failed: is this a plain-TCP port? use ws:// or http:// for a server without TLS';
  }
  if (/Opening handshake has timed out/i.test(text)) return 'timed out (WebSocket handshake)';
  if (err instanceof Error && err.name === 'TimeoutError') return 'timed out';
  if (/Invalid WebSocket frame|invalid status code|Unexpected server response/i.test(text)) return `not a WebSocket server (${text})`;
  if (code !== undefined) return `${code}`;
  return text === '' ? 'unknown error' : text;
}

/** CONNECTION_FAILED naming the target and the reason, keeping the cause. */
export function connectionFailed(target: string, what: string, err: unknown): CloisterError {
  return new CloisterError('CONNECTION_FAILED', `${what} ${target} failed: ${reasonOf(err)}`, { cause: err, detail: { target } });
}

/** A peer that answered HTTP, but not as a Cloister server does. */
export function notCloister(target: string, request: string, status: number): CloisterError {
  return new CloisterError('CONNECTION_FAILED', `${request} on ${target} returned HTTP ${status}: is this a Cloister server?`, {
    detail: { target, status },
  });
}
