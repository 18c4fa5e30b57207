/**
 * KeySchedule for base mode (RFC 9180 section 5.1): mode 0x00, empty psk and psk_id.
 */
import { concatBytes, copyBytes, i2osp, utf8 } from '../../core/bytes.js';
import { hkdfExpand, hkdfExpandParts, hkdfExtractParts } from '../hkdf.js';
import type { SuiteParams } from './suite.js';

const HPKE_V1 = utf8('HPKE-v1');
const MODE_BASE = 0x00;
const EMPTY = new Uint8Array(0);
const LABEL_PSK_ID_HASH = utf8('psk_id_hash');
const LABEL_INFO_HASH = utf8('info_hash');
const LABEL_SECRET = utf8('secret');
const LABEL_KEY = utf8('key');
const LABEL_BASE_NONCE = utf8('base_nonce');
const LABEL_EXP = utf8('exp');

function labeledExtract(p: SuiteParams, salt: Uint8Array, label: Uint8Array, ikm: Uint8Array): Uint8Array {
  return hkdfExtractParts(salt, [HPKE_V1, p.suiteId, label, ikm]);
}

export function labeledExpand(p: SuiteParams, prk: Uint8Array, label: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  return hkdfExpandParts(prk, [i2osp(length, 2), HPKE_V1, p.suiteId, label, info], length);
}

export interface KeyScheduleOutput {
  readonly keyScheduleContext: Uint8Array;
  readonly secret: Uint8Array;
  readonly key: Uint8Array;
  readonly baseNonce: Uint8Array;
  readonly exporterSecret: Uint8Array;
}

// psk_id_hash depends only on the suite in base mode; computed once per suite.
const pskIdHashCache = new WeakMap<SuiteParams, Uint8Array>();

/**
 * Everything of the base-mode key schedule that depends only on (suite, info):
 * key_schedule_context = mode || psk_id_hash || info_hash, and the three full LabeledExpand
 * info strings built on it. OHTTP uses one info per (key id, suite), so a small bounded cache
 * leaves only the per-message HMACs. Info strings are public protocol headers.
 */
interface InfoEntry {
  readonly keyScheduleContext: Uint8Array;
  readonly keyInfo: Uint8Array;
  readonly nonceInfo: Uint8Array;
  readonly expInfo: Uint8Array;
}
const INFO_CACHE_MAX = 64;
const infoCache = new Map<string, InfoEntry>();

function labeledInfo(p: SuiteParams, label: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  return concatBytes(i2osp(length, 2), HPKE_V1, p.suiteId, label, info);
}

function infoEntry(p: SuiteParams, info: Uint8Array): InfoEntry {
  const cacheable = info.byteLength <= 64;
  const k = cacheable ? `${p.suite.aeadId}:${Buffer.from(info.buffer, info.byteOffset, info.byteLength).toString('base64')}` : '';
  const hit = cacheable ? infoCache.get(k) : undefined;
  if (hit !== undefined) return hit;
  let pskIdHash = pskIdHashCache.get(p);
  if (pskIdHash === undefined) {
    pskIdHash = labeledExtract(p, EMPTY, LABEL_PSK_ID_HASH, EMPTY);
    pskIdHashCache.set(p, pskIdHash);
  }
  const keyScheduleContext = concatBytes(Uint8Array.of(MODE_BASE), pskIdHash, labeledExtract(p, EMPTY, LABEL_INFO_HASH, info));
  const entry: InfoEntry = {
    keyScheduleContext,
    keyInfo: labeledInfo(p, LABEL_KEY, keyScheduleContext, p.nk),
    nonceInfo: labeledInfo(p, LABEL_BASE_NONCE, keyScheduleContext, p.nn),
    expInfo: labeledInfo(p, LABEL_EXP, keyScheduleContext, p.nh),
  };
  if (cacheable) {
    if (infoCache.size >= INFO_CACHE_MAX) infoCache.clear();
    infoCache.set(k, entry);
  }
  return entry;
}

export function keyScheduleBase(p: SuiteParams, sharedSecret: Uint8Array, info: Uint8Array): KeyScheduleOutput {
  const e = infoEntry(p, info);
  // secret = LabeledExtract(shared_secret, "secret", psk) with psk = "" in base mode.
  const secret = labeledExtract(p, sharedSecret, LABEL_SECRET, EMPTY);
  return {
    keyScheduleContext: copyBytes(e.keyScheduleContext),
    secret,
    key: hkdfExpand(secret, e.keyInfo, p.nk),
    baseNonce: hkdfExpand(secret, e.nonceInfo, p.nn),
    exporterSecret: hkdfExpand(secret, e.expInfo, p.nh),
  };
}
