/** Whether a host name or address is this machine's loopback (listeners and upstreams that must stay local). */
import { isIP } from 'node:net';

/** "localhost", 127.0.0.0/8, ::1 (bracketed or not) and IPv4-mapped 127.x; nothing else. */
export function isLoopbackHost(host: string): boolean {
  const h = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (h === 'localhost') return true;
  const family = isIP(h);
  if (family === 4) return h.startsWith('127.');
  if (family === 6) return h === '::1' || h === '0:0:0:0:0:0:0:1' || /^::ffff:127\./i.test(h);
  return false;
}
