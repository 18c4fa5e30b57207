/**
 * `cloister serve` start-up step for sealed models (docs/KEYS.md): for each --model directory
 * that holds a sealed model manifest, obtain its data key from the key broker by presenting
 * this TEE's evidence, decrypt the model into memory, check its plaintext digest, and hand
 * the engine an in-memory model. Any failure stops the start with a coded error naming the
 * file: the server never publishes a key config for a model it could not fully open.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { CloisterError } from '../errors.js';
import type { Attester } from '../core/types.js';
import type { OnnxModelConfig } from '../inference/onnx/engine.js';
import { isSealedModelDir, readManifest, unsealModel } from '../inference/sealed-model/unseal.js';
import type { Wrapping } from '../inference/sealed-model/format.js';
import { requestKeyRelease } from '../keys/client.js';
import { kmsDecryptForEnclave } from '../keys/kms.js';
import type { KmsTarget } from '../keys/kms.js';
import type { OutboundOptions } from '../keys/outbound.js';
import type { FleetKey } from './keys.js';

export interface OpenSealedModelsOptions {
  /** --key-broker: where data keys are released. */
  readonly keyBroker?: string;
  /** --kms-region / --kms-endpoint: where models wrapped by AWS KMS are decrypted. */
  readonly kms?: KmsTarget;
  /** The attester that proves this TEE to the broker (created on first use). */
  readonly attester: () => Promise<Attester>;
  readonly timeoutMs?: number;
  /** --egress: how the broker and KMS are reached (src/keys/outbound.ts); default directly. */
  readonly outbound?: OutboundOptions;
}

/** The configs with every sealed model replaced by its in-memory copy; plaintext ones as they are. */
export interface OpenedModels {
  readonly models: OnnxModelConfig[];
  /** Names of the models that were sealed. */
  readonly sealed: string[];
  /**
   * Zero and drop the decrypted bytes. Call once the engine has started: ONNX Runtime and the
   * tokenizer hold their own copies by then, so the plaintext files need not stay in memory.
   */
  wipe(): void;
}

/** The data key of one sealed model: from the key broker or from AWS KMS (the caller zeroes it). */
async function dataKeyFor(m: OnnxModelConfig, w: Wrapping, options: OpenSealedModelsOptions): Promise<Uint8Array> {
  if (w.kind === 'aws-kms') {
    if (options.kms === undefined) {
      throw new CloisterError('CONFIG_INVALID', `model ${m.name} in '${m.dir}' is wrapped by AWS KMS: give --kms-region R`, { detail: { file: m.dir } });
    }
    return kmsDecryptForEnclave({ ...options.kms, ...(options.outbound === undefined ? {} : { outbound: { ...options.outbound, ...options.kms.outbound } }), keyId: w.keyId, ciphertextBlob: new Uint8Array(Buffer.from(w.ciphertextBlob, 'base64')), attester: await options.attester() });
  }
  if (options.keyBroker === undefined) {
    throw new CloisterError('CONFIG_INVALID', `model ${m.name} in '${m.dir}' is sealed: give --key-broker URL`, { detail: { file: m.dir } });
  }
  const released = await requestKeyRelease({ brokerUrl: options.keyBroker, key: w.key, version: w.version, attester: await options.attester(), ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }), ...(options.outbound === undefined ? {} : { outbound: options.outbound }) });
  if (released.kind !== 'data' || released.version !== w.version) {
    throw new CloisterError('SEALED_MODEL_KEY_MISMATCH', `the broker released ${released.kind} key ${released.name}, not version ${w.version} of data key ${w.key} that '${m.dir}' needs`, { detail: { file: m.dir } });
  }
  return new Uint8Array(Buffer.from(released.key, 'hex'));
}

/** One sealed model directory opened in memory (the caller zeroes `files` once done). */
async function openOne(m: OnnxModelConfig, options: OpenSealedModelsOptions): Promise<{ config: OnnxModelConfig; files: Map<string, Uint8Array> }> {
  const manifest = await readManifest(m.dir);
  const key = await dataKeyFor(m, manifest.wrapping, options);
  try {
    const files = new Map((await unsealModel(m.dir, manifest, key)).files);
    // A name under the sealed directory that does not exist: the engine reads memory only.
    const virtual = join(m.dir, `.in-memory-${randomBytes(8).toString('hex')}`);
    return { config: { name: m.name, dir: virtual, files, ...(m.task === undefined ? {} : { task: m.task }) }, files };
  } finally {
    key.fill(0);
  }
}

export async function openSealedModels(models: readonly OnnxModelConfig[], options: OpenSealedModelsOptions): Promise<OpenedModels> {
  const out: OnnxModelConfig[] = [];
  const sealed: string[] = [];
  const opened: Map<string, Uint8Array>[] = [];
  const wipe = (): void => {
    for (const files of opened) {
      for (const b of files.values()) b.fill(0);
      files.clear();
    }
  };
  try {
    for (const m of models) {
      if (!(await isSealedModelDir(m.dir))) {
        out.push(m);
        continue;
      }
      const { config, files } = await openOne(m, options);
      opened.push(files);
      out.push(config);
      sealed.push(m.name);
    }
  } catch (err) {
    wipe();
    throw err;
  }
  return { models: out, sealed, wipe };
}

/**
 * `cloister serve --fleet-key NAME`: the fleet key versions the broker releases to this TEE
 * (newest first), for the KeyManager. A replica whose evidence does not match the key's
 * release policy gets a coded refusal and does not start.
 */
export async function fetchFleetKeys(name: string, options: { readonly keyBroker: string; readonly attester: Attester; readonly timeoutMs?: number; readonly outbound?: OutboundOptions }): Promise<FleetKey[]> {
  const released = await requestKeyRelease({ brokerUrl: options.keyBroker, key: name, attester: options.attester, ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }), ...(options.outbound === undefined ? {} : { outbound: options.outbound }) });
  if (released.kind !== 'fleet') throw new CloisterError('CONFIG_INVALID', `broker key ${name} is a ${released.kind} key, not a fleet key`);
  return released.versions.map((v) => ({
    keyId: v.keyId,
    hpkePrivateKey: new Uint8Array(Buffer.from(v.hpkePrivateKey, 'hex')),
    receiptSeed: new Uint8Array(Buffer.from(v.receiptSeed, 'hex')),
    notBeforeMs: v.notBeforeMs,
    expiresAtMs: v.expiresAtMs,
  }));
}
