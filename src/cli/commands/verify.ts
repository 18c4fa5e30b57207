/**
 * `cloister verify <file> --platform <p> [options]`: verify attestation evidence from a file
 * and print the verified claims.
 *
 * The file is either raw evidence (a Nitro document, an SEV-SNP report, a TDX quote) or an
 * evidence file as `cloister attest --out` writes it (src/verifier/evidence-file.ts): the
 * evidence with the key config it binds, the nonce it was requested with, and the SNP
 * certificates or TDX collateral the server attached. For an evidence file the binding of
 * exactly that key config (and nonce) is always checked, then the key config's own claims,
 * and its summary is printed.
 *
 * Verified means: the evidence, a policy (--policy) and the binding of a key config (an
 * evidence file, or --key-config; for SEV-SNP/TDX also --report-data) were all checked.
 * When the policy or the binding was not checked the result is VERIFICATION_INCOMPLETE and
 * the exit code 1, unless --inspect asks for inspection only: then what was checked and what
 * was NOT is printed, and the exit code is 0 when every check that ran passed. A debug-mode
 * TEE is refused either way (DEBUG_MODE).
 *
 * Exit codes: 0 every step passed; 1 a verification step failed (its error code is
 * printed) or, without --inspect, the policy or binding was not checked; 2 usage error. Each platform is one entry in PLATFORMS below: its extra
 * options go into OPTIONS and its handler turns the parsed arguments into a report.
 */
import { stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import type { ParseArgsConfig } from 'node:util';
import { CloisterError, isErrorCode } from '../../errors.js';
import { fromHex, toHex } from '../../core/hex.js';
import { decodeEvidenceFile, looksLikeEvidenceFile, MAX_EVIDENCE_FILE_BYTES as MAX_EVIDENCE_FILE_FORMAT_BYTES } from '../../verifier/evidence-file.js';
import type { EvidenceFile } from '../../verifier/evidence-file.js';
import { nitroBindingFor } from '../../protocol/binding.js';
import { checkKeyConfigClaims } from '../../verifier/verify.js';
import { timingSafeEqualBytes } from '../../crypto/ct.js';
import { decodeKeyConfig } from '../../protocol/key-config.js';
import type { KeyConfig } from '../../protocol/key-config.js';
import { verifyNitroDocument } from '../../verifier/nitro/verify.js';
import type { VerifyNitroOptions } from '../../verifier/nitro/verify.js';
import { parsePolicy, policyWarnings } from '../../verifier/policy.js';
import type { Policy } from '../../verifier/policy.js';
import type { VerificationReport } from '../../core/types.js';
import { certificatesFromFile } from '../../verifier/x509/certificate.js';
import { SNP_TDX_OPTIONS, sevSnpHandler, tdxHandler } from './verify-snp-tdx.js';
import { readFileLimited } from './read-file.js';
import { GpuUsageError, verifyGpuReportFile } from './verify-gpu.js';
import { parseAtOption } from './args.js';

/** The GPU report platform: not a CPU TEE, so not in PLATFORMS (verify-gpu.ts). */
const GPU_PLATFORM = 'nvidia-gpu';
const GPU_USAGE = '--platform nvidia-gpu --chain <pem> --rim <driver RIM> --rim <VBIOS RIM>   (an NVIDIA GPU SPDM report, raw or hex)';

export const summary = 'verify attestation evidence from a file and print the verified claims';

/** Largest evidence file read (a Nitro document is < 16 KiB; an evidence file with TDX collateral < 64 KiB). */
export const MAX_EVIDENCE_FILE_BYTES = MAX_EVIDENCE_FILE_FORMAT_BYTES;
const MAX_AUX_FILE_BYTES = 1024 * 1024;

export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

const defaultIo: CliIo = {
  out: (t) => process.stdout.write(`${t}\n`),
  err: (t) => process.stderr.write(`${t}\n`),
};

const OPTIONS = {
  platform: { type: 'string' },
  root: { type: 'string', multiple: true },
  at: { type: 'string' },
  policy: { type: 'string' },
  nonce: { type: 'string' },
  json: { type: 'boolean' },
  inspect: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  ...SNP_TDX_OPTIONS,
  chain: { type: 'string' },
  rim: { type: 'string', multiple: true },
} as const satisfies ParseArgsConfig['options'];

type ParsedValues = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true; strict: true }>>['values'];

