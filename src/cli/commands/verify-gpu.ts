/**
 * `cloister verify <report> --platform nvidia-gpu --chain <pem> --rim <xml> --rim <xml>
 *  [--nonce <hex>] [--policy <json>] [--at <time>] [--inspect] [--json]`
 *
 * Verifies one NVIDIA GPU attestation report (SPDM, raw or hex, as nvtrust and NVML store it)
 * offline with src/verifier/nvidia: the device chain, the report signature, the nonce, the
 * driver and VBIOS RIMs (the two --rim files, in any order: each is routed by its version
 * notation, and a wrong routing only makes the version step fail) and the measurements, then
 * prints every step and the measurements. Any failed step exits 1 naming it.
 *
 * Verified (exit 0) means every step passed with a --nonce (freshness) and a --policy
 * "gpus" section (allowed versions); without them the result is VERIFICATION_INCOMPLETE
 * (exit 1) unless --inspect. The GPU's CC mode and DevTools state are not part of the signed
 * report: they are checked only where a key config bound by CPU evidence carries them
 * (connect, infer, gateway); the output says so.
 */
import { CloisterError } from '../../errors.js';
import type { Policy } from '../../verifier/policy.js';
import { verifyNvidiaGpuEvidence } from '../../verifier/nvidia/verify.js';
import type { NvidiaGpuReport } from '../../verifier/nvidia/verify.js';
import { DEFAULT_MAX_RIM_BYTES } from '../../verifier/nvidia/rim.js';
import { readFileLimited } from './read-file.js';

const MAX_CHAIN_FILE_BYTES = 64 * 1024;

export interface GpuVerifyArgs {
  readonly report: Uint8Array;
  readonly chainPath: string | undefined;
  readonly rimPaths: readonly string[] | undefined;
  readonly nonce: Uint8Array | undefined;
  readonly policy: Policy | undefined;
  readonly at: Date;
  readonly inspect: boolean;
  readonly json: boolean;
  out(text: string): void;
  err(text: string): void;
}

/** A usage problem: the caller maps it to exit status 2. */
export class GpuUsageError extends Error {}

/** "96.00.5e.00.01"-style colloquialVersion: a VBIOS RIM; anything else: a driver RIM. */
function isVbiosRim(bytes: Uint8Array): boolean {
  const m = /colloquialVersion="([^"]{1,64})"/.exec(Buffer.from(bytes).toString('latin1'));
  return m !== null && /^[0-9a-fA-F]{2}(\.[0-9a-fA-F]{2}){4}$/.test(m[1] ?? '');
}

export async function verifyGpuReportFile(a: GpuVerifyArgs): Promise<number> {
  if (a.chainPath === undefined) throw new GpuUsageError('--platform nvidia-gpu needs --chain <pem> (the GPU attestation certificate chain, leaf first)');
  const rimPaths = a.rimPaths ?? [];
  if (rimPaths.length !== 2) throw new GpuUsageError(`--platform nvidia-gpu needs two --rim files (driver RIM and VBIOS RIM), got ${rimPaths.length}`);
  const chain = await readFileLimited(a.chainPath, MAX_CHAIN_FILE_BYTES, 'certificate chain file');
  const rims = await Promise.all(rimPaths.map((p) => readFileLimited(p, DEFAULT_MAX_RIM_BYTES, 'RIM file')));
  const vbios = rims.filter(isVbiosRim);
  const driver = rims.filter((r) => !isVbiosRim(r));
  const [driverRim] = driver;
  const [vbiosRim] = vbios;
  if (driverRim === undefined || vbiosRim === undefined) {
    throw new CloisterError('INVALID_ARGUMENT', `the two --rim files must be one driver RIM and one VBIOS RIM; got ${driver.length} driver and ${vbios.length} VBIOS`);
  }
  const report = verifyNvidiaGpuEvidence(
    { report: a.report, certChain: chain },
    {
      driverRim,
      vbiosRim,
      at: a.at,
      policy: a.policy?.gpus ?? 'none',
      ...(a.nonce === undefined ? { skipNonce: true } : { nonce: a.nonce }),
    },
  );
  const notChecked: string[] = [];
  if (a.nonce === undefined) notChecked.push('nonce: no --nonce given; the report may be replayed');
  if (a.policy?.gpus === undefined) notChecked.push('policy: no --policy with a "gpus" section; driver and VBIOS versions are not restricted');
  const verified = report.ok && notChecked.length === 0;
  if (a.json) {
    a.out(JSON.stringify({ ...report, ok: verified, verified, checksPassed: report.ok, inspect: a.inspect, notChecked }, null, 2));
  } else {
    printHuman(report, notChecked, a);
  }
  if (!report.ok) {
    const failed = report.steps.find((s) => !s.ok);
    a.err(`cloister verify: ${failed?.code ?? 'INTERNAL'} at step ${failed?.step ?? '?'}: ${failed?.detail ?? ''}`);
    return 1;
  }
  if (notChecked.length > 0) {
    if (a.inspect) {
      a.err(`cloister verify: inspection only: every check that ran passed; NOT checked: ${notChecked.join('; ')}`);
      return 0;
    }
    a.err(`cloister verify: VERIFICATION_INCOMPLETE: every check that ran passed, but NOT checked: ${notChecked.join('; ')}. Pass --inspect to only inspect it`);
    return 1;
  }
  return 0;
}

function printHuman(report: NvidiaGpuReport, notChecked: readonly string[], a: GpuVerifyArgs): void {
  const label = !report.ok ? 'NOT VERIFIED' : notChecked.length === 0 ? 'VERIFIED' : a.inspect ? 'INSPECTED (not verified: see NOT checked)' : 'NOT VERIFIED (incomplete: see NOT checked)';
  a.out(`${label}  platform nvidia-gpu`);
  for (const s of report.steps) a.out(`  ${s.ok ? 'ok  ' : 'FAIL'} ${s.step.padEnd(18)}${s.code === undefined ? '' : ` ${s.code}`}${s.detail === undefined ? '' : `  ${s.detail}`}`);
  for (const n of notChecked) a.out(`  NOT checked  ${n}`);
  a.out('  note         CC mode and DevTools are not in the signed GPU report: connect/infer/gateway check them in the key config bound by CPU evidence');
  const c = report.claims;
  if (c === undefined) return;
  a.out(`driver      ${c.driverVersion}`);
  a.out(`vbios       ${c.vbiosVersion}`);
  a.out(`nonce       ${c.requestNonce}`);
  a.out(`nvdec0      ${c.nvdec0}`);
  if (c.project !== undefined) a.out(`project     ${c.project}${c.chipSku === undefined ? '' : `  chip sku ${c.chipSku}`}`);
  if (c.driverRim !== undefined) a.out(`driver RIM  ${c.driverRim.version}  sha256 ${c.driverRim.sha256}`);
  if (c.vbiosRim !== undefined) a.out(`vbios RIM   ${c.vbiosRim.version}  sha256 ${c.vbiosRim.sha256}`);
  for (const [index, value] of Object.entries(c.measurements)) a.out(`block ${index.padStart(2, '0')}    ${value}`);
}
