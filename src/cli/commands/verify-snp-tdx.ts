/**
 * The SEV-SNP and TDX handlers of `cloister verify`:
 *
 *   cloister verify report.bin --platform sev-snp [--vcek vcek.{der,pem} | --certs auxblob.bin]
 *                              [--at ...] [--policy ...] [--report-data <hex> | --key-config <file> [--nonce <hex>]] [--json]
 *   cloister verify quote.bin  --platform tdx (--collateral collateral.json | --pccs URL)
 *                              [--at ...] [--policy ...] [--report-data <hex> | --key-config <file> [--nonce <hex>]] [--json]
 *   cloister verify ev.cbor    (an evidence file from `cloister attest --out`: key config, nonce,
 *                              certificates and collateral come from the file)
 *
 * Binding: with --report-data the report must carry exactly those 64 bytes; with
 * --key-config it must carry SHA-512("cloister/attest/v1\0" || keyConfig || nonce); with
 * neither, the binding step reads "skipped" (inspection of raw evidence). An evidence file
 * always binds the key config it carries (and its nonce). Without --policy
 * the policy step reads "skipped" too, and only the vendor chain, signature and TCB checks
 * decide the result.
 */
import { CloisterError } from '../../errors.js';
import { readFileLimited } from './read-file.js';
import { fromHex } from '../../core/hex.js';
import type { Policy } from '../../verifier/policy.js';
import { inspectSevSnpEvidence, inspectTdxEvidence } from '../../verifier/inspect.js';
import type { ReportDataCheck } from '../../verifier/report.js';
import { PcsCollateralFetcher } from '../../verifier/tdx/collateral.js';
import type { VerificationReport } from '../../core/types.js';
import { certificateFromFile } from '../../verifier/x509/certificate.js';

/** Largest --vcek / --certs / --collateral / --key-config file read. */
const MAX_SNP_TDX_AUX_FILE_BYTES = 1024 * 1024;

/** Extra `parseArgs` options these handlers read; merge into the verify command's OPTIONS. */
export const SNP_TDX_OPTIONS = {
  vcek: { type: 'string' },
  certs: { type: 'string' },
  collateral: { type: 'string' },
  pccs: { type: 'string' },
  'report-data': { type: 'string' },
  'key-config': { type: 'string' },
} as const;

interface SnpTdxValues {
  readonly vcek?: string | undefined;
  readonly certs?: string | undefined;
  readonly collateral?: string | undefined;
  readonly pccs?: string | undefined;
  readonly 'report-data'?: string | undefined;
  readonly 'key-config'?: string | undefined;
}

/** Structurally the verify command's handler context. */
interface SnpTdxContext {
  readonly evidence: Uint8Array;
  readonly at: Date;
  readonly policy: Policy | undefined;
  readonly nonce: Uint8Array | undefined;
  readonly values: SnpTdxValues;
  /** From an evidence file: the key config to bind, and what the server attached. */
  readonly file?: { readonly keyConfigBytes: Uint8Array; readonly certificates?: Uint8Array; readonly collateral?: Uint8Array };
}

interface SnpTdxHandler {
  readonly usage: string;
  verify(ctx: SnpTdxContext): Promise<VerificationReport>;
}

async function readAux(path: string, what: string): Promise<Uint8Array> {
  return readFileLimited(path, MAX_SNP_TDX_AUX_FILE_BYTES, what);
}

interface Binding {
  readonly keyConfig: Uint8Array;
  readonly check: ReportDataCheck;
}

