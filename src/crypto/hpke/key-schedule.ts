/**
 * KeySchedule for base mode (RFC 9180 section 5.1): mode 0x00, empty psk and psk_id.
 */
import { concatBytes, i2osp, utf8 } from '../bytes.js';
import { hkdfExpand, hkdfExtract } from '../hkdf.js';
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

export function labeledExtract(p: SuiteParams, salt: Uint8Array, label: Uint8Array, ikm: Uint8Array): Uint8Array {
  return hkdfExtract(salt, concatBytes(HPKE_V1, p.suiteId, label, ikm));
}

export function labeledExpand(p: SuiteParams, prk: Uint8Array, label: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  return hkdfExpand(prk, concatBytes(i2osp(length, 2), HPKE_V1, p.suiteId, label, info), length);
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

// info_hash depends on (suite, info). OHTTP uses one info per (key id, suite), so a small
// bounded cache removes two HMACs per message. Info strings are public protocol headers.
const INFO_CACHE_MAX = 64;
const infoHashCache = new Map<string, Uint8Array>();

function infoHash(p: SuiteParams, info: Uint8Array): Uint8Array {
  if (info.byteLength > 64) return labeledExtract(p, EMPTY, LABEL_INFO_HASH, info);
  const k = `${p.suite.aeadId}:${Buffer.from(info.buffer, info.byteOffset, info.byteLength).toString('base64')}`;
  let h = infoHashCache.get(k);
  if (h === undefined) {
    h = labeledExtract(p, EMPTY, LABEL_INFO_HASH, info);
    if (infoHashCache.size >= INFO_CACHE_MAX) infoHashCache.clear();
    infoHashCache.set(k, h);
  }
  return h;
}

export function keyScheduleBase(p: SuiteParams, sharedSecret: Uint8Array, info: Uint8Array): KeyScheduleOutput {
  let pskIdHash = pskIdHashCache.get(p);
  if (pskIdHash === undefined) {
    pskIdHash = labeledExtract(p, EMPTY, LABEL_PSK_ID_HASH, EMPTY);
    pskIdHashCache.set(p, pskIdHash);
  }
  const keyScheduleContext = concatBytes(Uint8Array.of(MODE_BASE), pskIdHash, infoHash(p, info));
  // secret = LabeledExtract(shared_secret, "secret", psk) with psk = "" in base mode.
  const secret = labeledExtract(p, sharedSecret, LABEL_SECRET, EMPTY);
  return {
    keyScheduleContext,
    secret,
    key: labeledExpand(p, secret, LABEL_KEY, keyScheduleContext, p.nk),
    baseNonce: labeledExpand(p, secret, LABEL_BASE_NONCE, keyScheduleContext, p.nn),
    exporterSecret: labeledExpand(p, secret, LABEL_EXP, keyScheduleContext, p.nh),
  };
}
