/** Options shared by the client-side commands (infer, attest, policy). */
import { CloisterError } from '../../errors.js';
import { MAX_CLI_FILE_BYTES, readFileLimited, readTextLimited } from './read-file.js';
import type { TrustedRoots } from '../../verifier/verify.js';
import { certificatesFromFile } from '../../verifier/x509/certificate.js';
import type { ClientTransport } from '../../client/transport.js';
import { HttpClientTransport } from '../../client/http-transport.js';
import { WsClientTransport } from '../../client/ws-transport.js';

export async function readText(path: string, what: string): Promise<string> {
  return readTextLimited(path, MAX_CLI_FILE_BYTES, what);
}

/**
 * `--root pem`: trusted for the simulated platform only (real platforms use the bundled vendor
 * roots). Optional when the policy pins the simulated root's SHA-256.
 */
export async function rootsFrom(path: string | undefined): Promise<TrustedRoots | undefined> {
  if (path === undefined) return undefined;
  const bytes = await readFileLimited(path, MAX_CLI_FILE_BYTES, 'root certificate');
  // PEM or DER, every certificate in the file.
  return { simulated: certificatesFromFile(bytes, path, 'root certificate file') };
}

export function requireUrl(url: string | undefined): string {
  if (url === undefined) throw new CloisterError('INVALID_ARGUMENT', '--url is required (ws://... or http://... as printed by serve)');
  return url;
}

export async function transportFor(url: string): Promise<ClientTransport> {
  const scheme = url.slice(0, url.indexOf(':'));
  if (scheme === 'ws' || scheme === 'wss' || scheme === 'ws+unix') return WsClientTransport.connect(url);
  if (scheme === 'http' || scheme === 'https') return new HttpClientTransport(url);
  throw new CloisterError('INVALID_ARGUMENT', '--url must start with ws://, wss://, ws+unix:, http:// or https://');
}

export function hexArg(text: string | undefined, what: string): Uint8Array | undefined {
  if (text === undefined) return undefined;
  if (!/^(?:[0-9a-fA-F]{2}){1,64}$/.test(text)) throw new CloisterError('INVALID_ARGUMENT', `${what} must be 1..64 bytes of hex`);
  return Uint8Array.from(Buffer.from(text, 'hex'));
}
