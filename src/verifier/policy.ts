/**
 * The client policy file: what evidence must show before a client trusts a key config.
 *
 * ```json
 * {
 *   "version": 1,
 *   "platforms": {
 *     "nitro":     { "pcrs": { "0": "<96 hex>", "1": "...", "2": "...", "8": "..." }, "maxAgeSeconds": 300 },
 *     "simulated": { "pcrs": { "0": "..." }, "rootSha256": "<64 hex>", "maxAgeSeconds": 300 },
 *     "sev-snp":   { ... parsed by sev-snp/policy.ts ... },
 *     "tdx":       { ... parsed by tdx/policy.ts ... }
 *   },
 *   "models": { "<model name>": "<sha256 hex>" },
 *   "nonceRequired": false,
 *   "gpus": { "required": true, "count": 1, "allowedDriverVersions": ["550.90.07"],
 *             "allowedVbiosVersions": ["96.00.9f.00.01"] },  (verifier/nvidia/policy.ts)
 *   "protocols": { "require": [2] }
 * }
 * ```
 *
 * The parser is strict and fails closed (POLICY_INVALID): unknown keys anywhere, a policy
 * with no platform section, a platform section that names no measurement, malformed hex,
 * and all-zero PCR0..2 values (those are what a debug-mode enclave reports) are rejected.
 * Every section must identify the workload, not only the platform: Nitro/simulated PCR0, or
 * PCR8, or PCR1 and PCR2 (nitroPcrsIdentifyWorkload); SEV-SNP the launch measurement; TDX
 * RTMR0..2 besides MRTD (or the loudly named allowMrtdOnly_UNSAFE).
 * Evidence from a platform the policy has no section for is rejected by the verifier.
 * `protocols.require` lists protocol versions (docs/PROTOCOL.md section 11) the attested key
 * config must offer (its field 14, bound by the evidence); a key config that does not is
 * refused PROTOCOL_DOWNGRADE - a host that served the v1 key config to a v2 client cannot
 * silently take away sessions and receipts v2.
 *
 * Platform sections are parsed by the functions in SECTION_PARSERS below (SEV-SNP and TDX
 * by their own modules); a new platform adds its parser there and its type to
 * PlatformPolicies.
 */
import { gpuPolicyFromJson } from './nvidia/policy.js';
import type { GpuPolicy } from './nvidia/policy.js';
import { describeJsonError } from '../core/json-error.js';
import { CloisterError } from '../errors.js';
import type { Platform } from '../core/types.js';
import { fromHex, isAllZero } from '../core/hex.js';
import { NITRO_PCR_BYTES } from './nitro/document.js';
import { parseSevSnpPolicy } from './sev-snp/policy.js';
import type { SevSnpPolicy } from './sev-snp/policy.js';
import { parseTdxPolicy, tdxUnsafePolicyNote } from './tdx/policy.js';
import type { TdxPolicy } from './tdx/policy.js';
import { isRecord } from '../core/validate.js';
import { MAX_PROTOCOL_VERSION } from '../protocol/wire.js';

export const POLICY_VERSION = 1;
/** Largest accepted policy file. */
export const DEFAULT_MAX_POLICY_BYTES = 64 * 1024;
/** Most models a policy may pin. */
export const MAX_POLICY_MODELS = 256;
/** Upper bound for maxAgeSeconds (one day): evidence older than that is never fresh. */
export const MAX_POLICY_AGE_SECONDS = 24 * 3600;
const NSM_PCR_COUNT = 32;
const DEBUG_ZERO_PCRS: ReadonlySet<number> = new Set([0, 1, 2]);

export interface NitroPolicy {
  /** PCR index -> expected 48-byte value; never empty. */
  readonly pcrs: ReadonlyMap<number, Uint8Array>;
  readonly maxAgeSeconds?: number;
}

export interface SimulatedPolicy extends NitroPolicy {
  /** SHA-256 of the simulated root's DER, pinned in addition to the caller's trusted root. */
  readonly rootSha256?: Uint8Array;
}

export interface PlatformPolicies {
  readonly nitro?: NitroPolicy;
  readonly simulated?: SimulatedPolicy;
  readonly 'sev-snp'?: SevSnpPolicy;
  readonly tdx?: TdxPolicy;
}

