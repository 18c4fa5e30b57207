/**
 * Start-up platform detection. Order: configfs-tsm (its provider names SEV-SNP or TDX),
 * /dev/sev-guest (SEV-SNP on older kernels), /dev/tdx_guest (TDX without configfs: detected
 * but not attestable here), /dev/nsm (Nitro). With none of them the result is the simulated
 * platform: the caller must log that loudly, since no hardware stands behind its evidence.
 */
import { join } from 'node:path';
import { CloisterError } from '../../errors.js';
import type { Attester, Platform } from '../../core/types.js';
import { ConfigfsTsm, DEFAULT_CONFIGFS_TSM_ROOT, NODE_TSM_FS, type ConfigfsTsmOptions, type TsmFileSystem } from './configfs.js';
import {
  SevSnpConfigfsAttester,
  SevSnpIoctlAttester,
  TdxConfigfsAttester,
  TSM_PROVIDER_SEV,
  TSM_PROVIDER_TDX,
  type TdxConfigfsAttesterOptions,
} from './attesters.js';
import { nativeSevGuestDevice, type SevGuestDevice } from './sev-guest.js';

type PlatformSource = 'configfs-tsm' | 'sev-guest' | 'tdx-guest' | 'nsm' | 'none';

export interface DetectedPlatform {
  readonly platform: Platform;
  readonly source: PlatformSource;
  /** True when the platform is the simulated fallback. */
  readonly simulated: boolean;
  /** configfs-tsm provider name, when that is the source. */
  readonly provider?: string;
  /** Device path or configfs root that was found. */
  readonly path?: string;
  /** Set when configfs-tsm exists but could not be probed (permissions, no provider). */
  readonly warning?: string;
}

export interface DetectPlatformOptions {
  readonly configfsRoot?: string;
  /** Directory holding sev-guest, tdx_guest and nsm. Default /dev. */
  readonly devDir?: string;
  readonly fs?: TsmFileSystem;
}

export async function detectPlatform(options: DetectPlatformOptions = {}): Promise<DetectedPlatform> {
  const fs = options.fs ?? NODE_TSM_FS;
  const root = options.configfsRoot ?? DEFAULT_CONFIGFS_TSM_ROOT;
  const dev = options.devDir ?? '/dev';
  let warning: string | undefined;
  if (await fs.exists(root)) {
    const tsm = new ConfigfsTsm({ root, fs, maxRetries: 0 });
    let provider: string | undefined;
    try {
      provider = await tsm.provider();
    } catch (err) {
      // The directory exists but no provider answered (or no permission): fall through, and
      // say so, so that a CVM never silently ends up on the simulated platform.
      provider = undefined;
      warning = `configfs-tsm at ${root} is present but could not be probed: ${err instanceof Error ? err.message : 'unknown error'}`;
    }
    if (provider === TSM_PROVIDER_SEV) return { platform: 'sev-snp', source: 'configfs-tsm', simulated: false, provider, path: root };
    if (provider === TSM_PROVIDER_TDX) return { platform: 'tdx', source: 'configfs-tsm', simulated: false, provider, path: root };
    if (provider !== undefined) {
      throw new CloisterError('PLATFORM_UNAVAILABLE', 'configfs-tsm has an unknown provider', { detail: { provider } });
    }
  }
  const w = warning === undefined ? {} : { warning };
  const sev = join(dev, 'sev-guest');
  if (await fs.exists(sev)) return { platform: 'sev-snp', source: 'sev-guest', simulated: false, path: sev, ...w };
  const tdx = join(dev, 'tdx_guest');
  if (await fs.exists(tdx)) return { platform: 'tdx', source: 'tdx-guest', simulated: false, path: tdx, ...w };
  const nsm = join(dev, 'nsm');
  if (await fs.exists(nsm)) return { platform: 'nitro', source: 'nsm', simulated: false, path: nsm, ...w };
  return { platform: 'simulated', source: 'none', simulated: true, ...w };
}

export interface CreateTeeAttesterOptions {
  readonly fs?: TsmFileSystem;
  /** Stand-in for /dev/sev-guest (tests); default: the native addon on the detected path. */
  readonly sevGuestDevice?: SevGuestDevice;
  /** VMPL for SNP_GET_EXT_REPORT. Default 0. */
  readonly vmpl?: number;
  readonly configfs?: Omit<ConfigfsTsmOptions, 'root' | 'fs'>;
  readonly tdx?: TdxConfigfsAttesterOptions;
}

/**
 * The SEV-SNP or TDX attester for a detected platform. Nitro and simulated attesters live in
 * their own modules: for those this returns undefined. TDX without configfs-tsm (only
 * /dev/tdx_guest) is not supported: PLATFORM_UNAVAILABLE.
 */
export function createTeeAttester(detected: DetectedPlatform, options: CreateTeeAttesterOptions = {}): Attester | undefined {
  const tsm = (): ConfigfsTsm =>
    new ConfigfsTsm({ ...options.configfs, ...(detected.path === undefined ? {} : { root: detected.path }), ...(options.fs === undefined ? {} : { fs: options.fs }) });
  switch (detected.source) {
    case 'configfs-tsm':
      return detected.platform === 'tdx' ? new TdxConfigfsAttester(tsm(), options.tdx) : new SevSnpConfigfsAttester(tsm());
    case 'sev-guest':
      return new SevSnpIoctlAttester(options.sevGuestDevice ?? nativeSevGuestDevice(detected.path), options.vmpl ?? 0);
    case 'tdx-guest':
      throw new CloisterError('PLATFORM_UNAVAILABLE', 'TDX attestation needs configfs-tsm (Linux 6.7+); only /dev/tdx_guest was found');
    default:
      return undefined;
  }
}
