/**
 * Talking to the key broker (./broker.ts): the in-TEE release request (`requestKeyRelease`)
 * and the admin client (`BrokerAdminClient`). Responses are bounded in size and time; a
 * broker refusal becomes a CloisterError with the broker's code and message.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { randomBytes } from 'node:crypto';
import { CloisterError, isErrorCode } from '../errors.js';
import { isRecord } from '../core/validate.js';
import { HpkeRecipientKey } from '../crypto/hpke/kem.js';
import { setupBaseRecipient } from '../crypto/hpke/setup.js';
import type { Attester } from '../core/types.js';
import { encodeKeyConfig } from '../protocol/key-config.js';
import { deriveAdminKeys, sealMaterial, signAdminRequest } from './admin-auth.js';
import type { AdminKeys } from './admin-auth.js';
import { evidenceToJson, KEY_NAME_PATTERN, releaseInfo, releaseKeyConfig, RELEASE_SUITE, unb64 } from './release.js';
import type { KeyKind, ReleasedKey } from './release.js';
import { cloisterCause, Outbound } from './outbound.js';
import type { OutboundOptions } from './outbound.js';
import { counterMac, counterMacKey, counterMacValid } from './counters.js';

export const DEFAULT_BROKER_TIMEOUT_MS = 15_000;
export const MAX_BROKER_RESPONSE_BYTES = 4 * 1024 * 1024;


function brokerUrl(base: string, path: string): string {
  let u: URL;
  try {
    u = new URL(path, base.endsWith('/') ? base : `${base}/`);
  } catch (cause) {
    throw new CloisterError('INVALID_ARGUMENT', `key broker URL '${base}' is not a URL`, { cause });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new CloisterError('INVALID_ARGUMENT', `key broker URL '${base}' must be http or https`);
  return u.toString();
}

/** One HTTP exchange with the broker, bounded by `outbound` (size, lifetime) and `timeoutMs`. */
function exchange(url: URL, method: 'GET' | 'POST', body: Uint8Array | undefined, headers: Record<string, string>, timeoutMs: number, outbound: Outbound): Promise<{ status: number; text: string }> {
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(url, {
      method,
      agent: url.protocol === 'https:' ? outbound.httpsAgent : outbound.httpAgent,
      headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(body.byteLength) }) },
      signal: AbortSignal.timeout(timeoutMs),
    });
    req.once('error', reject);
    req.once('response', (res) => {
      const length = Number(res.headers['content-length'] ?? '0');
      if (length > MAX_BROKER_RESPONSE_BYTES) {
        req.destroy();
        reject(new CloisterError('LIMIT_EXCEEDED', `key broker answer of ${length} bytes exceeds ${MAX_BROKER_RESPONSE_BYTES}`, { detail: { limit: MAX_BROKER_RESPONSE_BYTES } }));
        return;
      }
      const parts: Buffer[] = [];
      let got = 0;
      res.on('data', (c: Buffer) => {
        got += c.byteLength;
        if (got > MAX_BROKER_RESPONSE_BYTES) {
          req.destroy();
          reject(new CloisterError('LIMIT_EXCEEDED', `key broker answer exceeds ${MAX_BROKER_RESPONSE_BYTES} bytes`, { detail: { limit: MAX_BROKER_RESPONSE_BYTES } }));
          return;
        }
        parts.push(c);
      });
      res.once('error', reject);
      res.once('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(parts).toString('utf8') }));
    });
    req.end(body === undefined ? undefined : Buffer.from(body));
  });
}

async function call(base: string, method: 'GET' | 'POST', path: string, body: Uint8Array | undefined, headers: Record<string, string>, timeoutMs: number, outboundOptions: OutboundOptions = {}): Promise<unknown> {
  const url = brokerUrl(base, path);
  const outbound = new Outbound({ maxResponseBytes: MAX_BROKER_RESPONSE_BYTES + 64 * 1024, timeoutMs, ...outboundOptions });
  let res: { status: number; text: string };
  try {
    res = await exchange(new URL(url), method, body, headers, timeoutMs, outbound);
  } catch (cause) {
    const limit = outbound.tripped ?? cloisterCause(cause);
    if (limit !== undefined) throw new CloisterError(limit.code, `key broker ${url}: ${limit.message}`, { cause, detail: { url } });
    throw new CloisterError('CONNECTION_FAILED', `key broker ${url} is not reachable`, { cause, detail: { url } });
  } finally {
    outbound.destroy();
  }
  let json: unknown;
  try {
    json = JSON.parse(res.text);
  } catch (cause) {
    throw new CloisterError('MALFORMED', `key broker ${url} answered HTTP ${res.status} without JSON`, { cause });
  }
  if (res.status < 200 || res.status > 299) {
    const err = isRecord(json) && isRecord(json['error']) ? json['error'] : {};
    const code = isErrorCode(err['code']) ? err['code'] : 'KEY_RELEASE_REFUSED';
    const message = typeof err['message'] === 'string' ? err['message'] : `HTTP ${res.status}`;
    throw new CloisterError(code, `key broker ${url} refused: ${message}`, { detail: { url, status: res.status, origin: 'server' } });
  }
  return json;
}