export interface Policy {
  readonly version: 1;
  readonly platforms: PlatformPolicies;
  /** Model name -> SHA-256 digest the key config must list for it. */
  readonly models?: ReadonlyMap<string, Uint8Array>;
  /** When true, the client must send a nonce and the evidence must carry it. Default false. */
  readonly nonceRequired: boolean;
  /** Confidential GPUs behind the engine (src/verifier/nvidia/policy.ts); absent: none required. */
  /** Protocol versions the attested key config must offer (`protocols.require`); absent: none required. */
  readonly requireProtocols?: readonly number[];
  readonly gpus?: GpuPolicy;
}

function invalid(message: string, field?: string): CloisterError {
  return new CloisterError('POLICY_INVALID', `policy: ${message}`, field === undefined ? {} : { detail: { field } });
}

function onlyKeys(obj: Record<string, unknown>, allowed: readonly string[], where: string): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) throw invalid(`unknown field ${JSON.stringify(k)} in ${where}`, `${where}.${k}`);
  }
}

function parsePcrs(v: unknown, where: string): Map<number, Uint8Array> {
  if (!isRecord(v)) throw invalid(`${where}.pcrs must be an object`, `${where}.pcrs`);
  const out = new Map<number, Uint8Array>();
  for (const [k, hex] of Object.entries(v)) {
    // Decimal index without sign or leading zeros, 0..31.
    if (!/^(?:0|[1-9][0-9]?)$/.test(k) || Number(k) >= NSM_PCR_COUNT) throw invalid(`${where}.pcrs key ${JSON.stringify(k)} is not a PCR index 0..31`, `${where}.pcrs`);
    if (typeof hex !== 'string') throw invalid(`${where}.pcrs.${k} must be a hex string`, `${where}.pcrs.${k}`);
    const value = fromHex(hex.toLowerCase(), NITRO_PCR_BYTES, `${where}.pcrs.${k}`, 'POLICY_INVALID');
    const index = Number(k);
    if (DEBUG_ZERO_PCRS.has(index) && isAllZero(value)) {
      throw invalid(`${where}.pcrs.${k} is all zero, which only a debug-mode enclave reports`, `${where}.pcrs.${k}`);
    }
    out.set(index, value);
  }
  if (out.size === 0) throw invalid(`${where}.pcrs names no PCR: nothing would be checked`, `${where}.pcrs`);
  const problem = nitroPcrsProblem(out);
  if (problem !== undefined) throw invalid(`${where}.pcrs ${problem}`, `${where}.pcrs`);
  return out;
}

/**
 * Why a PCR set does not identify the enclave's workload, or undefined when it does. Accepted:
 * PCR0 (the whole image), PCR8 (the image signing certificate), or PCR1 and PCR2 together
 * (kernel/bootstrap and application). PCR3 (parent IAM role), PCR4 (parent instance id) and the
 * others say where an enclave runs, not what it runs.
 */
export function nitroPcrsProblem(pcrs: ReadonlyMap<number, Uint8Array>): string | undefined {
  if (pcrs.has(0) || pcrs.has(8) || (pcrs.has(1) && pcrs.has(2))) return undefined;
  const named = [...pcrs.keys()].sort((a, b) => a - b).map((i) => `PCR${i}`);
  return (
    `names ${named.length === 0 ? 'no PCR' : named.join(', ')}, which does not identify the enclave image: ` +
    'pin PCR0 (image), or PCR8 (signing certificate), or both PCR1 (kernel, bootstrap) and PCR2 (application); ' +
    'PCR3/PCR4 only name the parent instance, not what runs in the enclave'
  );
}

function parseMaxAge(v: unknown, where: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_POLICY_AGE_SECONDS) {
    throw invalid(`${where}.maxAgeSeconds must be an integer 1..${MAX_POLICY_AGE_SECONDS}`, `${where}.maxAgeSeconds`);
  }
  return v;
}