/** What every platform handler receives. */
interface VerifyContext {
  readonly evidence: Uint8Array;
  readonly at: Date;
  readonly policy: Policy | undefined;
  /** The nonce the binding must carry: --nonce, else the evidence file's own. */
  readonly nonce: Uint8Array | undefined;
  readonly values: ParsedValues;
  /** From an evidence file: the key config the evidence must bind, and what the server attached. */
  readonly file?: {
    readonly keyConfigBytes: Uint8Array;
    readonly keyConfig: KeyConfig;
    readonly certificates?: Uint8Array;
    readonly collateral?: Uint8Array;
  };
}

interface PlatformHandler {
  readonly usage: string;
  verify(ctx: VerifyContext): Promise<VerificationReport>;
}

class UsageError extends Error {}

async function readRoots(paths: readonly string[] | undefined): Promise<Uint8Array[] | undefined> {
  if (paths === undefined || paths.length === 0) return undefined;
  const roots: Uint8Array[] = [];
  for (const p of paths) roots.push(...certificatesFromFile(await readFileLimited(p, MAX_AUX_FILE_BYTES, 'root file'), p, 'root file'));
  return roots;
}

/** Nitro and simulated share the document format and the verifier; they differ in roots. */
function nitroLike(platform: 'nitro' | 'simulated'): PlatformHandler {
  return {
    usage:
      platform === 'nitro'
        ? '--platform nitro [--root <pem|der>] [--key-config <file>]   (default root: the bundled AWS Nitro Enclaves Root G1)'
        : '--platform simulated --root <pem|der> (the root the simulated server wrote; or a --policy pinning its rootSha256)',
    async verify(ctx) {
      const roots = await readRoots(ctx.values.root);
      const section = ctx.policy === undefined ? undefined : ctx.policy.platforms[platform];
      if (ctx.policy !== undefined && section === undefined) {
        throw new CloisterError('POLICY_MISMATCH', `the policy has no ${platform} section`);
      }
      const rootSha256 = platform === 'simulated' ? ctx.policy?.platforms.simulated?.rootSha256 : undefined;
      if (ctx.values['report-data'] !== undefined) throw new UsageError(`--report-data applies to sev-snp and tdx; for ${platform} give --key-config <file> (and --nonce)`);
      const keyConfigPath = ctx.values['key-config'];
      if (keyConfigPath !== undefined && ctx.file !== undefined) {
        throw new CloisterError('INVALID_ARGUMENT', '--key-config does not apply to an evidence file: it carries the key config the evidence binds');
      }
      let given: { bytes: Uint8Array; keyConfig: KeyConfig } | undefined;
      if (keyConfigPath !== undefined) {
        const bytes = await readFileLimited(keyConfigPath, MAX_AUX_FILE_BYTES, 'key config file');
        given = { bytes, keyConfig: decodeKeyConfig(bytes) };
      }
      const bound = ctx.file === undefined ? given : { bytes: ctx.file.keyConfigBytes, keyConfig: ctx.file.keyConfig };
      if (platform === 'simulated' && roots === undefined && rootSha256 === undefined) {
        throw new UsageError('--platform simulated requires --root <pem> (or a --policy that pins rootSha256): simulated evidence is trusted only explicitly');
      }
      const options: VerifyNitroOptions = {
        platform,
        at: ctx.at,
        ...(roots === undefined ? {} : { trustedRoots: roots }),
        ...(rootSha256 === undefined ? {} : { rootSha256 }),
        ...(section === undefined ? {} : { pcrs: section.pcrs }),
        ...(section?.maxAgeSeconds === undefined ? {} : { maxAgeMs: section.maxAgeSeconds * 1000 }),
        ...(bound !== undefined
          ? { binding: nitroBindingFor(bound.bytes, bound.keyConfig.hpkePublicKey, ctx.nonce) }
          : ctx.nonce === undefined
            ? {}
            : { binding: { nonce: ctx.nonce } }),
      };
      return verifyNitroDocument(ctx.evidence, options);
    },
  };
}

