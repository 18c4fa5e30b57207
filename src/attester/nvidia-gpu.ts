/**
 * In-TEE GPU evidence: the server's CPU attester, wrapped so that every key config it binds
 * first lists the evidence of the confidential GPUs the engine uses, and every evidence
 * bundle carries that evidence (protocol/gpu-evidence.ts).
 *
 * For a key config K (as the key manager minted it, without GPUs) the wrapper
 *   1. derives nonce = gpuNonceFor(K) (SHA-256 of a label and K's encoding),
 *   2. asks the collector for every GPU's report with that nonce, its certificate chain and
 *      its CC state,
 *   3. publishes K' = K + gpus (digest of each report and chain, CC state) and has the CPU
 *      attester bind K' (so the CPU evidence covers the GPU digests),
 *   4. returns the CPU bundle for K' with the GPU evidence (reports, chains, and the RIMs the
 *      operator configured) attached.
 * The result is cached per K: GPU evidence is collected once per key generation, so the
 * refresh schedule is the key rotation interval (keyRotationIntervalMs, default one hour);
 * concurrent requests share one collection, and a failed one is retried on the next request.
 *
 * Collecting on a confidential VM (what a GpuEvidenceCollector does there). NVIDIA exposes
 * the evidence through NVML (libnvidia-ml; Python: pynvml, as NVIDIA's nvtrust local verifier
 * uses it), per GPU handle from nvmlDeviceGetHandleByIndex(i), i < nvmlDeviceGetCount():
 *   - nvmlSystemGetConfComputeState()          ccFeature (must be on), devToolsMode (debug);
 *   - nvmlSystemGetConfComputeSettings()       multiGpuMode (protected PCIe, multi-GPU);
 *   - nvmlDeviceGetConfComputeGpuAttestationReport(handle, nonce[32])
 *                                              attestationReport: the SPDM GET_MEASUREMENTS
 *                                              request + signed MEASUREMENTS response;
 *   - nvmlDeviceGetConfComputeGpuCertificate(handle)
 *                                              attestationCertChain: PEM, leaf first;
 *   - nvmlSystemSetConfComputeGpusReadyState(1) once the evidence verified (NVIDIA's flow),
 *     so the driver accepts work.
 * The driver and VBIOS RIMs come from NVIDIA's RIM service (rim.attestation.nvidia.com, ids
 * NV_GPU_DRIVER_GH100_<driver> and NV_GPU_VBIOS_<project>_<sku>_<chip sku>_<vbios>) or, in
 * an air-gapped deployment, from files the operator provides; they are NVIDIA-signed, so
 * where they come from adds no trust. No NVML binding ships with Cloister: a deployment
 * provides the collector (a native binding or a helper process inside the TEE); tests use a
 * stand-in that serves recorded bytes through the same interface.
 */
import { CloisterError } from '../errors.js';
import type { AttestationRequest, Attester, EvidenceBundle } from '../core/types.js';
import { decodeKeyConfig, encodeKeyConfig } from '../protocol/key-config.js';
import { encodeGpuEvidence, gpuNonceFor, keyConfigGpuFor, GPU_EVIDENCE_LIMITS } from '../protocol/gpu-evidence.js';

/** One GPU's evidence as the collector returns it. */
export interface CollectedGpuEvidence {
  /** nvmlDeviceGetConfComputeGpuAttestationReport: SPDM request || response bytes. */
  readonly report: Uint8Array;
  /** nvmlDeviceGetConfComputeGpuCertificate: attestation chain, PEM, leaf first. */
  readonly certChain: Uint8Array;
  /** nvmlSystemGetConfComputeState().ccFeature != 0. */
  readonly ccEnabled: boolean;
  /** nvmlSystemGetConfComputeState().devToolsMode != 0. */
  readonly devTools: boolean;
}

/** Reads GPU evidence inside the TEE (see the NVML calls above). */
export interface GpuEvidenceCollector {
  /** Evidence for every GPU the engine uses, in a stable order, each report requested with `nonce` (32 bytes). */
  collect(nonce: Uint8Array, signal: AbortSignal): Promise<readonly CollectedGpuEvidence[]>;
}

