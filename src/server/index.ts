/** The Cloister server: transports, keys, evidence, limits, routing. */
export { CloisterServer } from './server.js';
export type { CloisterServerOptions } from './server.js';
export { DEFAULT_LIMITS } from './options.js';
export type { ServerLimits } from './options.js';