function parseNitroSection(v: unknown): NitroPolicy {
  if (!isRecord(v)) throw invalid('platforms.nitro must be an object', 'platforms.nitro');
  onlyKeys(v, ['pcrs', 'maxAgeSeconds'], 'platforms.nitro');
  const pcrs = parsePcrs(v['pcrs'], 'platforms.nitro');
  const maxAgeSeconds = parseMaxAge(v['maxAgeSeconds'], 'platforms.nitro');
  return maxAgeSeconds === undefined ? { pcrs } : { pcrs, maxAgeSeconds };
}

function parseSimulatedSection(v: unknown): SimulatedPolicy {
  if (!isRecord(v)) throw invalid('platforms.simulated must be an object', 'platforms.simulated');
  onlyKeys(v, ['pcrs', 'maxAgeSeconds', 'rootSha256'], 'platforms.simulated');
  const pcrs = parsePcrs(v['pcrs'], 'platforms.simulated');
  const maxAgeSeconds = parseMaxAge(v['maxAgeSeconds'], 'platforms.simulated');
  const rootRaw = v['rootSha256'];
  let rootSha256: Uint8Array | undefined;
  if (rootRaw !== undefined) {
    if (typeof rootRaw !== 'string') throw invalid('platforms.simulated.rootSha256 must be a hex string', 'platforms.simulated.rootSha256');
    rootSha256 = fromHex(rootRaw.toLowerCase(), 32, 'platforms.simulated.rootSha256', 'POLICY_INVALID');
  }
  return {
    pcrs,
    ...(maxAgeSeconds === undefined ? {} : { maxAgeSeconds }),
    ...(rootSha256 === undefined ? {} : { rootSha256 }),
  };
}

// ---- Platform section parsers: one line per platform. ------------------------------------
// Each receives the raw JSON value of its section and throws POLICY_INVALID when it is not
// acceptable (it must name at least one measurement).
const SECTION_PARSERS: { readonly [P in Platform]: (section: unknown) => NonNullable<PlatformPolicies[P]> } = {
  nitro: parseNitroSection,
  simulated: parseSimulatedSection,
  'sev-snp': parseSevSnpPolicy,
  tdx: parseTdxPolicy,
};

function parseModels(v: unknown): Map<string, Uint8Array> | undefined {
  if (v === undefined) return undefined;
  if (!isRecord(v)) throw invalid('models must be an object of name -> sha256 hex', 'models');
  const entries = Object.entries(v);
  if (entries.length === 0 || entries.length > MAX_POLICY_MODELS) throw invalid(`models must name 1..${MAX_POLICY_MODELS} models`, 'models');
  const out = new Map<string, Uint8Array>();
  for (const [name, hex] of entries) {
    if (name.length === 0 || name.length > 256) throw invalid('model names must be 1..256 characters', 'models');
    if (typeof hex !== 'string') throw invalid(`models.${name} must be a hex string`, `models.${name}`);
    out.set(name, fromHex(hex.toLowerCase(), 32, `models.${name}`, 'POLICY_INVALID'));
  }
  return out;
}

/** Validate an already-parsed JSON value as a policy. Throws CloisterError(POLICY_INVALID). */
export function policyFromJson(value: unknown): Policy {
  if (!isRecord(value)) throw invalid('the policy must be a JSON object');
  onlyKeys(value, ['version', 'platforms', 'models', 'nonceRequired', 'gpus', 'protocols'], 'policy');
  if (value['version'] !== POLICY_VERSION) throw invalid(`version must be ${POLICY_VERSION}`, 'version');
  const platformsRaw = value['platforms'];
  if (!isRecord(platformsRaw)) throw invalid('platforms must be an object', 'platforms');
  onlyKeys(platformsRaw, Object.keys(SECTION_PARSERS), 'platforms');
  const platforms: { -readonly [P in Platform]?: PlatformPolicies[P] } = {};
  for (const [name, section] of Object.entries(platformsRaw)) {
    switch (name) {
      case 'nitro':
        platforms.nitro = SECTION_PARSERS.nitro(section);
        break;
      case 'simulated':
        platforms.simulated = SECTION_PARSERS.simulated(section);
        break;
      case 'sev-snp':
        platforms['sev-snp'] = SECTION_PARSERS['sev-snp'](section);
        break;
      case 'tdx':
        platforms.tdx = SECTION_PARSERS.tdx(section);
        break;
      default:
        throw invalid(`unknown platform ${JSON.stringify(name)}`, 'platforms');
    }
  }
  if (Object.keys(platforms).length === 0) throw invalid('platforms names no platform: nothing would be accepted', 'platforms');
  const nonceRequired = value['nonceRequired'] ?? false;
  if (typeof nonceRequired !== 'boolean') throw invalid('nonceRequired must be a boolean', 'nonceRequired');
  const models = parseModels(value['models']);
  const gpus = value['gpus'] === undefined ? undefined : gpuPolicyFromJson(value['gpus']);
  const requireProtocols = value['protocols'] === undefined ? undefined : parseProtocols(value['protocols']);
  return {
    version: 1,
    platforms,
    ...(models === undefined ? {} : { models }),
    nonceRequired,
    ...(gpus === undefined ? {} : { gpus }),
    ...(requireProtocols === undefined ? {} : { requireProtocols }),
  };
}

