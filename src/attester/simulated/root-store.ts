/**
 * The simulated platform's root, kept across runs in the server's state directory, so a
 * development client's policy (which pins the root's SHA-256) still verifies after the
 * server restarts: a gateway or SDK client then heals across a restart of `npm start`, as it
 * would across a restart of a real TEE (whose vendor root never changes).
 *
 * The root key protects nothing (the simulated platform is for development; every result
 * says `simulated`); it is still written owner-only (0600) and never leaves the state
 * directory. A missing, unreadable, mismatched or nearly expired root is replaced by a new
 * one, which a client's old policy then refuses (ROOT_UNTRUSTED): fail closed.
 */
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pemToDerList } from '../../verifier/x509/certificate.js';

export const SIMULATED_ROOT_CERT_FILE = 'simulated-root.pem';
export const SIMULATED_ROOT_KEY_FILE = 'simulated-root.key';
/** A stored root is replaced when it expires within this long. */
const MIN_REMAINING_MS = 24 * 3600 * 1000;

export interface SimulatedRoot {
  readonly privateKey: KeyObject;
  readonly certDer: Uint8Array;
  /** The root certificate's subject common name (the intermediate names it as issuer). */
  readonly commonName: string;
}

/** The stored root in `dir`, when it is there, matches its key and is valid for another day. */
export async function loadSimulatedRoot(dir: string, now: number = Date.now()): Promise<SimulatedRoot | undefined> {
  let certPem: string;
  let keyPem: string;
  try {
    [certPem, keyPem] = await Promise.all([readFile(join(dir, SIMULATED_ROOT_CERT_FILE), 'utf8'), readFile(join(dir, SIMULATED_ROOT_KEY_FILE), 'utf8')]);
  } catch {
    return undefined;
  }
  try {
    const list = pemToDerList(certPem);
    const certDer = list[0];
    if (list.length !== 1 || certDer === undefined) return undefined;
    const cert = new X509Certificate(Buffer.from(certDer));
    const privateKey = createPrivateKey(keyPem);
    const derived = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
    const inCert = cert.publicKey.export({ type: 'spki', format: 'der' });
    if (!derived.equals(inCert)) return undefined;
    if (Date.parse(cert.validTo) - now < MIN_REMAINING_MS || Date.parse(cert.validFrom) > now) return undefined;
    const cn = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)?.[1];
    if (cn === undefined) return undefined;
    return { privateKey, certDer, commonName: cn };
  } catch {
    return undefined;
  }
}

/** Store `root` in `dir`: the certificate 0644, the key 0600, each written whole (rename). */
export async function storeSimulatedRoot(dir: string, root: { readonly privateKey: KeyObject; readonly certPem: string }): Promise<void> {
  await mkdir(dir, { recursive: true });
  const keyPath = join(dir, SIMULATED_ROOT_KEY_FILE);
  const keyPem = root.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  await writeFile(`${keyPath}.tmp`, keyPem, { mode: 0o600 });
  await chmod(`${keyPath}.tmp`, 0o600);
  await rename(`${keyPath}.tmp`, keyPath);
  const certPath = join(dir, SIMULATED_ROOT_CERT_FILE);
  await writeFile(`${certPath}.tmp`, root.certPem, { mode: 0o644 });
  await rename(`${certPath}.tmp`, certPath);
}