export interface KeyReleaseOptions {
  readonly brokerUrl: string;
  readonly key: string;
  /** A data key's version (the sealed model's manifest names it); default the newest. */
  readonly version?: number;
  readonly attester: Attester;
  readonly timeoutMs?: number;
  /** How to reach the broker (the parent's egress relay in a Nitro Enclave, a private CA). */
  readonly outbound?: OutboundOptions;
}

/**
 * Ask the broker for `key`: challenge, ephemeral key, evidence binding both, release, open.
 * The ephemeral private key lives only in this call.
 */
export async function requestKeyRelease(options: KeyReleaseOptions): Promise<ReleasedKey> {
  if (!KEY_NAME_PATTERN.test(options.key)) throw new CloisterError('INVALID_ARGUMENT', `bad key name '${options.key}'`);
  const timeoutMs = options.timeoutMs ?? DEFAULT_BROKER_TIMEOUT_MS;
  const challenge = await call(options.brokerUrl, 'POST', 'v1/challenge', new TextEncoder().encode('{}'), {}, timeoutMs, options.outbound);
  const nonceHex = isRecord(challenge) ? challenge['nonce'] : undefined;
  if (typeof nonceHex !== 'string' || !/^[0-9a-f]{64}$/.test(nonceHex)) throw new CloisterError('MALFORMED', 'key broker challenge carries no 32-byte nonce');
  const nonce = new Uint8Array(Buffer.from(nonceHex, 'hex'));
  const eph = HpkeRecipientKey.generate();
  const kc = encodeKeyConfig(releaseKeyConfig(options.key, options.attester.platform, eph.publicKey));
  const evidence = await options.attester.attest({ keyConfig: kc, hpkePublicKey: eph.publicKey, nonce });
  const body = { key: options.key, ...(options.version === undefined ? {} : { version: options.version }), nonce: nonceHex, evidence: evidenceToJson(evidence) };
  const answer = await call(options.brokerUrl, 'POST', 'v1/release', new TextEncoder().encode(JSON.stringify(body)), {}, timeoutMs, options.outbound);
  if (!isRecord(answer)) throw new CloisterError('MALFORMED', 'key broker release answer is not an object');
  const enc = unb64(answer['enc'], 'enc', 32);
  const ct = unb64(answer['ciphertext'], 'ciphertext', 64 * 1024);
  let plain: Uint8Array;
  try {
    plain = setupBaseRecipient(RELEASE_SUITE, enc, eph, releaseInfo(options.key, nonce)).open(ct);
  } catch (cause) {
    throw new CloisterError('KEY_RELEASE_REFUSED', 'the released key does not open under the ephemeral key', { cause });
  }
  try {
    return parseReleased(JSON.parse(Buffer.from(plain).toString('utf8')), options.key);
  } finally {
    plain.fill(0);
  }
}

function parseReleased(v: unknown, name: string): ReleasedKey {
  const bad = (): never => {
    throw new CloisterError('MALFORMED', 'the released key does not parse');
  };
  if (!isRecord(v) || v['name'] !== name) return bad();
  if (v['kind'] === 'data' || v['kind'] === 'storage') {
    const key = v['key'];
    const version = v['version'];
    if (typeof key !== 'string' || !/^[0-9a-f]{64}$/.test(key) || typeof version !== 'number') return bad();
    return { kind: v['kind'], name, version, key };
  }
  if (v['kind'] === 'fleet' && Array.isArray(v['versions']) && v['versions'].length > 0) {
    const versions = v['versions'].map((x: unknown) => {
      if (!isRecord(x)) return bad();
      const { version, keyId, hpkePrivateKey, receiptSeed, notBeforeMs, expiresAtMs } = x;
      const hex64 = (h: unknown): h is string => typeof h === 'string' && /^[0-9a-f]{64}$/.test(h);
      if (typeof version !== 'number' || typeof keyId !== 'number' || !Number.isInteger(keyId) || keyId < 0 || keyId > 255) return bad();
      if (!hex64(hpkePrivateKey) || !hex64(receiptSeed) || typeof notBeforeMs !== 'number' || typeof expiresAtMs !== 'number' || !(expiresAtMs > notBeforeMs)) return bad();
      return { version, keyId, hpkePrivateKey, receiptSeed, notBeforeMs, expiresAtMs };
    });
    return { kind: 'fleet', name, versions };
  }
  return bad();
}

/**
 * The counters of a storage key at the broker (./counters.ts), from the TEE that holds the key.
 * Every answer is checked against a MAC over this call's fresh nonce: an answer the host forged
 * or replayed is KEY_RELEASE_REFUSED, never a value.
 */
