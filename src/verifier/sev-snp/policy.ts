/**
 * The client's SEV-SNP policy: what a verified report must show before any key in it is
 * trusted. Fail closed: at least one launch measurement is required, DEBUG and MIGRATE_MA are
 * refused unless the policy names them, and every optional field, once given, must match.
 *
 * JSON form (the "sev-snp" section of the client policy file; unknown keys are rejected):
 *
 * ```json
 * {
 *   "measurements": ["<96 hex>", ...],          // required, 1..64 entries
 *   "allowDebug": false,                        // guest policy bit 19
 *   "allowMigrateMa": false,                    // guest policy bit 18
 *   "allowSmt": true,                           // guest policy bit 16
 *   "requireSingleSocket": false,               // guest policy bit 20
 *   "minTcb": { "bootloader": 3, "tee": 0, "snp": 8, "microcode": 115, "fmc": 0 },
 *   "minGuestSvn": 0,
 *   "hostData": "<64 hex>",
 *   "idKeyDigests": ["<96 hex>"], "authorKeyDigests": ["<96 hex>"],
 *   "vmpl": [0],                                // accepted VMPLs, default [0]
 *   "products": ["Milan", "Genoa", "Turin"],    // accepted AMD products, default all
 *   "allowVlek": true                           // accept reports signed by a VLEK
 * }
 * ```
 */
import { timingSafeEqualBytes } from '../../crypto/ct.js';
import { CloisterError } from '../../errors.js';
import { fromHex, toHex } from '../../core/hex.js';
import { SNP_POLICY_BIT, snpPolicyHas, type SnpReport } from './report.js';
import { SNP_PRODUCTS, tcbAtLeast, type SnpProduct, type SnpTcbParts } from './tcb.js';
import { isRecord } from '../../core/validate.js';

const MAX_POLICY_LIST_ENTRIES = 64;

export interface SevSnpPolicy {
  readonly measurements: readonly Uint8Array[];
  readonly allowDebug: boolean;
  readonly allowMigrateMa: boolean;
  readonly allowSmt: boolean;
  readonly requireSingleSocket: boolean;
  readonly minTcb?: Partial<SnpTcbParts>;
  readonly minGuestSvn?: number;
  readonly hostData?: Uint8Array;
  readonly idKeyDigests?: readonly Uint8Array[];
  readonly authorKeyDigests?: readonly Uint8Array[];
  readonly vmpl: readonly number[];
  readonly products: readonly SnpProduct[];
  readonly allowVlek: boolean;
}

const KEYS: ReadonlySet<string> = new Set([
  'measurements',
  'allowDebug',
  'allowMigrateMa',
  'allowSmt',
  'requireSingleSocket',
  'minTcb',
  'minGuestSvn',
  'hostData',
  'idKeyDigests',
  'authorKeyDigests',
  'vmpl',
  'products',
  'allowVlek',
]);
const TCB_KEYS: ReadonlySet<string> = new Set(['bootloader', 'tee', 'snp', 'microcode', 'fmc']);

function invalid(message: string, field?: string): CloisterError {
  return new CloisterError('POLICY_INVALID', `sev-snp policy: ${message}`, field === undefined ? {} : { detail: { field } });
}

function hexList(v: unknown, bytes: number, field: string, required: boolean): Uint8Array[] | undefined {
  if (v === undefined) {
    if (required) throw invalid(`${field} is required`, field);
    return undefined;
  }
  if (!Array.isArray(v) || v.length === 0 || v.length > MAX_POLICY_LIST_ENTRIES) {
    throw invalid(`${field} must be a list of 1..${MAX_POLICY_LIST_ENTRIES} hex strings`, field);
  }
  return v.map((x) => {
    if (typeof x !== 'string') throw invalid(`${field} entries must be hex strings`, field);
    return fromHex(x.toLowerCase(), bytes, `sev-snp policy ${field}`, 'POLICY_INVALID');
  });
}

function bool(v: unknown, field: string, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw invalid(`${field} must be a boolean`, field);
  return v;
}

function byteInt(v: unknown, field: string, max = 255): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw invalid(`${field} must be an integer 0..${max}`, field);
  return v;
}

