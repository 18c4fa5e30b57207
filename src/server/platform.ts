/**
 * Chooses the attester for `cloister serve --platform`, through the shared start-up
 * detection of src/attester/tsm (`detectPlatform`, `createTeeAttester`) and the
 * `NitroAttester`; this module adds only the policy of what to do with the result:
 *
 * - `auto`: the TEE that detection finds is used. With none, the SIMULATED platform
 *   (`fellBack`: the caller prints a loud warning). A detection warning (configfs-tsm present
 *   but unprobeable: permissions, no provider) with no TEE found is PLATFORM_UNAVAILABLE, never
 *   a silent downgrade: a confidential VM must not end up serving simulated evidence because
 *   of a permission problem. `--platform simulated` says so explicitly when that is wanted.
 * - `simulated`: nothing is probed.
 * - `nitro`, `sev-snp`, `tdx`: detection must find exactly that platform, else
 *   PLATFORM_UNAVAILABLE naming what it found (fail closed).
 *
 * On the simulated platform the measurements are real inputs: PCR0 the server code digest
 * (./code-digest.ts), PCR1 the effective config digest, PCR2 the served model digests.
 */
import { CloisterError } from '../errors.js';
import { PLATFORMS } from '../core/types.js';
import type { Attester, Platform } from '../core/types.js';
import type { GuardPolicy } from '../guard/policy.js';
import type { SimulatedMeasurementInputs } from '../attester/simulated/index.js';
import { createTeeAttester, detectPlatform } from '../attester/tsm/detect.js';
import type { CreateTeeAttesterOptions, DetectedPlatform, DetectPlatformOptions } from '../attester/tsm/detect.js';
import type { NsmTransport } from '../attester/nsm/device.js';
import type { Engine } from '../inference/types.js';
import { codeDigest } from './code-digest.js';
import type { CodeDigestOptions } from './code-digest.js';
import type { ServerLimits } from './options.js';
import { serverConfigDigest } from './server.js';

export type PlatformChoice = Platform | 'auto';
const PLATFORM_CHOICES: readonly PlatformChoice[] = ['auto', ...PLATFORMS];

export function isPlatformChoice(value: string): value is PlatformChoice {
  return (PLATFORM_CHOICES as readonly string[]).includes(value);
}

interface PlatformSelection {
  readonly choice: PlatformChoice;
  readonly platform: Platform;
  /** What detection found; absent for an explicit 'simulated' (nothing was probed). */
  readonly detected?: DetectedPlatform;
  /** True when `auto` found no TEE and fell back to simulated. */
  readonly fellBack: boolean;
  /** Detection's warning, for the caller to print (only ever set alongside a real TEE). */
  readonly warning?: string;
}

export interface PlatformOptions {
  /** Where to look (tests point these at fake trees). Default: the real /sys and /dev. */
  readonly detect?: DetectPlatformOptions;
  readonly tee?: CreateTeeAttesterOptions;
  /** Opens the NSM (tests). Default: `openNsmDevice` on the detected device path. */
  readonly openNsm?: (path: string | undefined) => NsmTransport | Promise<NsmTransport>;
  /**
   * Simulated only: keep the root in this directory across runs (simulated-root.pem and
   * simulated-root.key), so development policies survive a restart. Default: a fresh root.
   */
  readonly simulatedStateDir?: string;
}

function describeDetected(d: DetectedPlatform): string {
  if (d.simulated) return 'no TEE';
  return `${d.platform} (${d.source}${d.path === undefined ? '' : ` at ${d.path}`})`;
}

/** Decides the platform, before any attester exists (the config digest names it). */
export async function selectPlatform(choice: PlatformChoice, options: PlatformOptions = {}): Promise<PlatformSelection> {
  if (!isPlatformChoice(choice)) throw new CloisterError('INVALID_ARGUMENT', '--platform must be auto, simulated, nitro, sev-snp or tdx');
  if (choice === 'simulated') return { choice, platform: 'simulated', fellBack: false };
  const detected = await detectPlatform(options.detect);
  const warning = detected.warning === undefined ? {} : { warning: detected.warning };
  if (choice === 'auto') {
    if (!detected.simulated) return { choice, platform: detected.platform, detected, fellBack: false, ...warning };
    if (detected.warning !== undefined) {
      throw new CloisterError(
        'PLATFORM_UNAVAILABLE',
        `${detected.warning}; refusing to fall back to the SIMULATED platform. Fix the TEE interface, or pass --platform simulated to run simulated on purpose`,
        { detail: { requested: choice } },
      );
    }
    return { choice, platform: 'simulated', detected, fellBack: true };
  }
  if (detected.simulated || detected.platform !== choice) {
    const extra = detected.warning === undefined ? '' : ` (${detected.warning})`;
    throw new CloisterError('PLATFORM_UNAVAILABLE', `--platform ${choice} was requested, but this machine offers ${describeDetected(detected)}${extra}`, {
      detail: { requested: choice, found: detected.platform },
    });
  }
  return { choice, platform: detected.platform, detected, fellBack: false, ...warning };
}