export class BrokerCounters {
  readonly #macKey: Uint8Array;
  constructor(
    readonly brokerUrl: string,
    readonly key: string,
    storageKey: Uint8Array,
    readonly timeoutMs: number = DEFAULT_BROKER_TIMEOUT_MS,
    /** How the broker is reached (serve --egress), as for the key release. */
    readonly outbound: OutboundOptions = {},
  ) {
    if (!KEY_NAME_PATTERN.test(key)) throw new CloisterError('INVALID_ARGUMENT', `bad key name '${key}'`);
    this.#macKey = counterMacKey(storageKey);
  }

  /** Raise `counter` to at least `value`; resolves with its value at the broker (durable there). */
  async advance(counter: string, value: number): Promise<number> {
    const nonce = randomBytes(16).toString('hex');
    const body = { key: this.key, counter, value, nonce, mac: counterMac(this.#macKey, ['advance', this.key, counter, value, nonce]) };
    const answer = await call(this.brokerUrl, 'POST', 'v1/counter/advance', new TextEncoder().encode(JSON.stringify(body)), {}, this.timeoutMs, this.outbound);
    const now = isRecord(answer) ? answer['value'] : undefined;
    if (typeof now !== 'number' || !Number.isSafeInteger(now) || !counterMacValid(this.#macKey, ['advanced', this.key, counter, now, nonce], isRecord(answer) ? answer['mac'] : undefined)) {
      throw new CloisterError('KEY_RELEASE_REFUSED', `the counter answer of key broker ${this.brokerUrl} does not verify (not from the broker, or replayed)`);
    }
    if (now < value) throw new CloisterError('KEY_RELEASE_REFUSED', `the key broker kept counter ${counter} at ${now}, below ${value}`);
    return now;
  }

  /** Every counter of the key, verified fresh. */
  async read(): Promise<Map<string, number>> {
    const nonce = randomBytes(16).toString('hex');
    const body = { key: this.key, nonce, mac: counterMac(this.#macKey, ['read', this.key, nonce]) };
    const answer = await call(this.brokerUrl, 'POST', 'v1/counter/read', new TextEncoder().encode(JSON.stringify(body)), {}, this.timeoutMs, this.outbound);
    const list = isRecord(answer) ? answer['counters'] : undefined;
    const bad = (): never => {
      throw new CloisterError('KEY_RELEASE_REFUSED', `the counter answer of key broker ${this.brokerUrl} does not verify (not from the broker, or replayed)`);
    };
    if (!Array.isArray(list)) return bad();
    const out = new Map<string, number>();
    const pairs: [string, number][] = [];
    for (const p of list) {
      if (!Array.isArray(p) || p.length !== 2) return bad();
      const [name, value] = p as unknown[];
      if (typeof name !== 'string' || typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0 || out.has(name)) return bad();
      out.set(name, value);
      pairs.push([name, value]);
    }
    if (!counterMacValid(this.#macKey, ['counters', this.key, nonce, pairs], isRecord(answer) ? answer['mac'] : undefined)) return bad();
    return out;
  }
}

/** The admin side: every request HMAC-signed, data key material sealed under the admin secret. */
export class BrokerAdminClient {
  readonly #keys: AdminKeys;
  constructor(
    readonly brokerUrl: string,
    adminSecret: Uint8Array,
    readonly timeoutMs: number = DEFAULT_BROKER_TIMEOUT_MS,
  ) {
    this.#keys = deriveAdminKeys(adminSecret);
  }

  async #request(method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> {
    const bytes = body === undefined ? new Uint8Array(0) : new TextEncoder().encode(JSON.stringify(body));
    const url = new URL(brokerUrl(this.brokerUrl, path));
    const auth = signAdminRequest(this.#keys, method, `${url.pathname}${url.search}`, bytes);
    return call(this.brokerUrl, method, path, method === 'POST' ? bytes : undefined, { authorization: auth }, this.timeoutMs);
  }

  /** Register a key; a data key's 32-byte material travels sealed. */
  register(name: string, kind: KeyKind, policy: unknown, material?: Uint8Array): Promise<unknown> {
    return this.#request('POST', 'v1/admin/keys', { name, kind, policy, ...(material === undefined ? {} : { material: sealMaterial(this.#keys, name, 1, material) }) });
  }

  /** New version: a data key needs `material` and the version it will get. */
  rotate(name: string, material?: { readonly bytes: Uint8Array; readonly version: number }): Promise<unknown> {
    return this.#request('POST', 'v1/admin/rotate', { name, ...(material === undefined ? {} : { material: sealMaterial(this.#keys, name, material.version, material.bytes) }) });
  }

  revoke(name: string): Promise<unknown> {
    return this.#request('POST', 'v1/admin/revoke', { name });
  }

  list(): Promise<unknown> {
    return this.#request('GET', 'v1/admin/keys');
  }

  audit(limit = 1000): Promise<unknown> {
    return this.#request('GET', `v1/admin/audit?limit=${limit}`);
  }
}
