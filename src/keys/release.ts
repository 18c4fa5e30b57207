/**
 * Attested key release (docs/KEYS.md "Release protocol"), the part both sides share.
 *
 * 1. The TEE asks the broker for a challenge: POST /v1/challenge -> { nonce } (32 random
 *    bytes, hex, single use, valid `challengeTtlMs`).
 * 2. It generates an ephemeral X25519 key in memory and has its attester bind a *release key
 *    config* (the key config format of PROTOCOL.md section 1) carrying that public key,
 *    configDigest = SHA-256("cloister/key-release/v1" || 0x00 || key name), no models, a
 *    five-minute validity, and the broker's nonce: the evidence names this one purpose.
 * 3. POST /v1/release { key, version?, nonce, evidence }: the broker consumes the nonce,
 *    verifies the evidence with verifyEvidence (the same verifier clients use) against the
 *    key's release policy, checks the purpose digest, and answers { enc, ciphertext }: the
 *    key material HPKE-sealed (RFC 9180 base mode, X25519/HKDF-SHA256/AES-128-GCM) to the
 *    ephemeral key with info = "cloister/key-release/v1" || 0x00 || key name || 0x00 || nonce.
 * Anything else gets { error: { code, message } } and an audit record.
 */
import { createHash } from 'node:crypto';
import { CloisterError } from '../errors.js';
import { concatBytes, utf8 } from '../core/bytes.js';
import { AEAD_AES_128_GCM, KDF_HKDF_SHA256, KEM_DHKEM_X25519_HKDF_SHA256 } from '../crypto/hpke/suite.js';
import type { HpkeSuite } from '../crypto/hpke/suite.js';
import type { EvidenceBundle, Platform } from '../core/types.js';
import { PLATFORMS } from '../core/types.js';
import type { KeyConfig } from '../protocol/key-config.js';

export const RELEASE_LABEL = 'cloister/key-release/v1';
export const RELEASE_SUITE: HpkeSuite = { kemId: KEM_DHKEM_X25519_HKDF_SHA256, kdfId: KDF_HKDF_SHA256, aeadId: AEAD_AES_128_GCM };
export const CHALLENGE_NONCE_BYTES = 32;
/** Validity of the release key config the TEE builds. */
export const RELEASE_KEY_CONFIG_VALIDITY_S = 300;
export const KEY_NAME_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

export type KeyKind = 'data' | 'fleet' | 'storage';

/** What the broker seals to the ephemeral key (JSON). */
export type ReleasedKey =
  | { readonly kind: 'data' | 'storage'; readonly name: string; readonly version: number; readonly key: string }
  | { readonly kind: 'fleet'; readonly name: string; readonly versions: readonly ReleasedFleetVersion[] };

/** One fleet key version (newest first in a release): hex X25519 key and Ed25519 receipt seed. */
export interface ReleasedFleetVersion {
  readonly version: number;
  readonly keyId: number;
  readonly hpkePrivateKey: string;
  readonly receiptSeed: string;
  readonly notBeforeMs: number;
  readonly expiresAtMs: number;
}

export function releasePurposeDigest(name: string): Uint8Array {
  return new Uint8Array(createHash('sha256').update(RELEASE_LABEL).update(Buffer.of(0)).update(name, 'utf8').digest());
}

export function releaseInfo(name: string, nonce: Uint8Array): Uint8Array {
  return concatBytes(utf8(RELEASE_LABEL), Uint8Array.of(0), utf8(name), Uint8Array.of(0), nonce);
}

/** The release key config for `name`, binding `hpkePublicKey` (the ephemeral key). */
export function releaseKeyConfig(name: string, platform: Platform, hpkePublicKey: Uint8Array, nowMs: number = Date.now()): KeyConfig {
  const notBefore = Math.floor(nowMs / 1000);
  return {
    version: 1,
    keyId: 0,
    kemId: RELEASE_SUITE.kemId,
    kdfId: RELEASE_SUITE.kdfId,
    aeadIds: [RELEASE_SUITE.aeadId],
    hpkePublicKey,
    // No receipts on this path; the field is fixed so the config names nothing else.
    receiptPublicKey: new Uint8Array(32),
    models: [],
    configDigest: releasePurposeDigest(name),
    platform,
    notBefore,
    expiresAt: notBefore + RELEASE_KEY_CONFIG_VALIDITY_S,
  };
}

function b64(b: Uint8Array): string {
  return Buffer.from(b).toString('base64');
}

function unb64(v: unknown, what: string, max: number): Uint8Array {
  if (typeof v !== 'string' || v.length > Math.ceil(max / 3) * 4 || !/^[A-Za-z0-9+/]*={0,2}$/.test(v) || v.length % 4 !== 0) {
    throw new CloisterError('MALFORMED', `${what} must be base64 of at most ${max} bytes`);
  }
  return new Uint8Array(Buffer.from(v, 'base64'));
}

/** Evidence as JSON on the release wire. */
export function evidenceToJson(b: EvidenceBundle): Record<string, string> {
  return {
    platform: b.platform,
    evidence: b64(b.evidence),
    keyConfig: b64(b.keyConfig),
    ...(b.certificates === undefined ? {} : { certificates: b64(b.certificates) }),
    ...(b.collateral === undefined ? {} : { collateral: b64(b.collateral) }),
  };
}

export function evidenceFromJson(v: unknown, maxBytes: number): EvidenceBundle {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new CloisterError('MALFORMED', 'evidence must be an object');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!['platform', 'evidence', 'keyConfig', 'certificates', 'collateral'].includes(k)) throw new CloisterError('MALFORMED', `unknown evidence field ${JSON.stringify(k)}`);
  const platform = o['platform'];
  if (typeof platform !== 'string' || !(PLATFORMS as readonly string[]).includes(platform)) throw new CloisterError('MALFORMED', 'evidence names no known platform');
  return {
    platform: platform as Platform,
    evidence: unb64(o['evidence'], 'evidence.evidence', maxBytes),
    keyConfig: unb64(o['keyConfig'], 'evidence.keyConfig', maxBytes),
    ...(o['certificates'] === undefined ? {} : { certificates: unb64(o['certificates'], 'evidence.certificates', maxBytes) }),
    ...(o['collateral'] === undefined ? {} : { collateral: unb64(o['collateral'], 'evidence.collateral', maxBytes) }),
  };
}

export { b64, unb64 };