interface PlatformAttester {
  readonly attester: Attester;
  readonly selection: PlatformSelection;
  /** Present for the simulated platform: the run's root and the policy section matching it. */
  readonly simulated?: {
    readonly rootPem: string;
    readonly rootSha256Hex: string;
    readonly pcrs: Readonly<Record<string, string>>;
  };
}

/** The attester for a selection. Simulated: measured from `measurements`. */
export async function createPlatformAttester(
  selection: PlatformSelection,
  measurements: SimulatedMeasurementInputs,
  options: PlatformOptions = {},
): Promise<PlatformAttester> {
  switch (selection.platform) {
    case 'simulated': {
      const { createSimulatedAttester } = await import('../attester/simulated/index.js');
      const { loadSimulatedRoot } = await import('../attester/simulated/root-store.js');
      const dir = options.simulatedStateDir;
      const root = dir === undefined ? undefined : await loadSimulatedRoot(dir);
      const sim = await createSimulatedAttester({ measurements, ...(root === undefined ? {} : { root }) });
      if (dir !== undefined && root === undefined) await sim.storeRoot(dir);
      const section = sim.policySection();
      return { attester: sim, selection, simulated: { rootPem: sim.rootPem, rootSha256Hex: sim.rootSha256Hex, pcrs: section.pcrs } };
    }
    case 'nitro': {
      const { NitroAttester } = await import('../attester/nsm/attester.js');
      const path = selection.detected?.path;
      const open =
        options.openNsm ??
        (async (p: string | undefined): Promise<NsmTransport> => {
          const { openNsmDevice } = await import('../attester/nsm/device.js');
          return openNsmDevice(p === undefined ? {} : { path: p });
        });
      return { attester: new NitroAttester({ transport: await open(path) }), selection };
    }
    case 'sev-snp':
    case 'tdx': {
      const detected = selection.detected;
      if (detected === undefined || detected.platform !== selection.platform) {
        throw new CloisterError('PLATFORM_UNAVAILABLE', `no detected ${selection.platform} interface to attest with`);
      }
      const attester = createTeeAttester(detected, options.tee);
      if (attester?.platform !== selection.platform) {
        throw new CloisterError('PLATFORM_UNAVAILABLE', `no ${selection.platform} attester for ${describeDetected(detected)}`);
      }
      return { attester, selection };
    }
  }
}

interface ServePlatformInput {
  /** From `selectPlatform`, taken before the engines start so a missing TEE fails fast. */
  readonly selection: PlatformSelection;
  /** Started engines: their models are measured (simulated PCR2) and configured. */
  readonly engines: readonly Engine[];
  readonly keyRotationIntervalMs?: number;
  readonly limits?: Partial<ServerLimits>;
  /** CloisterServerOptions.padResponses (measured into the config digest when false). */
  readonly padResponses?: boolean;
  /** CloisterServerOptions.guardPolicy (measured into the config digest when not redact). */
  readonly guardPolicy?: GuardPolicy;
  /** CloisterServerOptions.guardTagger (measured into the config digest when set). */
  readonly guardTagger?: string;
  /** Where the code digest is taken (simulated PCR0). Default: this package. */
  readonly code?: CodeDigestOptions;
  readonly options?: PlatformOptions;
}

/**
 * `cloister serve`'s attester step after `selectPlatform`: (simulated only) measure code,
 * config and models, then create the attester.
 */
export async function preparePlatform(input: ServePlatformInput): Promise<PlatformAttester> {
  const { selection } = input;
  if (selection.platform !== 'simulated') return createPlatformAttester(selection, {}, input.options);
  const configDigest = serverConfigDigest({
    engines: input.engines,
    platform: selection.platform,
    ...(input.limits === undefined ? {} : { limits: input.limits }),
    ...(input.keyRotationIntervalMs === undefined ? {} : { keyRotationIntervalMs: input.keyRotationIntervalMs }),
    ...(input.padResponses === false ? { padResponses: false } : {}),
    ...(input.guardPolicy === undefined ? {} : { guardPolicy: input.guardPolicy }),
    ...(input.guardTagger === undefined ? {} : { guardTagger: input.guardTagger }),
  });
  const models = input.engines.flatMap((e) => [...e.models()]).sort((a, b) => (a.name < b.name ? -1 : 1));
  return createPlatformAttester(
    selection,
    { codeDigest: await codeDigest(input.code), configDigest, modelDigests: models.map((m) => m.digest) },
    input.options,
  );
}
