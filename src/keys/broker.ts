/**
 * The key broker (`cloister keys serve`; docs/KEYS.md): holds model data keys and fleet HPKE
 * keys, each with a release policy in the client policy format (src/verifier/policy.ts),
 * and releases a key only to a TEE whose fresh evidence verifies against that policy
 * (./release.ts). Administration is HMAC-authenticated (./admin-auth.ts); the state is an
 * encrypted, fsync'ed append-only log (./store.ts); every decision is an audit record in
 * that log (who, what, when, which measurement, allowed or refused; never key material).
 *
 * Limits (each a named option with a default, each refusal coded): request body size,
 * release requests per source per minute, outstanding challenges (in all and per source),
 * tracked sources, challenge lifetime. Nothing is logged about key material.
 */
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CloisterError, isErrorCode } from '../errors.js';
import { isRecord } from '../core/validate.js';
import type { ErrorCode } from '../errors.js';
import { generateX25519KeyPair } from '../crypto/hpke/kem.js';
import { setupBaseSender } from '../crypto/hpke/setup.js';
import { timingSafeEqualBytes } from '../crypto/ct.js';
import { utf8 } from '../core/bytes.js';
import { policyFromJson } from '../verifier/policy.js';
import type { Policy } from '../verifier/policy.js';
import { EvidenceVerificationError, verifyEvidence } from '../verifier/verify.js';
import type { TrustedRoots } from '../verifier/verify.js';
import { SlidingWindowLimiter } from '../server/rate-limit.js';
import { sourceOf } from '../core/source-address.js';
import { AdminReplayWindow, deriveAdminKeys, openMaterial, verifyAdminRequest, DEFAULT_ADMIN_WINDOW_MS } from './admin-auth.js';
import type { AdminKeys } from './admin-auth.js';
import { BrokerStore } from './store.js';
import { counterMac, counterMacKey, counterMacValid, counterName, counterNonce, counterValue, sortedCounters } from './counters.js';
import { b64, CHALLENGE_NONCE_BYTES, evidenceFromJson, KEY_NAME_PATTERN, releaseInfo, releasePurposeDigest, RELEASE_SUITE } from './release.js';
import type { KeyKind, ReleasedKey } from './release.js';

export const BROKER_DEFAULTS = {
  /** Largest request body (evidence with SEV-SNP certificates or TDX collateral fits). */
  maxBodyBytes: 1024 * 1024,
  /** Requests (challenges, releases, admin) per source address per minute. */
  requestsPerMinute: 60,
  /** Outstanding (issued, not yet used) challenges in all. */
  maxChallenges: 4096,
  /** Outstanding challenges per source address. */
  maxChallengesPerSource: 16,
  /** How long a challenge nonce may be used. */
  challengeTtlMs: 60_000,
  /** Source addresses tracked for rate limits at once. */
  maxSources: 10_000,
  /** Audit records kept in memory for `keys audit` (all of them stay in the store). */
  maxAuditInMemory: 10_000,
  /** Fleet key versions released at once: the newest and the one before (rotation overlap). */
  fleetOverlapVersions: 2,
  /** How long a fleet key version may be served from its creation (its key config's expiry). */
  fleetKeyValidityMs: 7 * 24 * 3600 * 1000,
  /** Counter requests (read, advance) per source address per minute (./counters.ts). */
  counterRequestsPerMinute: 3000,
  /** Rollback counters held in all (one per sealed collection). */
  maxCounters: 100_000,
} as const;

export type BrokerLimits = { -readonly [K in keyof typeof BROKER_DEFAULTS]: number };

export interface KeyBrokerOptions {
  readonly storeDir: string;
  /** 32 bytes: encrypts the store at rest. */
  readonly storeKey: Uint8Array;
  /** 32 bytes: the admin credential (never travels). */
  readonly adminSecret: Uint8Array;
  readonly limits?: Partial<BrokerLimits>;
  /** Roots for evidence verification (the simulated platform's, for development). */
  readonly trustedRoots?: TrustedRoots;
  readonly adminWindowMs?: number;
  readonly now?: () => number;
}

