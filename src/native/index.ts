/**
 * Loader for the optional native addon (native/cloister_native.c, built by
 * scripts/build-native.mjs into build/Release/cloister_native.node).
 *
 * The addon issues the two ioctls Node cannot: NSM_IOCTL_RAW on /dev/nsm (Nitro) and
 * SNP_GET_EXT_REPORT on /dev/sev-guest (SEV-SNP). It also carries the HPKE crypto fast path
 * (native/crypto.c, wrapped by src/native/crypto.ts). Device files are opened by the caller with
 * `fs.openSync`; these wrappers only validate arguments, call the addon and map its errors
 * into the one CloisterError taxonomy. A missing addon is PLATFORM_UNAVAILABLE, never a crash
 * at import time.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CloisterError } from '../errors.js';

/** NSM_REQUEST_MAX_SIZE in the aws-nitro-enclaves-nsm-api driver. */
const NSM_REQUEST_MAX = 4096;
/** NSM_RESPONSE_MAX_SIZE in the aws-nitro-enclaves-nsm-api driver. */
const NSM_RESPONSE_MAX = 12288;
/** Largest certificate buffer the addon accepts for SNP_GET_EXT_REPORT. */
const SNP_CERTS_MAX = 1_048_576;
const PAGE = 4096;

/** The raw addon surface (what native/cloister_native.c exports). */
export interface NativeAddon {
  nsmRaw(fd: number, request: Uint8Array): Uint8Array;
  snpGetExtReport(
    fd: number,
    reportData: Uint8Array,
    vmpl: number,
    certsBufferLength: number,
  ): { report: Uint8Array; certs: Uint8Array };
}

export interface SnpExtendedReport {
  /** The attestation report exactly as the firmware returned it (report_size bytes). */
  readonly report: Uint8Array;
  /** The certificate buffer (GUID table, zero-terminated), possibly empty. */
  readonly certs: Uint8Array;
}

interface SnpExtReportOptions {
  /** VMPL to request the report at; default 0. */
  readonly vmpl?: number;
  /** First certificate buffer size (multiple of 4096); default 16 KiB. */
  readonly certsBufferLength?: number;
  /** Retry at most once with the driver's needed length, up to this bound; default 1 MiB. */
  readonly maxCertsBufferLength?: number;
}

let cached: { addon: NativeAddon | undefined; reason: string } | undefined;
let loaded: { module: unknown; reason: string } | undefined;

function candidatePaths(): string[] {
  // src/native/index.ts and dist/native/index.js both sit two levels below the package root.
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
  const explicit = process.env['CLOISTER_NATIVE_ADDON'];
  // The benchmark and fuzz builds (build/bench/src/native/index.js, build/fuzz/...) sit two
  // levels further down.
  const paths = [join(root, 'build', 'Release', 'cloister_native.node')];
  if ((basename(root) === 'bench' || basename(root) === 'fuzz') && basename(dirname(root)) === 'build') {
    paths.push(join(root, '..', '..', 'build', 'Release', 'cloister_native.node'));
  }
  if (explicit !== undefined && explicit !== '') paths.unshift(resolve(explicit));
  return paths;
}

function isAddon(value: unknown): value is NativeAddon {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return typeof v['nsmRaw'] === 'function' && typeof v['snpGetExtReport'] === 'function';
}

/**
 * The addon module as loaded (unchecked), or why it could not be; loaded once. Shared by the
 * ioctl wrappers here and the crypto functions (src/native/crypto.ts).
 */
export function loadAddonModule(): { readonly module?: unknown; readonly reason: string } {
  if (loaded !== undefined) return loaded;
  const require = createRequire(import.meta.url);
  let reason = 'build/Release/cloister_native.node not found (run `node scripts/build-native.mjs --required`)';
  for (const path of candidatePaths()) {
    if (!existsSync(path)) continue;
    try {
      loaded = { module: require(path) as unknown, reason: '' };
      return loaded;
    } catch (err) {
      reason = `${path} failed to load: ${err instanceof Error ? err.message : String(err)}`;
    }
  }
  loaded = { module: undefined, reason };
  return loaded;
}

/** The addon, or undefined when it was not built (the reason is kept for `requireNative`). */
export function loadNative(): NativeAddon | undefined {
  if (cached !== undefined) return cached.addon;
  const { module, reason } = loadAddonModule();
  if (module === undefined) cached = { addon: undefined, reason };
  else if (isAddon(module)) cached = { addon: module, reason: '' };
  else cached = { addon: undefined, reason: 'the native addon does not export nsmRaw/snpGetExtReport' };
  return cached.addon;
}

/** The addon, or PLATFORM_UNAVAILABLE naming why it is missing. */
export function requireNative(): NativeAddon {
  const addon = loadNative();
  if (addon === undefined) {
    throw new CloisterError('PLATFORM_UNAVAILABLE', `native addon unavailable: ${cached?.reason ?? 'unknown'}`);
  }
  return addon;
}