// ---- Platforms: add 'sev-snp' and 'tdx' here (with their options in OPTIONS). -------------
const PLATFORMS: Readonly<Record<string, PlatformHandler>> = {
  nitro: nitroLike('nitro'),
  simulated: nitroLike('simulated'),
  'sev-snp': sevSnpHandler,
  tdx: tdxHandler,
};

function usage(): string {
  return [
    'usage: cloister verify <file> --platform <platform> [options]',
    '',
    '<file> is raw evidence, or an evidence file written by `cloister attest --out` (its',
    'platform, key config, nonce and SNP certificates / TDX collateral come from the file;',
    '--platform, when given, must name the same platform).',
    '',
    'platforms:',
    ...Object.entries(PLATFORMS).map(([, h]) => `  ${h.usage}`),
    `  ${GPU_USAGE}`,
    '',
    'options:',
    '  --at <ISO time>     verify as of this instant (default: now)',
    '  --policy <json>     client policy file: PCRs / measurements must match (simulated with --root and',
    '                      no --policy: the policy.json that cloister serve wrote next to the root)',
    '  --nonce <hex>       the evidence must carry exactly this nonce (an evidence file: the nonce saved in it)',
    '  --key-config <file> the key config the evidence must bind (raw evidence; an evidence file carries its own)',
    '  --inspect           inspection only: print what was checked and what was NOT (policy, binding);',
    '                      exit 0 when every check that ran passed. Without it, evidence is VERIFIED',
    '                      only with --policy and a key-config binding, else VERIFICATION_INCOMPLETE (exit 1)',
    '  --json              print the full report as JSON',
    '',
    'exit status: 0 verified (or, with --inspect, every check that ran passed), 1 a verification step failed',
    '             or the policy or binding was not checked, 2 usage error',
  ].join('\n');
}

function keyConfigToJson(kc: KeyConfig): Record<string, unknown> {
  return {
    keyId: kc.keyId,
    platform: kc.platform,
    notBefore: new Date(kc.notBefore * 1000).toISOString(),
    expiresAt: new Date(kc.expiresAt * 1000).toISOString(),
    kemId: kc.kemId,
    kdfId: kc.kdfId,
    aeadIds: [...kc.aeadIds],
    hpkePublicKey: toHex(kc.hpkePublicKey),
    receiptPublicKey: toHex(kc.receiptPublicKey),
    configDigest: toHex(kc.configDigest),
    models: kc.models.map((m) => ({ name: m.name, task: m.task, digest: toHex(m.digest) })),
    ...(kc.engine === undefined ? {} : { engine: { ...kc.engine } }),
  };
}

function printKeyConfig(kc: KeyConfig, io: CliIo): void {
  const hex4 = (n: number): string => `0x${n.toString(16).padStart(4, '0')}`;
  io.out('key config (bound by the evidence above)');
  io.out(`  key id      ${kc.keyId}   platform ${kc.platform}`);
  io.out(`  valid       ${new Date(kc.notBefore * 1000).toISOString()} .. ${new Date(kc.expiresAt * 1000).toISOString()}`);
  io.out(`  hpke        kem ${hex4(kc.kemId)} kdf ${hex4(kc.kdfId)} aead ${kc.aeadIds.map(hex4).join(',')}  key ${toHex(kc.hpkePublicKey)}`);
  io.out(`  receipt key ${toHex(kc.receiptPublicKey)}${kc.replicaReceipts === true ? '  (a fleet key config: each replica signs receipts with its own key, named in its statement; this one signs nothing)' : ''}`);
  io.out(`  config      ${toHex(kc.configDigest)}`);
  if (kc.engine !== undefined) io.out(`  engine      ${kc.engine.kind} ${kc.engine.model}${kc.engine.imageDigest === undefined ? '' : ` image ${kc.engine.imageDigest}`}`);
  for (const m of kc.models) io.out(`  model       ${m.name} (${m.task}) sha256 ${toHex(m.digest)}`);
}