interface KeyVersion {
  readonly version: number;
  readonly material: Uint8Array;
  readonly keyId?: number;
  readonly createdAt: number;
}

interface KeyEntry {
  readonly name: string;
  readonly kind: KeyKind;
  readonly policyJson: unknown;
  readonly policy: Policy;
  readonly versions: KeyVersion[];
  revoked: boolean;
  readonly createdAt: number;
  /** Storage keys: their monotonic counters (./counters.ts). */
  readonly counters: Map<string, number>;
}

export interface AuditRecord {
  readonly t: 'audit';
  readonly at: string;
  readonly event: 'release' | 'register' | 'rotate' | 'revoke' | 'admin';
  readonly source: string;
  readonly allowed: boolean;
  readonly key?: string;
  readonly version?: number;
  readonly platform?: string;
  readonly measurements?: Readonly<Record<string, string>>;
  readonly code?: string;
  readonly message?: string;
}

const HTTP_STATUS: Partial<Record<ErrorCode, number>> = {
  LIMIT_EXCEEDED: 413,
  RATE_LIMITED: 429,
  UNAUTHORIZED: 401,
  NOT_FOUND: 404,
  REPLAY: 409,
  KEY_REVOKED: 410,
  MALFORMED: 400,
  INVALID_ARGUMENT: 400,
  POLICY_INVALID: 400,
  CONFIG_INVALID: 409,
  INTERNAL: 500,
};

function statusOf(code: ErrorCode): number {
  return HTTP_STATUS[code] ?? 403;
}

/** The measurements worth an audit line: all-zero registers (unused PCRs) left out. */
function auditMeasurements(m: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(m).filter(([, v]) => !/^0*$/.test(v)));
}


function keyName(v: unknown): string {
  if (typeof v !== 'string' || !KEY_NAME_PATTERN.test(v)) throw new CloisterError('INVALID_ARGUMENT', 'key name must be 1..64 of A-Z a-z 0-9 . _ -');
  return v;
}

function parsePolicyJson(v: unknown, name: string): Policy {
  try {
    return policyFromJson(v);
  } catch (err) {
    if (err instanceof CloisterError) throw new CloisterError('POLICY_INVALID', `release policy of ${name}: ${err.message}`, { cause: err });
    throw err;
  }
}

export class KeyBroker {
  readonly limits: BrokerLimits;
  readonly #store: BrokerStore;
  readonly #admin: AdminKeys;
  readonly #adminReplay: AdminReplayWindow;
  readonly #now: () => number;
  readonly #trustedRoots: TrustedRoots | undefined;
  readonly #keys = new Map<string, KeyEntry>();
  readonly #audit: AuditRecord[] = [];
  /** nonce hex -> { source, expires } */
  readonly #challenges = new Map<string, { readonly source: string; readonly expires: number }>();
  readonly #challengesPerSource = new Map<string, number>();
  readonly #limiters = new Map<string, SlidingWindowLimiter>();
  readonly #counterLimiters = new Map<string, SlidingWindowLimiter>();
  /** Counters held in all (maxCounters). */
  #counters = 0;
  #server: Server | undefined;
  readonly recoveredBytes: number;

  private constructor(options: KeyBrokerOptions, store: BrokerStore, records: readonly unknown[], recoveredBytes: number) {
    this.limits = { ...BROKER_DEFAULTS, ...options.limits };
    for (const [k, v] of Object.entries(this.limits)) {
      if (!Number.isSafeInteger(v) || v < 1) throw new CloisterError('CONFIG_INVALID', `broker limit ${k} must be a positive integer`);
    }
    this.#store = store;
    this.#admin = deriveAdminKeys(options.adminSecret);
    this.#adminReplay = new AdminReplayWindow(options.adminWindowMs ?? DEFAULT_ADMIN_WINDOW_MS);
    this.#now = options.now ?? Date.now;
    this.#trustedRoots = options.trustedRoots;
    this.recoveredBytes = recoveredBytes;
    for (const r of records) this.#apply(r);
  }