/** Parse the "sev-snp" section of a policy file, strictly. */
export function parseSevSnpPolicy(section: unknown): SevSnpPolicy {
  if (!isRecord(section)) throw invalid('section must be an object');
  for (const k of Object.keys(section)) if (!KEYS.has(k)) throw invalid(`unknown key ${JSON.stringify(k)}`, k);
  if (section['measurements'] === undefined) {
    throw invalid(
      'measurements is required: the launch measurement is what identifies the guest (firmware, kernel, initrd, command line); without it any guest on a genuine AMD host would be accepted',
      'measurements',
    );
  }
  const measurements = hexList(section['measurements'], 48, 'measurements', true) ?? [];
  let minTcb: Partial<SnpTcbParts> | undefined;
  const mt = section['minTcb'];
  if (mt !== undefined) {
    if (!isRecord(mt) || Object.keys(mt).length === 0) throw invalid('minTcb must be a non-empty object', 'minTcb');
    const out: { -readonly [K in keyof SnpTcbParts]?: number } = {};
    for (const [k, v] of Object.entries(mt)) {
      if (!TCB_KEYS.has(k)) throw invalid(`unknown minTcb key ${JSON.stringify(k)}`, 'minTcb');
      out[k as keyof SnpTcbParts] = byteInt(v, `minTcb.${k}`);
    }
    minTcb = out;
  }
  const hostDataRaw = section['hostData'];
  let hostData: Uint8Array | undefined;
  if (hostDataRaw !== undefined) {
    if (typeof hostDataRaw !== 'string') throw invalid('hostData must be a hex string', 'hostData');
    hostData = fromHex(hostDataRaw.toLowerCase(), 32, 'sev-snp policy hostData', 'POLICY_INVALID');
  }
  const vmplRaw = section['vmpl'] ?? [0];
  if (!Array.isArray(vmplRaw) || vmplRaw.length === 0 || vmplRaw.length > 4) throw invalid('vmpl must be a list of 1..4 integers', 'vmpl');
  const vmpl = vmplRaw.map((x) => byteInt(x, 'vmpl', 3));
  const productsRaw = section['products'] ?? SNP_PRODUCTS;
  if (!Array.isArray(productsRaw) || productsRaw.length === 0) throw invalid('products must be a non-empty list', 'products');
  const products = productsRaw.map((p) => {
    const found = SNP_PRODUCTS.find((x) => x === p);
    if (found === undefined) throw invalid(`unknown product ${JSON.stringify(p)}`, 'products');
    return found;
  });
  const idKeyDigests = hexList(section['idKeyDigests'], 48, 'idKeyDigests', false);
  const authorKeyDigests = hexList(section['authorKeyDigests'], 48, 'authorKeyDigests', false);
  const minGuestSvnRaw = section['minGuestSvn'];
  const minGuestSvn = minGuestSvnRaw === undefined ? undefined : byteInt(minGuestSvnRaw, 'minGuestSvn', 0xffffffff);
  return {
    measurements,
    allowDebug: bool(section['allowDebug'], 'allowDebug', false),
    allowMigrateMa: bool(section['allowMigrateMa'], 'allowMigrateMa', false),
    allowSmt: bool(section['allowSmt'], 'allowSmt', true),
    requireSingleSocket: bool(section['requireSingleSocket'], 'requireSingleSocket', false),
    vmpl,
    products,
    allowVlek: bool(section['allowVlek'], 'allowVlek', true),
    ...(minTcb === undefined ? {} : { minTcb }),
    ...(minGuestSvn === undefined ? {} : { minGuestSvn }),
    ...(hostData === undefined ? {} : { hostData }),
    ...(idKeyDigests === undefined ? {} : { idKeyDigests }),
    ...(authorKeyDigests === undefined ? {} : { authorKeyDigests }),
  };
}

/** Build a policy in code with the fail-closed defaults (tests, CLI flags). */
export function sevSnpPolicy(fields: Partial<SevSnpPolicy> & { measurements: readonly Uint8Array[] }): SevSnpPolicy {
  return {
    allowDebug: false,
    allowMigrateMa: false,
    allowSmt: true,
    requireSingleSocket: false,
    vmpl: [0],
    products: SNP_PRODUCTS,
    allowVlek: true,
    ...fields,
  };
}

function oneOf(value: Uint8Array, allowed: readonly Uint8Array[]): boolean {
  // Compare against every entry (no early exit), constant time per entry.
  let match = false;
  for (const a of allowed) match = timingSafeEqualBytes(value, a) || match;
  return match;
}

function mismatch(message: string, field: string): CloisterError {
  return new CloisterError('POLICY_MISMATCH', message, { detail: { field } });
}

/** "one of a, b" for error messages: measurements are not secret, so both sides are named. */
function listed(values: readonly Uint8Array[]): string {
  const hex = values.map(toHex);
  return hex.length === 1 ? (hex[0] ?? '') : `one of ${hex.join(', ')}`;
}

function tcbText(t: Partial<SnpTcbParts>): string {
  return (['bootloader', 'tee', 'snp', 'microcode', 'fmc'] as const)
    .filter((k) => t[k] !== undefined)
    .map((k) => `${k} ${String(t[k])}`)
    .join(', ');
}

/**
 * Check a cryptographically verified report against the policy. Throws the first failure as a
 * CloisterError (DEBUG_MODE, TCB_MISMATCH or POLICY_MISMATCH; POLICY_INVALID for an empty
 * policy).
 */
/**
 * The guest-policy properties that no default accepts: a debuggable guest (bit 19) and a
 * migration agent (bit 18). Also enforced when a report is only inspected without a policy.
 */