/** What `cloister verify` did not check, and how the result is labelled. */
interface Outcome {
  /** "policy: ..." / "binding: ..." lines; empty when both were checked. */
  readonly notChecked: readonly string[];
  readonly inspect: boolean;
}

/** VERIFIED only when every step passed and nothing was left unchecked. */
function verifiedOf(report: VerificationReport, outcome: Outcome): boolean {
  return report.ok && outcome.notChecked.length === 0;
}

function reportToJson(report: VerificationReport, outcome: Outcome, kc?: KeyConfig): unknown {
  const claims = report.claims;
  return {
    ok: verifiedOf(report, outcome),
    verified: verifiedOf(report, outcome),
    checksPassed: report.ok,
    inspect: outcome.inspect,
    notChecked: outcome.notChecked,
    platform: report.platform,
    simulated: report.simulated,
    steps: report.steps,
    ...(claims === undefined
      ? {}
      : {
          claims: {
            measurements: claims.measurements,
            ...(claims.timestamp === undefined ? {} : { timestamp: claims.timestamp.toISOString() }),
            details: claims.details,
          },
        }),
    ...(kc === undefined ? {} : { keyConfig: keyConfigToJson(kc) }),
  };
}

function printHuman(report: VerificationReport, outcome: Outcome, io: CliIo): void {
  const claims = report.claims;
  const label = !report.ok
    ? 'NOT VERIFIED'
    : verifiedOf(report, outcome)
      ? 'VERIFIED'
      : outcome.inspect
        ? 'INSPECTED (not verified: see NOT checked)'
        : 'NOT VERIFIED (incomplete: see NOT checked)';
  io.out(`${label}  platform ${report.platform}${report.simulated ? ' (SIMULATED: no hardware behind this evidence)' : ''}`);
  for (const s of report.steps) io.out(`  ${s.ok ? 'ok  ' : 'FAIL'} ${s.step.padEnd(18)}${s.code === undefined ? '' : ` ${s.code}`}${s.detail === undefined ? '' : `  ${s.detail}`}`);
  for (const n of outcome.notChecked) io.out(`  NOT checked  ${n}`);
  if (claims === undefined) return;
  const d = claims.details;
  const str = (v: unknown): string => (v === null || v === undefined ? '(none)' : String(v));
  if (d['moduleId'] !== undefined) io.out(`module id   ${str(d['moduleId'])}`);
  if (claims.timestamp !== undefined) io.out(`timestamp   ${claims.timestamp.toISOString()}`);
  for (const [name, value] of Object.entries(claims.measurements)) io.out(`${name.padEnd(11)} ${value}`);
  if ('publicKey' in d) io.out(`public key  ${str(d['publicKey'])}`);
  if ('userData' in d) io.out(`user data   ${str(d['userData'])}`);
  if ('nonce' in d) io.out(`nonce       ${str(d['nonce'])}`);
  for (const [k, v] of Object.entries(d)) {
    if (!['moduleId', 'publicKey', 'userData', 'nonce'].includes(k)) io.out(`${k.padEnd(11)} ${typeof v === 'string' ? v : JSON.stringify(v)}`);
  }
}

