/**
 * The "gpus" section of the client policy (docs/CONFIG.md): whether GPU evidence is
 * required, how many GPUs, and which driver and VBIOS versions are allowed. Versions are
 * compared as NVIDIA's RIMs write them, lower case: driver "550.90.07", VBIOS
 * "96.00.5e.00.01". Both lists must be non-empty when GPUs are required: a GPU whose
 * firmware nobody reviewed is not accepted by default.
 */
import { CloisterError } from '../../errors.js';

export const MAX_GPU_COUNT = 64;
export const MAX_GPU_VERSIONS = 64;

export interface GpuPolicy {
  /** The server must present verified GPU evidence (refuse a server without it). */
  readonly required: boolean;
  /** Exact number of GPUs the server must attest, when set. */
  readonly count?: number;
  readonly allowedDriverVersions: readonly string[];
  readonly allowedVbiosVersions: readonly string[];
  /** Fail closed unless revocation (OCSP) was checked; this verifier does not implement OCSP. */
  readonly requireRevocationCheck: boolean;
}

function bad(message: string): CloisterError {
  return new CloisterError('POLICY_INVALID', `policy gpus: ${message}`);
}

function versions(value: unknown, key: string, pattern: RegExp): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.length > MAX_GPU_VERSIONS) throw bad(`${key} must be an array of at most ${MAX_GPU_VERSIONS} strings`);
  return value.map((v, i) => {
    if (typeof v !== 'string' || !pattern.test(v.toLowerCase())) throw bad(`${key}[${i}] is not a version`);
    return v.toLowerCase();
  });
}

/** Parse the "gpus" section of a policy document. Throws CloisterError(POLICY_INVALID). */
export function gpuPolicyFromJson(value: unknown): GpuPolicy {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw bad('must be an object');
  const o = value as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!['required', 'count', 'allowedDriverVersions', 'allowedVbiosVersions', 'requireRevocationCheck'].includes(k)) throw bad(`unknown key ${k}`);
  }
  if (typeof o['required'] !== 'boolean') throw bad('required must be true or false');
  const count = o['count'];
  if (count !== undefined && (typeof count !== 'number' || !Number.isInteger(count) || count < 1 || count > MAX_GPU_COUNT)) {
    throw bad(`count must be an integer in 1..${MAX_GPU_COUNT}`);
  }
  const revocation = o['requireRevocationCheck'];
  if (revocation !== undefined && typeof revocation !== 'boolean') throw bad('requireRevocationCheck must be true or false');
  const allowedDriverVersions = versions(o['allowedDriverVersions'], 'allowedDriverVersions', /^[0-9]{2,4}(\.[0-9]{1,4}){1,3}$/);
  const allowedVbiosVersions = versions(o['allowedVbiosVersions'], 'allowedVbiosVersions', /^[0-9a-f]{2}(\.[0-9a-f]{2}){4}$/);
  if (o['required'] === true && (allowedDriverVersions.length === 0 || allowedVbiosVersions.length === 0)) {
    throw bad('required GPUs need non-empty allowedDriverVersions and allowedVbiosVersions');
  }
  return {
    required: o['required'],
    ...(count === undefined ? {} : { count }),
    allowedDriverVersions,
    allowedVbiosVersions,
    requireRevocationCheck: revocation === true,
  };
}
