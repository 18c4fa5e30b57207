/**
 * The client's TDX policy, checked on top of the Intel chain / TCB verification that
 * @phala/dcap-qvl performs (which says nothing about *what* runs in the TD).
 *
 * JSON form (the "tdx" section of the client policy file; unknown keys are rejected):
 *
 * ```json
 * {
 *   "mrTd": ["<96 hex>"],                        // required, 1..64 entries
 *   "rtmr0": ["<96 hex>"], "rtmr1": [...], "rtmr2": [...],   // required (the workload)
 *   "rtmr3": [...],
 *   "mrConfigId": [...], "mrOwner": [...], "mrOwnerConfig": [...], "mrSeam": [...],
 *   "allowDebug": false,                         // TD attribute TUD.DEBUG (bit 0)
 *   "acceptedTcbStatuses": ["UpToDate"],         // others only when named
 *   "allowMrtdOnly_UNSAFE": false                // see below
 * }
 * ```
 *
 * MRTD measures only the TD firmware (TDVF), which on a cloud is usually the provider's stock
 * image: the host can boot any kernel, initrd and command line on it. The workload is in
 * RTMR0 (firmware configuration), RTMR1 (kernel, initrd) and RTMR2 (kernel command line), so
 * all three are required. `"allowMrtdOnly_UNSAFE": true` accepts a policy without them; the
 * policy step of every verification report then says so, and the CLI prints a warning.
 */
import { timingSafeEqualBytes } from '../../crypto/ct.js';
import { CloisterError } from '../../errors.js';
import { fromHex, toHex } from '../../core/hex.js';
import { TD_ATTRIBUTE, tdAttributeSet, type TdReport } from './quote.js';
import { isRecord } from '../../core/validate.js';

const TDX_TCB_STATUSES = [
  'UpToDate',
  'SWHardeningNeeded',
  'ConfigurationNeeded',
  'ConfigurationAndSWHardeningNeeded',
  'OutOfDate',
  'OutOfDateConfigurationNeeded',
] as const;
type TdxTcbStatus = (typeof TDX_TCB_STATUSES)[number];

const MAX_LIST = 64;

export interface TdxPolicy {
  readonly mrTd: readonly Uint8Array[];
  readonly rtmr0?: readonly Uint8Array[];
  readonly rtmr1?: readonly Uint8Array[];
  readonly rtmr2?: readonly Uint8Array[];
  readonly rtmr3?: readonly Uint8Array[];
  readonly mrConfigId?: readonly Uint8Array[];
  readonly mrOwner?: readonly Uint8Array[];
  readonly mrOwnerConfig?: readonly Uint8Array[];
  readonly mrSeam?: readonly Uint8Array[];
  readonly allowDebug: boolean;
  readonly acceptedTcbStatuses: readonly TdxTcbStatus[];
  /**
   * Accept a policy that does not pin RTMR0, RTMR1 and RTMR2 (JSON `allowMrtdOnly_UNSAFE`).
   * Then any kernel, initrd and command line booted on the pinned firmware is accepted.
   */
  readonly allowMrtdOnlyUnsafe?: boolean;
}

/** The JSON name of the unsafe switch: loud on purpose. */
const TDX_ALLOW_MRTD_ONLY_UNSAFE = 'allowMrtdOnly_UNSAFE';
/** The RTMRs that identify the workload (firmware config, kernel + initrd, command line). */
const WORKLOAD_RTMRS = ['rtmr0', 'rtmr1', 'rtmr2'] as const;

const LIST_KEYS = ['mrTd', 'rtmr0', 'rtmr1', 'rtmr2', 'rtmr3', 'mrConfigId', 'mrOwner', 'mrOwnerConfig', 'mrSeam'] as const;
type ListKey = (typeof LIST_KEYS)[number];
const KEYS: ReadonlySet<string> = new Set<string>([...LIST_KEYS, 'allowDebug', 'acceptedTcbStatuses', TDX_ALLOW_MRTD_ONLY_UNSAFE]);

function invalid(message: string, field?: string): CloisterError {
  return new CloisterError('POLICY_INVALID', `tdx policy: ${message}`, field === undefined ? {} : { detail: { field } });
}

/** Parse the "tdx" section of a policy file, strictly. */
export function parseTdxPolicy(section: unknown): TdxPolicy {
  if (!isRecord(section)) throw invalid('section must be an object');
  for (const k of Object.keys(section)) if (!KEYS.has(k)) throw invalid(`unknown key ${JSON.stringify(k)}`, k);
  const lists: Partial<Record<ListKey, Uint8Array[]>> = {};
  for (const k of LIST_KEYS) {
    const v = section[k];
    if (v === undefined) continue;
    if (!Array.isArray(v) || v.length === 0 || v.length > MAX_LIST) throw invalid(`${k} must be a list of 1..${MAX_LIST} hex strings`, k);
    lists[k] = v.map((x) => {
      if (typeof x !== 'string') throw invalid(`${k} entries must be hex strings`, k);
      return fromHex(x.toLowerCase(), 48, `tdx policy ${k}`, 'POLICY_INVALID');
    });
  }
  const mrTd = lists.mrTd;
  if (mrTd === undefined) throw invalid('mrTd is required', 'mrTd');
  const unsafeRaw = section[TDX_ALLOW_MRTD_ONLY_UNSAFE] ?? false;
  if (typeof unsafeRaw !== 'boolean') throw invalid(`${TDX_ALLOW_MRTD_ONLY_UNSAFE} must be a boolean`, TDX_ALLOW_MRTD_ONLY_UNSAFE);
  const allowDebug = section['allowDebug'] ?? false;
  if (typeof allowDebug !== 'boolean') throw invalid('allowDebug must be a boolean', 'allowDebug');
  const st = section['acceptedTcbStatuses'] ?? ['UpToDate'];
  if (!Array.isArray(st) || st.length === 0) throw invalid('acceptedTcbStatuses must be a non-empty list', 'acceptedTcbStatuses');
  const acceptedTcbStatuses = st.map((s) => {
    const found = TDX_TCB_STATUSES.find((x) => x === s);
    if (found === undefined) throw invalid(`unknown TCB status ${JSON.stringify(s)} (Revoked is never accepted)`, 'acceptedTcbStatuses');
    return found;
  });
  // Last, so that a malformed field is named first.
  requireWorkloadRtmrs(lists, unsafeRaw);
  return { ...lists, mrTd, allowDebug, acceptedTcbStatuses, ...(unsafeRaw ? { allowMrtdOnlyUnsafe: true } : {}) };
}

