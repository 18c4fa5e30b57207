/**
 * The egress header (docs/KEYS.md "Reaching KMS and the broker from an enclave"): how the
 * in-enclave side asks the parent's `cloister relay --egress` for one outbound TCP stream.
 *
 *   enclave -> relay:  "cloister-egress/1 <host>:<port>\n"
 *   relay -> enclave:  "cloister-egress/1 ok\n"                (then raw bytes both ways)
 *                  or  "cloister-egress/1 error <CODE>\n"      (then the relay closes)
 *
 * ASCII only, one LF-terminated line each way, nothing else. The host is a DNS name or an
 * IPv4 literal in lower case (the relay compares it with its allow-list), the port 1..65535
 * without leading zeros. The client sends nothing after its line until it has read "ok", so
 * the relay never buffers payload. The bytes that follow are the enclave's own TLS (or the
 * key broker's HPKE-sealed release): the relay cannot read them.
 */
import type { Duplex } from 'node:stream';
import { CloisterError, isErrorCode } from '../errors.js';
import type { ErrorCode } from '../errors.js';

export const EGRESS_PROTOCOL = 'cloister-egress/1';
/** Longest reply line the client reads (the relay's are far shorter). */
export const MAX_EGRESS_REPLY_BYTES = 128;

export interface EgressTarget {
  readonly host: string;
  readonly port: number;
}

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * Parses "host:port" strictly (no brackets, no IPv6, no trailing dot, no upper case), or
 * throws MALFORMED naming the value. Used for the header and for the relay's allow-list.
 */
export function parseEgressTarget(text: string): EgressTarget {
  const bad = (why: string): never => {
    throw new CloisterError('MALFORMED', `egress target '${text.slice(0, 300)}' ${why}; expected host:port`);
  };
  const colon = text.lastIndexOf(':');
  if (colon <= 0) return bad('has no port');
  const host = text.slice(0, colon);
  const portText = text.slice(colon + 1);
  if (!/^[1-9]\d{0,4}$/.test(portText) || Number(portText) > 65535) return bad('has a bad port');
  if (host.length > 253 || !host.split('.').every((l) => LABEL.test(l))) return bad('has a bad host (lower-case DNS name or IPv4 address)');
  return { host, port: Number(portText) };
}

export function formatEgressTarget(t: EgressTarget): string {
  return `${t.host}:${t.port}`;
}

export function encodeEgressRequest(t: EgressTarget): Buffer {
  // Round-trips through the parser so a caller cannot put a bad name on the wire.
  const target = formatEgressTarget(parseEgressTarget(formatEgressTarget(t)));
  return Buffer.from(`${EGRESS_PROTOCOL} ${target}\n`, 'ascii');
}

/** The target of a request line (without its LF); MALFORMED for anything else. */
export function parseEgressRequest(line: string): EgressTarget {
  const prefix = `${EGRESS_PROTOCOL} `;
  if (!line.startsWith(prefix)) throw new CloisterError('MALFORMED', `egress header does not start with '${EGRESS_PROTOCOL} '`);
  return parseEgressTarget(line.slice(prefix.length));
}

export function encodeEgressReply(code: ErrorCode | 'ok'): Buffer {
  return Buffer.from(code === 'ok' ? `${EGRESS_PROTOCOL} ok\n` : `${EGRESS_PROTOCOL} error ${code}\n`, 'ascii');
}

/** 'ok', or the relay's error code (an unknown one reads CONNECTION_FAILED); MALFORMED otherwise. */
export function parseEgressReply(line: string): 'ok' | ErrorCode {
  if (line === `${EGRESS_PROTOCOL} ok`) return 'ok';
  const m = new RegExp(`^${EGRESS_PROTOCOL.replace('/', '\\/')} error ([A-Z_]{1,64})$`).exec(line);
  if (m?.[1] === undefined) throw new CloisterError('MALFORMED', 'egress relay reply is not a cloister-egress/1 line');
  return isErrorCode(m[1]) ? m[1] : 'CONNECTION_FAILED';
}

/**
 * Reads one LF-terminated ASCII line from `stream`, at most `maxBytes` including the LF,
 * within `timeoutMs`. Resolves with the line (without LF) and the bytes that came after it
 * in the same chunk (`rest`); the stream is paused when it resolves. LIMIT_EXCEEDED for a
 * longer line, TIMEOUT, MALFORMED for a non-ASCII or CR byte, CONNECTION_FAILED on close.
 */
export function readEgressLine(stream: Duplex, maxBytes: number, timeoutMs: number, what: string): Promise<{ line: string; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    const done = (err: CloisterError | undefined, value?: { line: string; rest: Buffer }): void => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      stream.off('error', onError);
      stream.pause();
      if (err !== undefined) reject(err);
      else if (value !== undefined) resolve(value);
    };
    const timer = setTimeout(() => done(new CloisterError('TIMEOUT', `${what}: no complete line within ${timeoutMs} ms`, { detail: { limitMs: timeoutMs } })), timeoutMs);
    const onData = (chunk: Buffer): void => {
      const lf = chunk.indexOf(0x0a);
      const upTo = lf === -1 ? chunk.byteLength : lf + 1;
      if (got + upTo > maxBytes) {
        done(new CloisterError('LIMIT_EXCEEDED', `${what}: line longer than ${maxBytes} bytes`, { detail: { limit: maxBytes } }));
        return;
      }
      parts.push(chunk.subarray(0, upTo));
      got += upTo;
      if (lf === -1) return;
      const line = Buffer.concat(parts, got).subarray(0, got - 1);
      if (line.some((b) => b < 0x20 || b > 0x7e)) {
        done(new CloisterError('MALFORMED', `${what}: the line holds a byte outside printable ASCII`));
        return;
      }
      done(undefined, { line: line.toString('ascii'), rest: Buffer.from(chunk.subarray(upTo)) });
    };
    const onEnd = (): void => done(new CloisterError('CONNECTION_FAILED', `${what}: the stream closed before a complete line`));
    const onError = (err: Error): void => done(new CloisterError('CONNECTION_FAILED', `${what}: ${err.message}`, { cause: err }));
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('close', onEnd);
    stream.once('error', onError);
    stream.resume();
  });
}