function nativeErrorField(err: unknown, name: string): unknown {
  return typeof err === 'object' && err !== null ? (err as Record<string, unknown>)[name] : undefined;
}

function mapNativeError(err: unknown, what: string): CloisterError {
  const code = nativeErrorField(err, 'code');
  const detail: Record<string, string | number | boolean> = { call: what };
  for (const name of ['errno', 'fwError', 'vmmError', 'status', 'responseLength', 'reportSize', 'neededCertsLength']) {
    const v = nativeErrorField(err, name);
    if (typeof v === 'number') detail[name] = v;
  }
  const message = `${what}: ${err instanceof Error ? err.message : String(err)}`;
  switch (code) {
    case 'INVALID_ARGUMENT':
    case 'LIMIT_EXCEEDED':
    case 'MALFORMED':
    case 'PLATFORM_UNAVAILABLE':
      return new CloisterError(code, message, { cause: err, detail });
    case 'CERTS_BUFFER_TOO_SMALL':
      return new CloisterError('LIMIT_EXCEEDED', message, { cause: err, detail });
    default:
      return new CloisterError('ATTESTER_FAILED', message, { cause: err, detail });
  }
}

/**
 * One NSM_IOCTL_RAW round trip: CBOR request in, CBOR response out (both copied).
 * `addon` is injectable for tests; by default the built addon is required.
 */
export function nsmRaw(fd: number, request: Uint8Array, addon: NativeAddon = requireNative()): Uint8Array {
  if (!Number.isSafeInteger(fd) || fd < 0) throw new CloisterError('INVALID_ARGUMENT', 'fd must be a non-negative integer');
  if (!(request instanceof Uint8Array) || request.byteLength === 0 || request.byteLength > NSM_REQUEST_MAX) {
    throw new CloisterError('LIMIT_EXCEEDED', `NSM request must be 1..${NSM_REQUEST_MAX} bytes`);
  }
  let out: Uint8Array;
  try {
    out = addon.nsmRaw(fd, request.slice());
  } catch (err) {
    throw mapNativeError(err, 'nsmRaw');
  }
  if (!(out instanceof Uint8Array) || out.byteLength === 0 || out.byteLength > NSM_RESPONSE_MAX) {
    throw new CloisterError('MALFORMED', 'NSM response length out of range');
  }
  return out;
}

/**
 * SNP_GET_EXT_REPORT with the given 64-byte report_data. When the host's certificate blob
 * does not fit, retries once with the length the driver asked for (bounded by
 * `maxCertsBufferLength`); beyond that it fails with LIMIT_EXCEEDED and detail.neededCertsLength.
 */
export function snpGetExtReport(
  fd: number,
  reportData: Uint8Array,
  options: SnpExtReportOptions = {},
  addon: NativeAddon = requireNative(),
): SnpExtendedReport {
  const vmpl = options.vmpl ?? 0;
  const first = options.certsBufferLength ?? 4 * PAGE;
  const max = options.maxCertsBufferLength ?? SNP_CERTS_MAX;
  if (!Number.isSafeInteger(fd) || fd < 0) throw new CloisterError('INVALID_ARGUMENT', 'fd must be a non-negative integer');
  if (!(reportData instanceof Uint8Array) || reportData.byteLength !== 64) {
    throw new CloisterError('INVALID_ARGUMENT', 'reportData must be exactly 64 bytes');
  }
  if (!Number.isInteger(vmpl) || vmpl < 0 || vmpl > 3) throw new CloisterError('INVALID_ARGUMENT', 'vmpl must be 0..3');
  for (const [name, v] of [['certsBufferLength', first], ['maxCertsBufferLength', max]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > SNP_CERTS_MAX || v % PAGE !== 0) {
      throw new CloisterError('INVALID_ARGUMENT', `${name} must be a multiple of ${PAGE} in 0..${SNP_CERTS_MAX}`);
    }
  }
  if (first > max) throw new CloisterError('INVALID_ARGUMENT', 'certsBufferLength exceeds maxCertsBufferLength');
  const attempt = (len: number): SnpExtendedReport => {
    const r = addon.snpGetExtReport(fd, reportData.slice(), vmpl, len);
    return { report: r.report.slice(), certs: r.certs.slice() };
  };
  try {
    return attempt(first);
  } catch (err) {
    const needed = nativeErrorField(err, 'neededCertsLength');
    if (nativeErrorField(err, 'code') !== 'CERTS_BUFFER_TOO_SMALL' || typeof needed !== 'number') {
      throw mapNativeError(err, 'snpGetExtReport');
    }
    const retry = Math.ceil(needed / PAGE) * PAGE;
    if (retry <= first || retry > max) throw mapNativeError(err, 'snpGetExtReport');
    try {
      return attempt(retry);
    } catch (err2) {
      throw mapNativeError(err2, 'snpGetExtReport');
    }
  }
}
