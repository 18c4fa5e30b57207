/** Attesters for SEV-SNP and TDX guests (configfs-tsm, /dev/sev-guest) and platform detection. */
export { ConfigfsTsm, NODE_TSM_FS, DEFAULT_CONFIGFS_TSM_ROOT, TSM_INBLOB_BYTES } from './configfs.js';
export type { ConfigfsTsmOptions, TsmFileSystem, TsmReport } from './configfs.js';
export { nativeSevGuestDevice, DEFAULT_SEV_GUEST_PATH } from './sev-guest.js';
export type { SevGuestDevice } from './sev-guest.js';
export { SevSnpConfigfsAttester, SevSnpIoctlAttester, TdxConfigfsAttester, TSM_PROVIDER_SEV, TSM_PROVIDER_TDX } from './attesters.js';
export type { TdxConfigfsAttesterOptions } from './attesters.js';
export { detectPlatform, createTeeAttester } from './detect.js';
export type { CreateTeeAttesterOptions, DetectedPlatform, DetectPlatformOptions, PlatformSource } from './detect.js';
