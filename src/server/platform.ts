/**
 * Chooses the attester for `cloister serve --platform`. `auto` probes the TEE device nodes
 * and falls back to the SIMULATED platform (with a loud warning from the caller) when none
 * is present. Real platforms fail closed: asking for one that is not here is an error.
 */
import { existsSync } from 'node:fs';
import { CloisterError } from '../errors.js';
import type { Attester, Platform } from '../attestation/types.js';
import type { SimulatedMeasurementInputs } from '../attestation/simulated/index.js';

export type PlatformChoice = Platform | 'auto';

/** Device nodes that reveal each TEE (Linux). */
const PROBES: readonly { platform: Platform; paths: readonly string[] }[] = [
  { platform: 'nitro', paths: ['/dev/nsm'] },
  { platform: 'sev-snp', paths: ['/dev/sev-guest'] },
  { platform: 'tdx', paths: ['/dev/tdx_guest'] },
];

/** The TEE this machine offers, or undefined. Never touches vsock or the network. */
export function probePlatform(exists: (path: string) => boolean = existsSync): Platform | undefined {
  for (const p of PROBES) if (p.paths.some((path) => exists(path))) return p.platform;
  return undefined;
}

export interface PlatformAttester {
  readonly attester: Attester;
  /** Present for the simulated platform: the run's root and the policy section matching it. */
  readonly simulated?: {
    readonly rootPem: string;
    readonly rootSha256Hex: string;
    readonly pcrs: Readonly<Record<string, string>>;
  };
  /** True when `auto` found no TEE and fell back to simulated. */
  readonly fellBack: boolean;
}

export async function createPlatformAttester(choice: PlatformChoice, measurements: SimulatedMeasurementInputs): Promise<PlatformAttester> {
  const detected = choice === 'auto' ? probePlatform() : choice;
  const platform: Platform = detected ?? 'simulated';
  switch (platform) {
    case 'simulated': {
      const { createSimulatedAttester } = await import('../attestation/simulated/index.js');
      const sim = await createSimulatedAttester({ measurements });
      const section = sim.policySection();
      return {
        attester: sim,
        simulated: { rootPem: sim.rootPem, rootSha256Hex: sim.rootSha256Hex, pcrs: section.pcrs },
        fellBack: choice === 'auto',
      };
    }
    case 'nitro': {
      const { NitroAttester } = await import('../attestation/nitro/nsm/attester.js');
      const { openNsmDevice } = await import('../attestation/nitro/nsm/device.js');
      return { attester: new NitroAttester({ transport: openNsmDevice() }), fellBack: false };
    }
    case 'sev-snp':
    case 'tdx':
      throw new CloisterError('PLATFORM_UNAVAILABLE', `the ${platform} attester is not available in this build`);
  }
}