/** The workload RTMRs (rtmr0..2) a policy leaves unpinned; empty when it pins all three. */
function unpinnedWorkloadRtmrs(policy: Partial<Record<(typeof WORKLOAD_RTMRS)[number], readonly Uint8Array[]>>): string[] {
  return WORKLOAD_RTMRS.filter((k) => policy[k] === undefined || policy[k].length === 0);
}

/**
 * RTMR0..2 must be pinned unless the unsafe switch is set: MRTD alone names only the firmware
 * and accepts any kernel, initrd and command line booted on it.
 */
function requireWorkloadRtmrs(policy: Partial<Record<(typeof WORKLOAD_RTMRS)[number], readonly Uint8Array[]>>, allowMrtdOnlyUnsafe: boolean | undefined): void {
  const missing = unpinnedWorkloadRtmrs(policy);
  if (missing.length === 0 || allowMrtdOnlyUnsafe === true) return;
  throw invalid(
    `${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} missing: MRTD measures only the TD firmware (often the cloud's stock image), ` +
      'so without RTMR0 (firmware configuration), RTMR1 (kernel, initrd) and RTMR2 (kernel command line) any workload booted on that firmware would be accepted; ' +
      `pin them, or set "${TDX_ALLOW_MRTD_ONLY_UNSAFE}": true to accept that risk`,
    missing[0],
  );
}

/** The policy-step note when the unsafe switch let unpinned workload RTMRs through; else undefined. */
export function tdxUnsafePolicyNote(policy: TdxPolicy): string | undefined {
  const missing = unpinnedWorkloadRtmrs(policy);
  if (missing.length === 0 || policy.allowMrtdOnlyUnsafe !== true) return undefined;
  return `WARNING ${TDX_ALLOW_MRTD_ONLY_UNSAFE}: ${missing.join(', ').toUpperCase()} not checked, any workload on this firmware is accepted`;
}

/** Build a policy in code with the fail-closed defaults. */
export function tdxPolicy(fields: Partial<TdxPolicy> & { mrTd: readonly Uint8Array[] }): TdxPolicy {
  return { allowDebug: false, acceptedTcbStatuses: ['UpToDate'], ...fields };
}

function oneOf(value: Uint8Array, allowed: readonly Uint8Array[]): boolean {
  let match = false;
  for (const a of allowed) match = timingSafeEqualBytes(value, a) || match;
  return match;
}

/** A debuggable TD (TUD.DEBUG) is refused unless a policy allows it, also when only inspecting. */
export function checkTdxAttributeDefaults(report: TdReport, allowDebug = false): void {
  if (tdAttributeSet(report.tdAttributes, TD_ATTRIBUTE.DEBUG) && !allowDebug) {
    throw new CloisterError('DEBUG_MODE', 'TD attributes have TUD.DEBUG set');
  }
}

/**
 * Check the TD report against the policy; throws DEBUG_MODE, POLICY_MISMATCH or POLICY_INVALID.
 * Returns the unsafe-policy note (tdxUnsafePolicyNote) for the report, or undefined.
 */
export function checkTdxPolicy(report: TdReport, policy: TdxPolicy): string | undefined {
  if (policy.mrTd.length === 0) throw invalid('names no MRTD');
  // parseTdxPolicy refuses these; a policy built in code is held to the same rule (fail closed).
  requireWorkloadRtmrs(policy, policy.allowMrtdOnlyUnsafe);
  checkTdxAttributeDefaults(report, policy.allowDebug);
  const checks: [string, Uint8Array, readonly Uint8Array[] | undefined][] = [
    ['MRTD', report.mrTd, policy.mrTd],
    ['RTMR0', report.rtmrs[0], policy.rtmr0],
    ['RTMR1', report.rtmrs[1], policy.rtmr1],
    ['RTMR2', report.rtmrs[2], policy.rtmr2],
    ['RTMR3', report.rtmrs[3], policy.rtmr3],
    ['MRCONFIGID', report.mrConfigId, policy.mrConfigId],
    ['MROWNER', report.mrOwner, policy.mrOwner],
    ['MROWNERCONFIG', report.mrOwnerConfig, policy.mrOwnerConfig],
    ['MRSEAM', report.mrSeam, policy.mrSeam],
  ];
  for (const [name, value, allowed] of checks) {
    if (allowed !== undefined && !oneOf(value, allowed)) {
      // Measurements are not secret: name the actual value and what the policy accepts.
      const want = allowed.map(toHex);
      throw new CloisterError('POLICY_MISMATCH', `${name} is ${toHex(value)}; the policy expects ${want.length === 1 ? (want[0] ?? '') : `one of ${want.join(', ')}`}`, {
        detail: { field: name },
      });
    }
  }
  return tdxUnsafePolicyNote(policy);
}

/** Whether the policy accepts a TCB status reported by the quote verifier. */
export function tcbStatusAccepted(status: string, policy: TdxPolicy): boolean {
  return policy.acceptedTcbStatuses.some((s) => s === status);
}
