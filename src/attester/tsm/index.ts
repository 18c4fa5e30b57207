/** Attesters for SEV-SNP and TDX guests (configfs-tsm, /dev/sev-guest) and platform detection. */
export { ConfigfsTsm } from './configfs.js';
export { nativeSevGuestDevice } from './sev-guest.js';
export type { SevGuestDevice } from './sev-guest.js';
export { SevSnpConfigfsAttester, SevSnpIoctlAttester, TdxConfigfsAttester } from './attesters.js';
export { detectPlatform, createTeeAttester } from './detect.js';
