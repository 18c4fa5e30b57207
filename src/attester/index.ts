/** Attesters (run inside the TEE): the simulated platform and the configfs-tsm (SEV-SNP / TDX) ones. */
export { createSimulatedAttester } from './simulated/index.js';
export { detectPlatform, createTeeAttester } from './tsm/index.js';
