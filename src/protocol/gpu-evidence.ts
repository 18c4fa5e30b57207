/**
 * GPU evidence in the evidence bundle, and its binding to the sealed channel's key.
 *
 * Nonce: every GPU report is requested with
 *   nonce = SHA-256("cloister/gpu-nonce/v1\0" || key config encoded WITHOUT its gpus and protocols fields)
 * so a report is fresh for, and only for, this key generation (its HPKE and receipt keys,
 * validity and models). The key config then lists each report's and chain's SHA-256 and the
 * GPU's CC state (KeyConfig.gpus) and is bound by the CPU TEE's evidence: a client that
 * verified the CPU evidence knows which GPU evidence the TEE collected for this key, and a
 * GPU report from another key generation, another server or a replay carries another nonce.
 * (The nonce cannot cover the gpus field itself: that field is computed from the reports. It
 * leaves out `protocols` too, so the v1 and the v2 form of one generation's key config give the
 * same nonce.)
 *
 * Bundle blob (EvidenceBundle.gpuEvidence): deterministic CBOR, an array with one map per
 * GPU, in key-config order: { 1: report (bstr, SPDM bytes), 2: certChain (bstr, PEM),
 * 3: driverRim (bstr, SWID XML), 4: vbiosRim (bstr, SWID XML) }. The RIMs ride along so a
 * client can verify offline; they are NVIDIA-signed, so carrying them through the untrusted
 * host adds no trust in it.
 */
import { createHash } from 'node:crypto';
import { CloisterError } from '../errors.js';
import { timingSafeEqualBytes } from '../crypto/ct.js';
import { decodeCbor, encodeCbor } from '../core/cbor.js';
import type { CborInput, CborKey } from '../core/cbor.js';
import { encodeKeyConfig } from './key-config.js';
import type { KeyConfig, KeyConfigGpu } from './key-config.js';

export const GPU_NONCE_LABEL = 'cloister/gpu-nonce/v1\0';
export const GPU_EVIDENCE_LIMITS = Object.freeze({ maxBytes: 4 * 1024 * 1024, maxGpus: 64 });

export interface GpuEvidenceItem {
  readonly report: Uint8Array;
  readonly certChain: Uint8Array;
  readonly driverRim: Uint8Array;
  readonly vbiosRim: Uint8Array;
}

/** The 32-byte nonce every GPU report for this key config must carry. */
export function gpuNonceFor(kc: KeyConfig): Uint8Array {
  const { gpus: _gpus, protocols: _protocols, ...rest } = kc;
  void _gpus;
  void _protocols;
  return new Uint8Array(createHash('sha256').update(GPU_NONCE_LABEL, 'latin1').update(encodeKeyConfig(rest)).digest());
}

function sha256(b: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(b).digest());
}

/** The key config entry for one GPU's evidence and NVML state. */
export function keyConfigGpuFor(item: Pick<GpuEvidenceItem, 'report' | 'certChain'>, state: { ccEnabled: boolean; devTools: boolean }): KeyConfigGpu {
  return { reportDigest: sha256(item.report), certChainDigest: sha256(item.certChain), ccEnabled: state.ccEnabled, devTools: state.devTools };
}

/** True when the item's bytes are the ones the key config entry names (constant time). */
export function gpuItemMatches(item: GpuEvidenceItem, entry: KeyConfigGpu): boolean {
  const a = timingSafeEqualBytes(sha256(item.report), entry.reportDigest);
  const b = timingSafeEqualBytes(sha256(item.certChain), entry.certChainDigest);
  return a && b;
}

export function encodeGpuEvidence(items: readonly GpuEvidenceItem[]): Uint8Array {
  if (items.length === 0 || items.length > GPU_EVIDENCE_LIMITS.maxGpus) {
    throw new CloisterError('INVALID_ARGUMENT', `GPU evidence must list 1..${GPU_EVIDENCE_LIMITS.maxGpus} GPUs`);
  }
  return encodeCbor(items.map((i) => new Map<CborKey, CborInput>([[1, i.report], [2, i.certChain], [3, i.driverRim], [4, i.vbiosRim]])));
}

/** Strict decode: limits, exact keys, deterministic encoding. Throws CloisterError(EVIDENCE_MALFORMED / LIMIT_EXCEEDED). */
export function decodeGpuEvidence(bytes: Uint8Array): GpuEvidenceItem[] {
  if (bytes.byteLength > GPU_EVIDENCE_LIMITS.maxBytes) {
    throw new CloisterError('LIMIT_EXCEEDED', `GPU evidence is ${bytes.byteLength} bytes, over the limit of ${GPU_EVIDENCE_LIMITS.maxBytes}`);
  }
  const bad = (why: string, cause?: unknown): CloisterError =>
    new CloisterError('EVIDENCE_MALFORMED', `GPU evidence: ${why}`, cause === undefined ? {} : { cause });
  let root;
  try {
    root = decodeCbor(bytes, { maxDepth: 3, maxItems: 1 + 9 * GPU_EVIDENCE_LIMITS.maxGpus });
  } catch (cause) {
    throw bad('not CBOR', cause);
  }
  if (!Array.isArray(root) || root.length === 0 || root.length > GPU_EVIDENCE_LIMITS.maxGpus) throw bad(`must be an array of 1..${GPU_EVIDENCE_LIMITS.maxGpus} GPUs`);
  const items = root.map((m, i) => {
    if (!(m instanceof Map) || m.size !== 4) throw bad(`GPU ${i} is not a map of 4 fields`);
    const get = (k: number): Uint8Array => {
      const v = m.get(k);
      if (!(v instanceof Uint8Array) || v.byteLength === 0) throw bad(`GPU ${i} field ${k} is not a non-empty byte string`);
      return Uint8Array.from(v);
    };
    return { report: get(1), certChain: get(2), driverRim: get(3), vbiosRim: get(4) };
  });
  if (!timingSafeEqualBytes(encodeGpuEvidence(items), bytes)) throw bad('not deterministically encoded');
  return items;
}
