/**
 * The "source" of a network peer for per-source limits (the server's and the relay's): its IP
 * address as the socket reports it, IPv4-mapped IPv6 addresses folded to IPv4. A peer without
 * an address (a Unix socket) is LOCAL_SOURCE, which per-source limits do not apply to.
 */
export const LOCAL_SOURCE = 'local';

export function sourceOf(remoteAddress: string | undefined): string {
  if (remoteAddress === undefined || remoteAddress === '') return LOCAL_SOURCE;
  return remoteAddress.startsWith('::ffff:') && remoteAddress.includes('.') ? remoteAddress.slice(7) : remoteAddress;
}