  static async open(options: KeyBrokerOptions): Promise<KeyBroker> {
    const { store, records, recoveredBytes } = await BrokerStore.open(options.storeDir, options.storeKey);
    try {
      return new KeyBroker(options, store, records, recoveredBytes);
    } catch (err) {
      store.close();
      throw err;
    }
  }

  /** Replays one stored record into the in-memory state (start-up) or applies a new one. */
  #apply(r: unknown): void {
    if (!isRecord(r)) throw new CloisterError('STORE_CORRUPT', 'a store record is not an object');
    const at = typeof r['atMs'] === 'number' ? r['atMs'] : 0;
    switch (r['t']) {
      case 'register': {
        const name = keyName(r['name']);
        const kind = r['kind'] === 'fleet' || r['kind'] === 'storage' ? r['kind'] : 'data';
        this.#keys.set(name, { name, kind, policyJson: r['policy'], policy: parsePolicyJson(r['policy'], name), versions: [], revoked: false, createdAt: at, counters: new Map() });
        this.#apply({ t: 'rotate', atMs: at, name, version: 1, material: r['material'], keyId: r['keyId'] });
        return;
      }
      case 'rotate': {
        const e = this.#keys.get(keyName(r['name']));
        const material = r['material'];
        if (e === undefined || typeof material !== 'string' || typeof r['version'] !== 'number') throw new CloisterError('STORE_CORRUPT', 'a rotate record names no key');
        const keyId = typeof r['keyId'] === 'number' ? { keyId: r['keyId'] } : {};
        e.versions.push({ version: r['version'], material: new Uint8Array(Buffer.from(material, 'hex')), createdAt: at, ...keyId });
        return;
      }
      case 'revoke': {
        const e = this.#keys.get(keyName(r['name']));
        if (e === undefined) throw new CloisterError('STORE_CORRUPT', 'a revoke record names no key');
        e.revoked = true;
        return;
      }
      case 'counter': {
        const e = this.#keys.get(keyName(r['name']));
        if (e === undefined || e.kind !== 'storage') throw new CloisterError('STORE_CORRUPT', 'a counter record names no storage key');
        const counter = counterName(r['counter']);
        const value = counterValue(r['value']);
        const now = e.counters.get(counter);
        if (now !== undefined && value <= now) throw new CloisterError('STORE_CORRUPT', `counter ${counter} of ${e.name} goes back in the store`);
        e.counters.set(counter, value);
        this.#counters += now === undefined ? 1 : 0;
        return;
      }
      case 'audit':
        this.#audit.push(r as unknown as AuditRecord);
        if (this.#audit.length > this.limits.maxAuditInMemory) this.#audit.shift();
        return;
      default:
        throw new CloisterError('STORE_CORRUPT', 'a store record has an unknown type');
    }
  }

