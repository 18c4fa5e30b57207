/**
 * Start-up platform detection. Order: configfs-tsm (its provider names SEV-SNP or TDX),
 * /dev/sev-guest (SEV-SNP on older kernels), /dev/tdx_guest (TDX without configfs: detected
 * but not attestable here), /dev/nsm (Nitro). With none of them the result is the simulated
 * platform: the caller must log that loudly, since no hardware stands behind its evidence.
 */
import { join } from 'node:path';
import { CloisterError } from '../../errors.js';
import type { Platform } from '../types.js';
import { ConfigfsTsm, DEFAULT_CONFIGFS_TSM_ROOT, NODE_TSM_FS, type TsmFileSystem } from './configfs.js';
import { TSM_PROVIDER_SEV, TSM_PROVIDER_TDX } from './attesters.js';

export type PlatformSource = 'configfs-tsm' | 'sev-guest' | 'tdx-guest' | 'nsm' | 'none';

export interface DetectedPlatform {
  readonly platform: Platform;
  readonly source: PlatformSource;
  /** True when the platform is the simulated fallback. */
  readonly simulated: boolean;
  /** configfs-tsm provider name, when that is the source. */
  readonly provider?: string;
  /** Device path or configfs root that was found. */
  readonly path?: string;
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
  if (await fs.exists(root)) {
    const tsm = new ConfigfsTsm({ root, fs, maxRetries: 0 });
    let provider: string | undefined;
    try {
      provider = await tsm.provider();
    } catch {
      provider = undefined; // the directory exists but no provider registered: fall through
    }
    if (provider === TSM_PROVIDER_SEV) return { platform: 'sev-snp', source: 'configfs-tsm', simulated: false, provider, path: root };
    if (provider === TSM_PROVIDER_TDX) return { platform: 'tdx', source: 'configfs-tsm', simulated: false, provider, path: root };
    if (provider !== undefined) {
      throw new CloisterError('PLATFORM_UNAVAILABLE', 'configfs-tsm has an unknown provider', { detail: { provider } });
    }
  }
  const sev = join(dev, 'sev-guest');
  if (await fs.exists(sev)) return { platform: 'sev-snp', source: 'sev-guest', simulated: false, path: sev };
  const tdx = join(dev, 'tdx_guest');
  if (await fs.exists(tdx)) return { platform: 'tdx', source: 'tdx-guest', simulated: false, path: tdx };
  const nsm = join(dev, 'nsm');
  if (await fs.exists(nsm)) return { platform: 'nitro', source: 'nsm', simulated: false, path: nsm };
  return { platform: 'simulated', source: 'none', simulated: true };
}