async function bindingFrom(ctx: SnpTdxContext): Promise<Binding> {
  const rd = ctx.values['report-data'];
  const kc = ctx.values['key-config'];
  if (ctx.file !== undefined) {
    if (rd !== undefined || kc !== undefined) {
      throw new CloisterError('INVALID_ARGUMENT', '--report-data and --key-config do not apply to an evidence file: it carries the key config the evidence binds');
    }
    return { keyConfig: ctx.file.keyConfigBytes, check: keyConfigCheck(ctx.nonce) };
  }
  if (rd !== undefined && kc !== undefined) {
    throw new CloisterError('INVALID_ARGUMENT', '--report-data and --key-config are alternatives; give one');
  }
  if (rd !== undefined) {
    return { keyConfig: new Uint8Array(0), check: { kind: 'exact', reportData: fromHex(rd.toLowerCase(), 64, '--report-data') } };
  }
  if (kc !== undefined) {
    return { keyConfig: await readAux(kc, 'key config file'), check: keyConfigCheck(ctx.nonce) };
  }
  if (ctx.nonce !== undefined) throw new CloisterError('INVALID_ARGUMENT', '--nonce needs --key-config for SEV-SNP and TDX evidence');
  return { keyConfig: new Uint8Array(0), check: { kind: 'unchecked' } };
}

function keyConfigCheck(nonce: Uint8Array | undefined): ReportDataCheck {
  return { kind: 'key-config', ...(nonce === undefined ? {} : { nonce }) };
}

function section<K extends 'sev-snp' | 'tdx'>(policy: Policy | undefined, key: K): { policy?: NonNullable<Policy['platforms'][K]> } {
  if (policy === undefined) return {};
  const s = policy.platforms[key];
  if (s === undefined) throw new CloisterError('POLICY_MISMATCH', `the policy has no ${key} section`);
  return { policy: s };
}

export const sevSnpHandler: SnpTdxHandler = {
  usage:
    '--platform sev-snp [--vcek <der|pem> | --certs <auxblob>] [--report-data <hex> | --key-config <file> [--nonce <hex>]]',
  async verify(ctx) {
    const { vcek, certs } = ctx.values;
    const binding = await bindingFrom(ctx);
    if (certs !== undefined && ctx.file?.certificates !== undefined) {
      throw new CloisterError('INVALID_ARGUMENT', '--certs does not apply: the evidence file carries its certificate table');
    }
    const certificates = ctx.file?.certificates ?? (certs === undefined ? undefined : await readAux(certs, 'certificate table file'));
    return inspectSevSnpEvidence(
      {
        platform: 'sev-snp',
        evidence: ctx.evidence,
        keyConfig: binding.keyConfig,
        ...(certificates === undefined ? {} : { certificates }),
      },
      {
        ...section(ctx.policy, 'sev-snp'),
        at: ctx.at,
        binding: binding.check,
        ...(vcek === undefined ? {} : { vcek: certificateFromFile(await readAux(vcek, 'VCEK file'), vcek, 'VCEK file') }),
      },
    );
  },
};

export const tdxHandler: SnpTdxHandler = {
  usage: '--platform tdx (--collateral <json> | --pccs <url>) [--report-data <hex> | --key-config <file> [--nonce <hex>]]',
  async verify(ctx) {
    const { collateral: path, pccs } = ctx.values;
    if (path !== undefined && pccs !== undefined) throw new CloisterError('INVALID_ARGUMENT', '--collateral and --pccs are alternatives; give one');
    if (path !== undefined && ctx.file?.collateral !== undefined) {
      throw new CloisterError('INVALID_ARGUMENT', '--collateral does not apply: the evidence file carries collateral (verified against the Intel root)');
    }
    if (path === undefined && pccs === undefined && ctx.file?.collateral === undefined) {
      throw new CloisterError('INVALID_ARGUMENT', '--platform tdx needs collateral: --collateral <json> (offline), --pccs <url> (Intel PCS or a PCCS), or an evidence file that carries it');
    }
    const binding = await bindingFrom(ctx);
    return inspectTdxEvidence(
      { platform: 'tdx', evidence: ctx.evidence, keyConfig: binding.keyConfig, ...(ctx.file?.collateral === undefined ? {} : { collateral: ctx.file.collateral }) },
      {
        ...section(ctx.policy, 'tdx'),
        at: ctx.at,
        binding: binding.check,
        ...(path === undefined ? {} : { collateral: await readAux(path, 'collateral file') }),
        ...(pccs === undefined ? {} : { pcs: new PcsCollateralFetcher({ baseUrl: pccs }) }),
      },
    );
  },
};