/** The reference manifests the client verifies the measurements against. */
export interface GpuRims {
  readonly driverRim: Uint8Array;
  readonly vbiosRim: Uint8Array;
}

export interface GpuAttesterOptions {
  readonly collector: GpuEvidenceCollector;
  /** The RIMs for GPU i (all GPUs of one SKU and driver share one pair). */
  readonly rims: GpuRims | ((gpuIndex: number) => GpuRims);
  /** Longest a collection may take before the attestation fails. Default 30 000 ms. */
  readonly collectTimeoutMs?: number;
  /** Most GPUs accepted from the collector. Default 64 (the key config limit). */
  readonly maxGpus?: number;
}

export const DEFAULT_GPU_COLLECT_TIMEOUT_MS = 30_000;

interface Extended {
  readonly keyConfig: Uint8Array;
  readonly gpuEvidence: Uint8Array;
}

/** Wrap a CPU attester so that its evidence also covers the GPUs (see the module comment). */
export function withGpuEvidence(inner: Attester, options: GpuAttesterOptions): Attester {
  const timeoutMs = options.collectTimeoutMs ?? DEFAULT_GPU_COLLECT_TIMEOUT_MS;
  const maxGpus = Math.min(options.maxGpus ?? GPU_EVIDENCE_LIMITS.maxGpus, GPU_EVIDENCE_LIMITS.maxGpus);
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0) throw new CloisterError('INVALID_ARGUMENT', 'collectTimeoutMs must be a positive integer');
  let cache: { key: string; value: Promise<Extended> } | undefined;

  async function extend(keyConfig: Uint8Array): Promise<Extended> {
    const kc = decodeKeyConfig(keyConfig);
    if (kc.gpus !== undefined) throw new CloisterError('INVALID_ARGUMENT', 'the key config already lists GPUs');
    const nonce = gpuNonceFor(kc);
    const signal = AbortSignal.timeout(timeoutMs);
    let collected: readonly CollectedGpuEvidence[];
    try {
      collected = await Promise.race([
        options.collector.collect(nonce, signal),
        new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(new CloisterError('TIMEOUT', `GPU evidence collection took longer than ${timeoutMs} ms (collectTimeoutMs)`)), { once: true })),
      ]);
    } catch (cause) {
      if (cause instanceof CloisterError && cause.code === 'TIMEOUT') throw new CloisterError('ATTESTER_FAILED', cause.message, { cause });
      throw new CloisterError('ATTESTER_FAILED', 'GPU evidence collection failed', { cause });
    }
    if (collected.length === 0) throw new CloisterError('ATTESTER_FAILED', 'the GPU collector found no GPU');
    if (collected.length > maxGpus) throw new CloisterError('ATTESTER_FAILED', `the GPU collector returned ${collected.length} GPUs, over the limit of ${maxGpus} (maxGpus)`);
    const items = collected.map((g, i) => {
      const rims = typeof options.rims === 'function' ? options.rims(i) : options.rims;
      return { report: Uint8Array.from(g.report), certChain: Uint8Array.from(g.certChain), driverRim: rims.driverRim, vbiosRim: rims.vbiosRim };
    });
    const gpus = collected.map((g, i) => keyConfigGpuFor(items[i] ?? { report: g.report, certChain: g.certChain }, g));
    return { keyConfig: encodeKeyConfig({ ...kc, gpus }), gpuEvidence: encodeGpuEvidence(items) };
  }

  function extended(keyConfig: Uint8Array): Promise<Extended> {
    const key = Buffer.from(keyConfig).toString('base64');
    if (cache?.key !== key) {
      const value = extend(keyConfig);
      const entry = { key, value };
      cache = entry;
      value.catch(() => {
        if (cache === entry) cache = undefined;
      });
    }
    return cache.value;
  }

  return {
    platform: inner.platform,
    simulated: inner.simulated,
    async attest(request: AttestationRequest): Promise<EvidenceBundle> {
      const ext = await extended(request.keyConfig);
      const bundle = await inner.attest({ ...request, keyConfig: ext.keyConfig });
      return { ...bundle, gpuEvidence: ext.gpuEvidence };
    },
  };
}