function parseAt(text: string | undefined): Date {
  try {
    return parseAtOption(text) ?? new Date();
  } catch (err) {
    // This command's own usage error (exit 2 with its usage text).
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
}

/**
 * Simulated evidence only: with `--root` and no `--policy`, the development policy that
 * `cloister serve` wrote next to that root (`<state dir>/policy.json`) is the policy, and
 * the output says so. Both files come from the developer's own server; real platforms always
 * need an explicit --policy (or --inspect).
 */
async function developmentPolicyNextTo(platform: string | undefined, roots: readonly string[] | undefined, io: CliIo): Promise<string | undefined> {
  const root = roots?.length === 1 ? roots[0] : undefined;
  if (platform !== 'simulated' || root === undefined) return undefined;
  const candidate = join(dirname(root), 'policy.json');
  try {
    if (!(await stat(candidate)).isFile()) return undefined;
  } catch {
    return undefined;
  }
  io.err(`cloister verify: policy ${candidate} (the development policy cloister serve wrote next to --root; --policy chooses another)`);
  return candidate;
}

export async function run(argv: string[], io: CliIo = defaultIo): Promise<number> {
  let values: ParsedValues;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true }));
  } catch (err) {
    io.err(`cloister verify: ${err instanceof Error ? err.message : String(err)}\n\n${usage()}`);
    return 2;
  }
  if (values.help === true) {
    io.out(usage());
    return 0;
  }
  const json = values.json === true;
  try {
    if (positionals.length !== 1) throw new UsageError('expected exactly one evidence file');
    if (values.platform !== undefined && values.platform !== GPU_PLATFORM && PLATFORMS[values.platform] === undefined) {
      throw new UsageError(`unsupported platform '${values.platform}' (supported: ${[...Object.keys(PLATFORMS), GPU_PLATFORM].join(', ')})`);
    }
    const at = parseAt(values.at);
    const givenNonce = values.nonce === undefined ? undefined : fromHex(values.nonce.toLowerCase(), undefined, '--nonce', 'INVALID_ARGUMENT');
    const policyPath = values.policy ?? (values.inspect === true ? undefined : await developmentPolicyNextTo(values.platform, values.root, io));
    const policy =
      policyPath === undefined ? undefined : parsePolicy(await readFileLimited(policyPath, MAX_AUX_FILE_BYTES, 'policy file'), { source: policyPath });
    for (const w of policy === undefined ? [] : policyWarnings(policy)) io.err(`cloister verify: ${w}`);
    const file = positionals[0] ?? '';
    let raw: Uint8Array;
    try {
      raw = await readFileLimited(file, MAX_EVIDENCE_FILE_BYTES, 'evidence file');
    } catch (err) {
      // Without --platform only an evidence file can say what it is: a usage error first.
      if (values.platform === undefined && err instanceof CloisterError && err.code === 'NOT_FOUND') {
        throw new UsageError(`--platform is required, unless FILE is an evidence file from \`cloister attest --out\` (${err.message})`);
      }
      throw err;
    }
    if (values.platform === GPU_PLATFORM) {
      return await verifyGpuReportFile({
        report: raw,
        chainPath: values.chain,
        rimPaths: values.rim,
        nonce: givenNonce,
        policy,
        at,
        inspect: values.inspect === true,
        json,
        out: (t) => io.out(t),
        err: (t) => io.err(t),
      });
    }
    if (values.chain !== undefined || values.rim !== undefined) throw new UsageError('--chain and --rim apply to --platform nvidia-gpu');
    const saved: EvidenceFile | undefined = looksLikeEvidenceFile(raw) ? decodeEvidenceFile(raw) : undefined;
    if (saved === undefined && values.platform === undefined) throw new UsageError('--platform is required for raw evidence');
    const platformName = values.platform ?? saved?.bundle.platform ?? '';
    if (saved !== undefined && saved.bundle.platform !== platformName) {
      throw new CloisterError('POLICY_MISMATCH', `${file} holds ${saved.bundle.platform} evidence, but --platform is ${platformName}`);
    }
    const handler = PLATFORMS[platformName];
    if (handler === undefined) throw new UsageError(`unsupported platform '${platformName}'`);
    if (saved?.nonce !== undefined && givenNonce !== undefined && !timingSafeEqualBytes(saved.nonce, givenNonce)) {
      throw new CloisterError('BINDING_MISMATCH', `${file} was saved with nonce ${toHex(saved.nonce)}, not the --nonce given`);
    }
    const nonce = givenNonce ?? saved?.nonce;
    let fileCtx: VerifyContext['file'];
    if (saved !== undefined) {
      const b = saved.bundle;
      let keyConfig: KeyConfig;
      try {
        keyConfig = decodeKeyConfig(b.keyConfig);
      } catch (cause) {
        throw new CloisterError('EVIDENCE_MALFORMED', `${file}: the key config does not decode: ${cause instanceof Error ? cause.message : 'unknown'}`, { cause });
      }
      fileCtx = {
        keyConfigBytes: b.keyConfig,
        keyConfig,
        ...(b.certificates === undefined ? {} : { certificates: b.certificates }),
        ...(b.collateral === undefined ? {} : { collateral: b.collateral }),
      };
    }
    const evidence = saved === undefined ? raw : saved.bundle.evidence;
    const notChecked: string[] = [];
    if (policy === undefined) notChecked.push('policy: no --policy given; measurements are printed, not compared');
    const keyConfigBound = fileCtx !== undefined || values['key-config'] !== undefined || (values['report-data'] !== undefined && (platformName === 'sev-snp' || platformName === 'tdx'));
    if (!keyConfigBound) {
      notChecked.push(
        `binding: no key config was bound${nonce === undefined ? '' : ' (only the nonce was compared)'}; give an evidence file from \`cloister attest --out\`, or --key-config <file>`,
      );
    }
    const outcome: Outcome = { notChecked, inspect: values.inspect === true };

    let report = await handler.verify({ evidence, at, policy, nonce, values, ...(fileCtx === undefined ? {} : { file: fileCtx }) });
    if (fileCtx !== undefined && report.ok) {
      // The evidence binds this key config: its own claims (platform, validity at --at, pinned models) must hold too.
      const kc = fileCtx.keyConfig;
      const problem = checkKeyConfigClaims(kc, report.platform, at, policy);
      const step = problem === null
        ? { step: 'key-config', ok: true, detail: `key ${kc.keyId} valid until ${new Date(kc.expiresAt * 1000).toISOString()}` }
        : { step: 'key-config', ok: false, code: problem.code, detail: problem.message };
      report = { ...report, ok: problem === null, steps: [...report.steps, step] };
    }
    if (json) io.out(JSON.stringify(reportToJson(report, outcome, fileCtx?.keyConfig), null, 2));
    else {
      printHuman(report, outcome, io);
      if (fileCtx !== undefined && report.claims !== undefined) printKeyConfig(fileCtx.keyConfig, io);
    }
    if (!report.ok) {
      const failed = report.steps.find((s) => !s.ok);
      io.err(`cloister verify: ${failed?.code ?? 'INTERNAL'} at step ${failed?.step ?? '?'}: ${failed?.detail ?? ''}`);
      return 1;
    }
    if (notChecked.length > 0) {
      if (outcome.inspect) {
        io.err(`cloister verify: inspection only: every check that ran passed; NOT checked: ${notChecked.join('; ')}`);
        return 0;
      }
      io.err(
        `cloister verify: VERIFICATION_INCOMPLETE: every check that ran passed, but NOT checked: ${notChecked.join('; ')}. ` +
          'The evidence is not verified for use; pass --inspect to only inspect it',
      );
      return 1;
    }
    return 0;
  } catch (err) {
    if (err instanceof UsageError || err instanceof GpuUsageError) {
      io.err(`cloister verify: ${err.message}\n\n${usage()}`);
      return 2;
    }
    const code = err instanceof CloisterError && isErrorCode(err.code) ? err.code : 'INTERNAL';
    const message = err instanceof Error ? err.message : String(err);
    if (json) io.out(JSON.stringify({ ok: false, code, message }, null, 2));
    io.err(`cloister verify: ${code}: ${message}`);
    return 1;
  }
}
