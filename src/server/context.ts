/** What the transports share: one per running server. Internal. */
import type { EvidenceService } from './evidence.js';
import type { HandlerDeps } from './handler.js';
import type { KeyManager } from './keys.js';
import type { Logger } from './log.js';
import type { ServerLimits } from './options.js';
import type { SourceTable } from './sources.js';
import type { ServerStats } from './stats.js';

export interface ServerContext {
  readonly limits: ServerLimits;
  readonly keys: KeyManager;
  readonly evidence: EvidenceService;
  /** Per-source accounting (connections, uploads, evidence). */
  readonly sources: SourceTable;
  readonly logger: Logger;
  readonly stats: ServerStats;
  readonly handlerDeps: HandlerDeps;
  /** Set once the server drains (`CloisterServer.shutdown`): new sealed requests are refused OVERLOADED. */
  readonly state: { draining: boolean };
}
