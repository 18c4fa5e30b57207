/**
 * The key broker's admin credential (docs/KEYS.md "Administration"): a 32-byte secret in a
 * file that the broker and the admin CLI both read. It never travels, in the clear or
 * otherwise:
 *
 * - each admin request carries `authorization: Cloister-HMAC t=<ms>,n=<32 hex>,s=<64 hex>`,
 *   s = HMAC-SHA256(K_auth, METHOD \n PATH \n t \n n \n SHA-256-hex(body)); the broker accepts
 *   it once (n is remembered until t leaves the window) and only within `windowMs` of its clock;
 * - key material the admin hands to the broker (a model's data key) travels AES-256-GCM
 *   sealed under K_material, with the key name and version as associated data;
 * - K_auth and K_material are HKDF-SHA256 expansions of the secret under distinct labels.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { CloisterError } from '../errors.js';
import { aeadOpen, aeadSeal } from '../crypto/aead.js';
import { utf8 } from '../core/bytes.js';
import { timingSafeEqualBytes } from '../crypto/ct.js';
import { hkdfExpand, hkdfExtract } from '../crypto/hkdf.js';

export const ADMIN_SECRET_BYTES = 32;
export const DEFAULT_ADMIN_WINDOW_MS = 60_000;
export const AUTH_SCHEME = 'Cloister-HMAC';

export interface AdminKeys {
  readonly auth: Uint8Array;
  readonly material: Uint8Array;
}

export function deriveAdminKeys(secret: Uint8Array): AdminKeys {
  if (secret.byteLength !== ADMIN_SECRET_BYTES) throw new CloisterError('CONFIG_INVALID', `the admin secret must be ${ADMIN_SECRET_BYTES} bytes`);
  const prk = hkdfExtract(utf8('cloister/key-broker/v1'), secret);
  return { auth: hkdfExpand(prk, utf8('admin-auth'), 32), material: hkdfExpand(prk, utf8('admin-material'), 32) };
}

/**
 * A 32-byte secret file: 64 hex digits (one optional trailing newline), owner-readable only
 * is the operator's job. Used for the admin secret and the store key.
 */
export async function readSecretFile(path: string, what: string): Promise<Uint8Array> {
  let text: string;
  try {
    // Never more than 257 bytes read: a 32-byte hex secret file is 64 or 65 bytes.
    const fh = await open(path, 'r');
    let n: number;
    const buf = Buffer.alloc(257);
    try {
      ({ bytesRead: n } = await fh.read(buf, 0, buf.byteLength, 0));
    } finally {
      await fh.close();
    }
    if (n > 256) throw new CloisterError('CONFIG_INVALID', `${what} file '${path}' is larger than 256 bytes`);
    text = buf.subarray(0, n).toString('utf8');
  } catch (cause) {
    if (cause instanceof CloisterError) throw cause;
    throw new CloisterError('NOT_FOUND', `cannot read ${what} file '${path}'`, { cause });
  }
  const hex = text.replace(/\r?\n$/, '');
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new CloisterError('CONFIG_INVALID', `${what} file '${path}' must hold 64 hex digits (openssl rand -hex 32)`);
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

function signature(keys: AdminKeys, method: string, path: string, t: string, n: string, body: Uint8Array): Uint8Array {
  const bodyHash = createHash('sha256').update(body).digest('hex');
  return new Uint8Array(createHmac('sha256', keys.auth).update(`${method}\n${path}\n${t}\n${n}\n${bodyHash}`).digest());
}

/** The authorization header value for one admin request. */
export function signAdminRequest(keys: AdminKeys, method: string, path: string, body: Uint8Array, now: number = Date.now()): string {
  const t = String(Math.floor(now));
  const n = randomBytes(16).toString('hex');
  return `${AUTH_SCHEME} t=${t},n=${n},s=${Buffer.from(signature(keys, method, path, t, n, body)).toString('hex')}`;
}

/** Remembers accepted request nonces until they leave the window; bounded. */
export class AdminReplayWindow {
  readonly #seen = new Map<string, number>();
  constructor(
    readonly windowMs: number = DEFAULT_ADMIN_WINDOW_MS,
    readonly maxEntries: number = 10_000,
  ) {}

  /** False when `n` was seen, or the table is full of live entries. */
  take(n: string, now: number): boolean {
    for (const [k, exp] of this.#seen) {
      if (exp > now) break;
      this.#seen.delete(k);
    }
    if (this.#seen.has(n) || this.#seen.size >= this.maxEntries) return false;
    this.#seen.set(n, now + 2 * this.windowMs);
    return true;
  }
}

/** Checks an admin request's header; throws UNAUTHORIZED or REPLAY. */
export function verifyAdminRequest(keys: AdminKeys, header: string | undefined, method: string, path: string, body: Uint8Array, replay: AdminReplayWindow, now: number = Date.now()): void {
  const m = header === undefined ? null : /^Cloister-HMAC t=(\d{1,16}),n=([0-9a-f]{32}),s=([0-9a-f]{64})$/.exec(header);
  if (m === null || m[1] === undefined || m[2] === undefined || m[3] === undefined) throw new CloisterError('UNAUTHORIZED', 'admin request lacks a valid Cloister-HMAC authorization header');
  const t = Number(m[1]);
  const expected = signature(keys, method, path, m[1], m[2], body);
  if (!timingSafeEqualBytes(expected, Buffer.from(m[3], 'hex'))) throw new CloisterError('UNAUTHORIZED', 'admin request signature does not verify');
  if (Math.abs(now - t) > replay.windowMs) throw new CloisterError('REPLAY', `admin request time is more than ${replay.windowMs} ms from the broker's clock`);
  if (!replay.take(m[2], now)) throw new CloisterError('REPLAY', 'admin request was already accepted once (or too many are in flight)');
}

function materialAad(name: string, version: number): Uint8Array {
  return utf8(`cloister/key-broker/v1/material\0${name}\0${version}`);
}

/** Seal key material for the broker: nonce (12) || AES-256-GCM ciphertext, hex. */
export function sealMaterial(keys: AdminKeys, name: string, version: number, material: Uint8Array): string {
  const nonce = new Uint8Array(randomBytes(12));
  const ct = aeadSeal('aes-256-gcm', keys.material, nonce, materialAad(name, version), material);
  return Buffer.concat([nonce, ct]).toString('hex');
}

export function openMaterial(keys: AdminKeys, name: string, version: number, hex: string): Uint8Array {
  if (!/^[0-9a-f]{58,2048}$/.test(hex) || hex.length % 2 !== 0) throw new CloisterError('MALFORMED', 'sealed key material must be hex');
  const b = Buffer.from(hex, 'hex');
  try {
    return aeadOpen('aes-256-gcm', keys.material, b.subarray(0, 12), materialAad(name, version), b.subarray(12));
  } catch (cause) {
    throw new CloisterError('UNAUTHORIZED', 'sealed key material does not open under the admin secret', { cause });
  }
}