  #commit(record: Record<string, unknown>): void {
    this.#store.append(record);
    this.#apply(record);
  }

  #auditRecord(a: Omit<AuditRecord, 't' | 'at'>): void {
    this.#commit({ t: 'audit', at: new Date(this.#now()).toISOString(), ...a });
  }

  // --- operations (also used directly by tests) -------------------------------------------

  issueChallenge(source: string): string {
    this.#sweepChallenges();
    if (this.#challenges.size >= this.limits.maxChallenges) {
      throw new CloisterError('RATE_LIMITED', `the broker holds ${this.limits.maxChallenges} outstanding challenges (maxChallenges); retry later`);
    }
    const mine = this.#challengesPerSource.get(source) ?? 0;
    if (mine >= this.limits.maxChallengesPerSource) {
      throw new CloisterError('RATE_LIMITED', `this source holds ${mine} outstanding challenges (maxChallengesPerSource ${this.limits.maxChallengesPerSource})`);
    }
    const nonce = randomBytes(CHALLENGE_NONCE_BYTES).toString('hex');
    this.#challenges.set(nonce, { source, expires: this.#now() + this.limits.challengeTtlMs });
    this.#challengesPerSource.set(source, mine + 1);
    return nonce;
  }

  #sweepChallenges(): void {
    const now = this.#now();
    for (const [n, c] of this.#challenges) if (c.expires <= now) this.#dropChallenge(n, c.source);
  }

  #dropChallenge(nonce: string, source: string): void {
    this.#challenges.delete(nonce);
    const left = (this.#challengesPerSource.get(source) ?? 1) - 1;
    if (left <= 0) this.#challengesPerSource.delete(source);
    else this.#challengesPerSource.set(source, left);
  }

  /** A release request (already parsed from JSON). Returns the HPKE-sealed key. */
  async release(body: unknown, source: string): Promise<{ enc: string; ciphertext: string }> {
    let key: string | undefined;
    let version: number | undefined;
    let platform: string | undefined;
    let measurements: Readonly<Record<string, string>> | undefined;
    try {
      if (!isRecord(body)) throw new CloisterError('MALFORMED', 'release request must be a JSON object');
      for (const k of Object.keys(body)) if (!['key', 'version', 'nonce', 'evidence'].includes(k)) throw new CloisterError('MALFORMED', `unknown release field ${JSON.stringify(k)}`);
      key = keyName(body['key']);
      const v = body['version'];
      if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1)) throw new CloisterError('MALFORMED', 'version must be a positive integer');
      const nonceHex = body['nonce'];
      if (typeof nonceHex !== 'string' || !/^[0-9a-f]{64}$/.test(nonceHex)) throw new CloisterError('MALFORMED', 'nonce must be 64 hex digits');
      const bundle = evidenceFromJson(body['evidence'], this.limits.maxBodyBytes);
      platform = bundle.platform;
      // Single use: the nonce is consumed before anything else can fail.
      const challenge = this.#challenges.get(nonceHex);
      if (challenge === undefined || challenge.expires <= this.#now()) {
        if (challenge !== undefined) this.#dropChallenge(nonceHex, challenge.source);
        throw new CloisterError('REPLAY', 'the nonce was not issued by this broker, was already used, or expired: ask for a new challenge');
      }
      this.#dropChallenge(nonceHex, challenge.source);
      const entry = this.#keys.get(key);
      if (entry === undefined) throw new CloisterError('NOT_FOUND', `the broker holds no key ${key}`);
      if (entry.revoked) throw new CloisterError('KEY_REVOKED', `key ${key} was revoked`);
      const nonce = new Uint8Array(Buffer.from(nonceHex, 'hex'));
      const verified = await verifyEvidence(bundle, {
        policy: entry.policy,
        nonce,
        ...(this.#trustedRoots === undefined ? {} : { trustedRoots: this.#trustedRoots }),
        at: new Date(this.#now()),
      }).catch((err: unknown) => {
        // The audit names the measurement that was refused, when the evidence got that far.
        if (err instanceof EvidenceVerificationError && err.report.claims !== undefined) measurements = auditMeasurements(err.report.claims.measurements);
        throw err instanceof CloisterError ? err : new CloisterError('EVIDENCE_MALFORMED', 'evidence did not verify', { cause: err });
      });
      measurements = auditMeasurements(verified.claims.measurements);
      if (!timingSafeEqualBytes(verified.keyConfig.configDigest, releasePurposeDigest(key))) {
        throw new CloisterError('BINDING_MISMATCH', `the evidence does not bind a release request for key ${key}`);
      }
      let released: ReleasedKey;
      if (entry.kind === 'storage') {
        const kv = entry.versions[0];
        if (kv === undefined || (v !== undefined && v !== kv.version)) throw new CloisterError('NOT_FOUND', `storage key ${key} has no version ${String(v)}`);
        version = kv.version;
        released = { kind: 'storage', name: key, version: kv.version, key: Buffer.from(kv.material).toString('hex') };
      } else if (entry.kind === 'data') {
        const kv = v === undefined ? entry.versions[entry.versions.length - 1] : entry.versions.find((x) => x.version === v);
        if (kv === undefined) throw new CloisterError('NOT_FOUND', `key ${key} has no version ${String(v)}`);
        version = kv.version;
        released = { kind: 'data', name: key, version: kv.version, key: Buffer.from(kv.material).toString('hex') };
      } else {
        const recent = entry.versions.slice(-this.limits.fleetOverlapVersions).reverse();
        version = recent[0]?.version;
        released = {
          kind: 'fleet',
          name: key,
          versions: recent.map((x) => ({
            version: x.version,
            keyId: x.keyId ?? 0,
            hpkePrivateKey: Buffer.from(x.material.subarray(0, 32)).toString('hex'),
            receiptSeed: Buffer.from(x.material.subarray(32, 64)).toString('hex'),
            notBeforeMs: x.createdAt,
            expiresAtMs: x.createdAt + this.limits.fleetKeyValidityMs,
          })),
        };
      }
      const { enc, context } = setupBaseSender(RELEASE_SUITE, verified.keyConfig.hpkePublicKey, releaseInfo(key, nonce));
      const plain = utf8(JSON.stringify(released));
      const ciphertext = context.seal(plain);
      plain.fill(0);
      this.#auditRecord({ event: 'release', source, allowed: true, key, ...(version === undefined ? {} : { version }), platform, measurements });
      return { enc: b64(enc), ciphertext: b64(ciphertext) };
    } catch (err) {
      const e = err instanceof CloisterError ? err : new CloisterError('INTERNAL', 'release failed', { cause: err });
      this.#auditRecord({
        event: 'release',
        source,
        allowed: false,
        code: e.code,
        message: e.message.slice(0, 500),
        ...(key === undefined ? {} : { key }),
        ...(version === undefined ? {} : { version }),
        ...(platform === undefined ? {} : { platform }),
        ...(measurements === undefined ? {} : { measurements }),
      });
      throw e;
    }
  }

  /** Admin: register a key (data: material sealed by the admin; fleet: generated here). */
  register(body: unknown, source: string): { name: string; version: number; keyId?: number } {
    if (!isRecord(body)) throw new CloisterError('MALFORMED', 'register request must be a JSON object');
    const name = keyName(body['name']);
    const kind = body['kind'];
    if (kind !== 'data' && kind !== 'fleet' && kind !== 'storage') throw new CloisterError('INVALID_ARGUMENT', 'kind must be data, fleet or storage');
    if (this.#keys.has(name)) throw new CloisterError('CONFIG_INVALID', `key ${name} already exists (rotate it, or choose another name)`);
    parsePolicyJson(body['policy'], name);
    const { material, keyId } = this.#newMaterial(kind, name, 1, body['material']);
    this.#commit({ t: 'register', atMs: this.#now(), name, kind, policy: body['policy'], material: Buffer.from(material).toString('hex'), ...(keyId === undefined ? {} : { keyId }) });
    material.fill(0);
    this.#auditRecord({ event: 'register', source, allowed: true, key: name, version: 1 });
    return { name, version: 1, ...(keyId === undefined ? {} : { keyId }) };
  }

  rotate(body: unknown, source: string): { name: string; version: number; keyId?: number } {
    if (!isRecord(body)) throw new CloisterError('MALFORMED', 'rotate request must be a JSON object');
    const name = keyName(body['name']);
    const e = this.#keys.get(name);
    if (e === undefined) throw new CloisterError('NOT_FOUND', `the broker holds no key ${name}`);
    if (e.revoked) throw new CloisterError('KEY_REVOKED', `key ${name} was revoked`);
    // What was sealed under a storage key stays sealed under it: a new version would orphan it.
    if (e.kind === 'storage') throw new CloisterError('INVALID_ARGUMENT', `storage key ${name} cannot be rotated (the collections sealed under it need it); register another`);
    const version = (e.versions[e.versions.length - 1]?.version ?? 0) + 1;
    const prevKeyId = e.versions[e.versions.length - 1]?.keyId;
    const { material, keyId } = this.#newMaterial(e.kind, name, version, body['material'], prevKeyId);
    this.#commit({ t: 'rotate', atMs: this.#now(), name, version, material: Buffer.from(material).toString('hex'), ...(keyId === undefined ? {} : { keyId }) });
    material.fill(0);
    this.#auditRecord({ event: 'rotate', source, allowed: true, key: name, version });
    return { name, version, ...(keyId === undefined ? {} : { keyId }) };
  }

  revoke(body: unknown, source: string): { name: string } {
    if (!isRecord(body)) throw new CloisterError('MALFORMED', 'revoke request must be a JSON object');
    const name = keyName(body['name']);
    if (!this.#keys.has(name)) throw new CloisterError('NOT_FOUND', `the broker holds no key ${name}`);
    this.#commit({ t: 'revoke', atMs: this.#now(), name });
    this.#auditRecord({ event: 'revoke', source, allowed: true, key: name });
    return { name };
  }

  #newMaterial(kind: KeyKind, name: string, version: number, sealed: unknown, prevKeyId?: number): { material: Uint8Array; keyId?: number } {
    if (kind === 'data') {
      if (typeof sealed !== 'string') throw new CloisterError('INVALID_ARGUMENT', 'a data key needs its material, sealed under the admin secret');
      const material = openMaterial(this.#admin, name, version, sealed);
      if (material.byteLength !== 32) throw new CloisterError('INVALID_ARGUMENT', 'a data key must be 32 bytes');
      return { material };
    }
    if (sealed !== undefined) throw new CloisterError('INVALID_ARGUMENT', `${kind} keys are generated by the broker; give no material`);
    // A storage key: 32 random bytes that exist only here and in the attested TEEs it is released to.
    if (kind === 'storage') return { material: new Uint8Array(randomBytes(32)) };
    // A fleet key: the X25519 request key and the Ed25519 receipt seed every replica serves.
    const { privateKey } = generateX25519KeyPair();
    const material = new Uint8Array(64);
    material.set(privateKey, 0);
    material.set(randomBytes(32), 32);
    privateKey.fill(0);
    // The next key id, so replicas serving both versions during the overlap tell them apart.
    const keyId = prevKeyId === undefined ? randomBytes(1)[0] ?? 0 : (prevKeyId + 1) % 256;
    return { material, keyId };
  }

  /** The storage key `name` and its counter MAC key, for a counter request (refusals coded). */
  #storageKey(name: string): { entry: KeyEntry; macKey: Uint8Array } {
    const entry = this.#keys.get(name);
    if (entry === undefined) throw new CloisterError('NOT_FOUND', `the broker holds no key ${name}`);
    if (entry.kind !== 'storage') throw new CloisterError('INVALID_ARGUMENT', `key ${name} is a ${entry.kind} key; counters belong to storage keys`);
    if (entry.revoked) throw new CloisterError('KEY_REVOKED', `key ${name} was revoked`);
    const material = entry.versions[0]?.material;
    if (material === undefined) throw new CloisterError('STORE_CORRUPT', `storage key ${name} has no material`);
    return { entry, macKey: counterMacKey(material) };
  }

  /**
   * Raise a counter (./counters.ts). Only a holder of the storage key can ask (request MAC);
   * the new value is fsync'ed before the answer, whose MAC covers the caller's nonce.
   */
  advanceCounter(body: unknown): { value: number; mac: string } {
    if (!isRecord(body)) throw new CloisterError('MALFORMED', 'counter request must be a JSON object');
    for (const k of Object.keys(body)) if (!['key', 'counter', 'value', 'nonce', 'mac'].includes(k)) throw new CloisterError('MALFORMED', `unknown counter field ${JSON.stringify(k)}`);
    const name = keyName(body['key']);
    const counter = counterName(body['counter']);
    const value = counterValue(body['value']);
    const nonce = counterNonce(body['nonce']);
    const { entry, macKey } = this.#storageKey(name);
    if (!counterMacValid(macKey, ['advance', name, counter, value, nonce], body['mac'])) throw new CloisterError('UNAUTHORIZED', `the counter request for ${name} carries no valid MAC (only a holder of the storage key may advance its counters)`);
    const now = entry.counters.get(counter);
    if (now === undefined && this.#counters >= this.limits.maxCounters) throw new CloisterError('LIMIT_EXCEEDED', `the broker holds ${this.limits.maxCounters} counters (maxCounters)`);
    if (now === undefined || value > now) this.#commit({ t: 'counter', atMs: this.#now(), name, counter, value });
    const current = entry.counters.get(counter) ?? value;
    return { value: current, mac: counterMac(macKey, ['advanced', name, counter, current, nonce]) };
  }

  /** Every counter of a storage key, with a MAC over them and the caller's nonce. */
  readCounters(body: unknown): { counters: [string, number][]; mac: string } {
    if (!isRecord(body)) throw new CloisterError('MALFORMED', 'counter request must be a JSON object');
    for (const k of Object.keys(body)) if (!['key', 'nonce', 'mac'].includes(k)) throw new CloisterError('MALFORMED', `unknown counter field ${JSON.stringify(k)}`);
    const name = keyName(body['key']);
    const nonce = counterNonce(body['nonce']);
    const { entry, macKey } = this.#storageKey(name);
    if (!counterMacValid(macKey, ['read', name, nonce], body['mac'])) throw new CloisterError('UNAUTHORIZED', `the counter request for ${name} carries no valid MAC`);
    const counters = sortedCounters(entry.counters);
    return { counters, mac: counterMac(macKey, ['counters', name, nonce, counters]) };
  }

  list(): { name: string; kind: KeyKind; revoked: boolean; versions: number[]; policy: unknown }[] {
    return [...this.#keys.values()].map((e) => ({ name: e.name, kind: e.kind, revoked: e.revoked, versions: e.versions.map((v) => v.version), policy: e.policyJson }));
  }

  audit(limit: number): readonly AuditRecord[] {
    return this.#audit.slice(-Math.max(1, Math.min(limit, this.limits.maxAuditInMemory)));
  }

  #limiter(source: string, limiters = this.#limiters, perMinute = this.limits.requestsPerMinute): SlidingWindowLimiter {
    let l = limiters.get(source);
    if (l === undefined) {
      if (limiters.size >= this.limits.maxSources) {
        for (const [k, v] of limiters) if (v.idle()) limiters.delete(k);
        if (limiters.size >= this.limits.maxSources) throw new CloisterError('RATE_LIMITED', `the broker tracks ${this.limits.maxSources} sources (maxSources); retry later`);
      }
      l = new SlidingWindowLimiter(perMinute, 60_000, this.#now, 'per source');
      limiters.set(source, l);
    }
    return l;
  }

  #counterLimiterOrThrow(source: string): void {
    if (!this.#limiter(source, this.#counterLimiters, this.limits.counterRequestsPerMinute).tryTake()) {
      throw new CloisterError('RATE_LIMITED', `more than ${this.limits.counterRequestsPerMinute} counter requests per minute from this source (counterRequestsPerMinute)`);
    }
  }

  // --- HTTP ------------------------------------------------------------------------------------

  async listen(host: string, port: number): Promise<{ url: string; port: number }> {
    const server = createServer({ requestTimeout: 15_000, headersTimeout: 10_000 }, (req, res) => {
      void this.#handle(req, res);
    });
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const addr = server.address() as AddressInfo;
    const h = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    return { url: `http://${h}:${addr.port}`, port: addr.port };
  }

  async close(): Promise<void> {
    const s = this.#server;
    this.#server = undefined;
    if (s !== undefined) {
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
    this.#store.close();
  }

  async #readBody(req: IncomingMessage): Promise<Uint8Array> {
    const declared = Number(req.headers['content-length'] ?? '0');
    if (declared > this.limits.maxBodyBytes) throw new CloisterError('LIMIT_EXCEEDED', `request body of ${declared} bytes exceeds maxBodyBytes ${this.limits.maxBodyBytes}`);
    const parts: Buffer[] = [];
    let total = 0;
    for await (const chunk of req) {
      const b = chunk as Buffer;
      total += b.byteLength;
      if (total > this.limits.maxBodyBytes) throw new CloisterError('LIMIT_EXCEEDED', `request body exceeds maxBodyBytes ${this.limits.maxBodyBytes}`);
      parts.push(b);
    }
    return Buffer.concat(parts);
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const source = sourceOf(req.socket.remoteAddress);
    const method = req.method ?? 'GET';
    const path = req.url ?? '/';
    let admin = false;
    try {
      const url = new URL(path, 'http://broker');
      if (method === 'GET' && url.pathname === '/v1/health') return this.#send(res, 200, { ok: true });
      admin = url.pathname.startsWith('/v1/admin/');
      // Every request counts, admin ones too: failed admin attempts are audited (an fsync each),
      // so an unauthenticated source must not be able to make unbounded writes.
      if (url.pathname.startsWith('/v1/counter/')) this.#counterLimiterOrThrow(source);
      else this.#limiterOrThrow(source);
      const raw = await this.#readBody(req);
      if (admin) {
        try {
          verifyAdminRequest(this.#admin, req.headers.authorization, method, path, raw, this.#adminReplay, this.#now());
        } catch (err) {
          const e = err instanceof CloisterError ? err : new CloisterError('UNAUTHORIZED');
          this.#auditRecord({ event: 'admin', source, allowed: false, code: e.code, message: `${method} ${url.pathname}: ${e.message}` });
          throw e;
        }
      }
      const body = method === 'POST' ? this.#json(raw) : undefined;
      const route = `${method} ${url.pathname}`;
      switch (route) {
        case 'POST /v1/challenge':
          return this.#send(res, 200, { nonce: this.issueChallenge(source), ttlMs: this.limits.challengeTtlMs });
        case 'POST /v1/release':
          return this.#send(res, 200, await this.release(body, source));
        case 'POST /v1/counter/advance':
          return this.#send(res, 200, this.advanceCounter(body));
        case 'POST /v1/counter/read':
          return this.#send(res, 200, this.readCounters(body));
        case 'POST /v1/admin/keys':
          return this.#send(res, 200, this.register(body, source));
        case 'POST /v1/admin/rotate':
          return this.#send(res, 200, this.rotate(body, source));
        case 'POST /v1/admin/revoke':
          return this.#send(res, 200, this.revoke(body, source));
        case 'GET /v1/admin/keys':
          return this.#send(res, 200, { keys: this.list() });
        case 'GET /v1/admin/audit': {
          const limit = Number(url.searchParams.get('limit') ?? '1000');
          return this.#send(res, 200, { records: this.audit(Number.isSafeInteger(limit) ? limit : 1000) });
        }
        default:
          throw new CloisterError('NOT_FOUND', `no route ${route}`);
      }
    } catch (err) {
      const e = err instanceof CloisterError ? err : new CloisterError('INTERNAL', 'broker error');
      const code = isErrorCode(e.code) ? e.code : 'INTERNAL';
      this.#send(res, statusOf(code), { error: { code, message: code === 'INTERNAL' ? 'internal error' : e.message } });
    }
  }

  #limiterOrThrow(source: string): void {
    if (!this.#limiter(source).tryTake()) {
      throw new CloisterError('RATE_LIMITED', `more than ${this.limits.requestsPerMinute} requests per minute from this source (requestsPerMinute)`);
    }
  }

  #json(raw: Uint8Array): unknown {
    try {
      return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(raw));
    } catch (cause) {
      throw new CloisterError('MALFORMED', 'request body is not UTF-8 JSON', { cause });
    }
  }

  #send(res: ServerResponse, status: number, body: unknown): void {
    if (res.headersSent) return;
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...(status === 413 ? { connection: 'close' } : {}) });
    res.end(text);
  }
}
