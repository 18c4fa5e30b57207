/**
 * Where the upstream engine lives. It must be inside the same TEE as the server: loopback
 * TCP or a Unix socket. Anything else would send plaintext prompts across the untrusted
 * host, so a non-loopback address is refused unless the operator says otherwise explicitly.
 */
import { CloisterError } from '../../errors.js';
import { isLoopbackHost } from '../../core/loopback.js';
import type { UpstreamTarget } from './http.js';

interface TargetOptions {
  /** e.g. "http://127.0.0.1:8000/v1". With socketPath, only its path is used. */
  readonly baseUrl: string;
  readonly socketPath?: string;
  readonly allowNonLoopback?: boolean;
}

export function parseTarget(options: TargetOptions): UpstreamTarget {
  let url: URL;
  try {
    url = new URL(options.baseUrl);
  } catch (cause) {
    throw new CloisterError('CONFIG_INVALID', 'upstream baseUrl is not a URL', { cause });
  }
  if (url.protocol !== 'http:') {
    throw new CloisterError('CONFIG_INVALID', 'upstream baseUrl must use http:// (loopback or Unix socket inside the TEE)');
  }
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    throw new CloisterError('CONFIG_INVALID', 'upstream baseUrl must not carry credentials, a query or a fragment');
  }
  const hostname = url.hostname;
  if (options.socketPath === undefined && options.allowNonLoopback !== true && !isLoopbackHost(hostname)) {
    throw new CloisterError('CONFIG_INVALID', 'upstream engine must be on loopback or a Unix socket (set allowNonLoopback to override)', {
      detail: { host: hostname },
    });
  }
  const basePath = url.pathname.replace(/\/+$/, '');
  const port = url.port === '' ? 80 : Number(url.port);
  return {
    hostname: hostname.startsWith('[') ? hostname.slice(1, -1) : hostname,
    port,
    basePath,
    hostHeader: url.host,
    ...(options.socketPath === undefined ? {} : { socketPath: options.socketPath }),
  };
}