export function checkSevSnpGuestPolicyDefaults(
  report: SnpReport,
  allow: { readonly allowDebug: boolean; readonly allowMigrateMa: boolean } = { allowDebug: false, allowMigrateMa: false },
): void {
  const p = report.policy;
  if (snpPolicyHas(p, SNP_POLICY_BIT.DEBUG) && !allow.allowDebug) {
    throw new CloisterError('DEBUG_MODE', 'SEV-SNP guest policy allows debugging (bit 19)', { detail: { policy: `0x${p.toString(16)}` } });
  }
  if (snpPolicyHas(p, SNP_POLICY_BIT.MIGRATE_MA) && !allow.allowMigrateMa) {
    throw mismatch('SEV-SNP guest policy allows a migration agent (bit 18)', 'policy.MIGRATE_MA');
  }
}

export function checkSevSnpPolicy(report: SnpReport, reportedTcb: SnpTcbParts, policy: SevSnpPolicy): void {
  if (policy.measurements.length === 0) throw invalid('names no measurement');
  const p = report.policy;
  checkSevSnpGuestPolicyDefaults(report, policy);
  if (snpPolicyHas(p, SNP_POLICY_BIT.SMT) && !policy.allowSmt) throw mismatch('SEV-SNP guest policy allows SMT (bit 16); the policy has allowSmt false', 'policy.SMT');
  if (!snpPolicyHas(p, SNP_POLICY_BIT.SINGLE_SOCKET) && policy.requireSingleSocket) {
    throw mismatch('SEV-SNP guest policy does not require a single socket (bit 20 clear); the policy has requireSingleSocket true', 'policy.SINGLE_SOCKET');
  }
  if (!oneOf(report.measurement, policy.measurements)) {
    throw mismatch(`launch measurement is ${toHex(report.measurement)}; the policy expects ${listed(policy.measurements)}`, 'measurement');
  }
  if (!policy.vmpl.includes(report.vmpl)) throw mismatch(`report VMPL is ${report.vmpl}; the policy accepts ${policy.vmpl.join(', ')}`, 'vmpl');
  if (report.signingKey === 'vlek' && !policy.allowVlek) throw mismatch('VLEK-signed reports are not accepted', 'signing_key');
  if (policy.minGuestSvn !== undefined && report.guestSvn < policy.minGuestSvn) {
    throw mismatch(`guest SVN is ${report.guestSvn}; the policy minimum is ${policy.minGuestSvn}`, 'guest_svn');
  }
  if (policy.minTcb !== undefined && !tcbAtLeast(reportedTcb, policy.minTcb)) {
    throw new CloisterError('TCB_MISMATCH', `reported TCB is ${tcbText(reportedTcb)}; the policy minimum is ${tcbText(policy.minTcb)}`, { detail: { field: 'reported_tcb' } });
  }
  if (policy.hostData !== undefined && !timingSafeEqualBytes(report.hostData, policy.hostData)) {
    throw mismatch(`host_data is ${toHex(report.hostData)}; the policy expects ${toHex(policy.hostData)}`, 'host_data');
  }
  if (policy.idKeyDigests !== undefined && !oneOf(report.idKeyDigest, policy.idKeyDigests)) {
    throw mismatch(`ID key digest is ${toHex(report.idKeyDigest)}; the policy expects ${listed(policy.idKeyDigests)}`, 'id_key_digest');
  }
  if (policy.authorKeyDigests !== undefined) {
    if (!report.authorKeyEnabled) throw mismatch('policy requires an author key but the ID block has none', 'author_key_digest');
    if (!oneOf(report.authorKeyDigest, policy.authorKeyDigests)) {
      throw mismatch(`author key digest is ${toHex(report.authorKeyDigest)}; the policy expects ${listed(policy.authorKeyDigests)}`, 'author_key_digest');
    }
  }
}

/** Policy-relevant bits of the guest policy, named, for printing. */
export function describeSnpGuestPolicy(policy: bigint): Record<string, boolean | string> {
  return {
    raw: `0x${policy.toString(16)}`,
    abi: `${(policy >> 8n) & 0xffn}.${policy & 0xffn}`,
    smt: snpPolicyHas(policy, SNP_POLICY_BIT.SMT),
    migrateMa: snpPolicyHas(policy, SNP_POLICY_BIT.MIGRATE_MA),
    debug: snpPolicyHas(policy, SNP_POLICY_BIT.DEBUG),
    singleSocket: snpPolicyHas(policy, SNP_POLICY_BIT.SINGLE_SOCKET),
    cxlAllow: snpPolicyHas(policy, SNP_POLICY_BIT.CXL_ALLOW),
    memAes256Xts: snpPolicyHas(policy, SNP_POLICY_BIT.MEM_AES_256_XTS),
    raplDis: snpPolicyHas(policy, SNP_POLICY_BIT.RAPL_DIS),
    ciphertextHiding: snpPolicyHas(policy, SNP_POLICY_BIT.CIPHERTEXT_HIDING),
    pageSwapDisable: snpPolicyHas(policy, SNP_POLICY_BIT.PAGE_SWAP_DISABLE),
  };
}
