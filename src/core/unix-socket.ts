/**
 * Unix socket path limits. A Linux `sockaddr_un.sun_path` holds 108 bytes including the
 * terminating NUL, so a path may be at most 107 bytes (UTF-8). Node passes a longer path to
 * the kernel, which fails with a bare ENAMETOOLONG / EINVAL (or, on some libuv versions, a
 * silently truncated path): check first and name the path and the limit.
 */
import { CloisterError } from '../errors.js';
import type { ErrorCode } from '../errors.js';

/** sizeof(sockaddr_un.sun_path) on Linux, NUL included. */
export const UNIX_SOCKET_PATH_BYTES = 108;

/** Throws `code` when `path` does not fit in sun_path (or is empty). Returns the path. */
export function checkUnixSocketPath(path: string, code: ErrorCode = 'CONFIG_INVALID'): string {
  const bytes = Buffer.byteLength(path, 'utf8');
  if (bytes === 0) throw new CloisterError(code, 'Unix socket path is empty');
  if (bytes >= UNIX_SOCKET_PATH_BYTES) {
    throw new CloisterError(
      code,
      `Unix socket path is ${bytes} bytes, over the limit of ${UNIX_SOCKET_PATH_BYTES - 1} (sun_path is ${UNIX_SOCKET_PATH_BYTES} bytes with its NUL): ${path}; use a shorter path, e.g. under /run or /tmp`,
      { detail: { bytes, limit: UNIX_SOCKET_PATH_BYTES - 1, path } },
    );
  }
  return path;
}

/** The socket path of a `ws+unix:/path/to.sock:/request-path` URL, read exactly as the ws package does. */
export function wsUnixSocketPath(url: string): string | undefined {
  if (!url.startsWith('ws+unix:')) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return undefined;
  }
  // ws: path = pathname + search; the socket path is what precedes the first ':'.
  const path = parsed.pathname + parsed.search;
  const colon = path.indexOf(':');
  return colon === -1 ? path : path.slice(0, colon);
}