/** `protocols: { require: [...] }`: 1 to MAX_PROTOCOL_VERSION versions, ascending, each one this client speaks. */
function parseProtocols(v: unknown): number[] {
  if (!isRecord(v)) throw invalid('protocols must be an object', 'protocols');
  onlyKeys(v, ['require'], 'protocols');
  const req = v['require'];
  if (!Array.isArray(req) || req.length === 0 || req.length > MAX_PROTOCOL_VERSION) throw invalid(`protocols.require must list 1 to ${MAX_PROTOCOL_VERSION} protocol versions`, 'protocols.require');
  let last = 0;
  for (const x of req) {
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 1 || x > MAX_PROTOCOL_VERSION) throw invalid(`protocols.require: ${JSON.stringify(x)} is not a protocol version this client speaks (1..${MAX_PROTOCOL_VERSION})`, 'protocols.require');
    if (x <= last) throw invalid('protocols.require must be ascending without duplicates', 'protocols.require');
    last = x;
  }
  return req as number[];
}

/**
 * What a parsed policy accepts only because an explicitly unsafe switch is set (today: TDX
 * `allowMrtdOnly_UNSAFE` without RTMR0..2). The CLI prints each line as a warning; the
 * verification report's policy step records the same note.
 */
export function policyWarnings(policy: Policy): string[] {
  const out: string[] = [];
  const tdx = policy.platforms.tdx === undefined ? undefined : tdxUnsafePolicyNote(policy.platforms.tdx);
  if (tdx !== undefined) out.push(`tdx policy: ${tdx}`);
  return out;
}

/**
 * Parse policy file text (UTF-8 JSON). Throws CloisterError(POLICY_INVALID); a JSON syntax
 * error names its line and column, and `source` (the file path) when given.
 */
export function parsePolicy(text: string | Uint8Array, options: { readonly maxBytes?: number; readonly source?: string } = {}): Policy {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_POLICY_BYTES;
  const bytes = typeof text === 'string' ? Buffer.byteLength(text, 'utf8') : text.byteLength;
  if (bytes > maxBytes) throw invalid(`policy of ${bytes} bytes exceeds ${maxBytes}`);
  const where = options.source === undefined ? 'policy' : `policy '${options.source}'`;
  let decoded: string;
  try {
    decoded = typeof text === 'string' ? text : new TextDecoder('utf-8', { fatal: true }).decode(text);
  } catch (cause) {
    throw new CloisterError('POLICY_INVALID', `${where}: not valid UTF-8`, { cause });
  }
  let json: unknown;
  try {
    json = JSON.parse(decoded);
  } catch (cause) {
    throw new CloisterError('POLICY_INVALID', `${where}: ${describeJsonError(decoded)}`, { cause });
  }
  if (options.source === undefined) return policyFromJson(json);
  try {
    return policyFromJson(json);
  } catch (err) {
    if (err instanceof CloisterError) throw new CloisterError(err.code, `${where}: ${err.message}`, { cause: err, ...(err.detail === undefined ? {} : { detail: err.detail }) });
    throw err;
  }
}
