/** The Cloister server: transports, keys, evidence, limits, routing. */
export { CloisterServer, serverConfigDigest, DEFAULT_KEY_ROTATION_INTERVAL_MS, DEFAULT_KEY_GRACE_MS } from './server.js';
export type { CloisterServerOptions, ListenTarget, ServerAddress } from './server.js';
export { DEFAULT_LIMITS, resolveLimits } from './options.js';
export type { ServerLimits } from './options.js';
export { createLogger, silentLogger, newServerRequestId, LOG_EVENTS } from './log.js';
export type { Logger, LogEvent, LogFields, LogLevel, LogSink, ServerRequestId } from './log.js';
export { KeyManager } from './keys.js';
export type { KeyGeneration, KeyManagerOptions } from './keys.js';
export { ReplayWindow } from './replay.js';
export type { ReplayWindowOptions } from './replay.js';
export { EngineRouter } from './router.js';
export { ServerStats } from './stats.js';
export { createPlatformAttester, isPlatformChoice, preparePlatform, selectPlatform, PLATFORM_CHOICES } from './platform.js';
export type { PlatformAttester, PlatformChoice, PlatformOptions, PlatformSelection, ServePlatformInput } from './platform.js';
export { codeDigest, defaultPackageRoot, CODE_DIGEST_LABEL, DEFAULT_MAX_CODE_FILES } from './code-digest.js';
export type { CodeDigestOptions } from './code-digest.js';
export { ClientKeyTable, clientKeyLine, DEFAULT_CLIENT_KEY_REQUESTS_PER_MINUTE, MAX_CLIENT_KEYS } from './client-keys.js';
