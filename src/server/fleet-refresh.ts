/**
 * Periodic fleet key re-fetch (`cloister serve --fleet-key NAME --fleet-refresh-minutes N`;
 * docs/KEYS.md "Fleet keys"): a replica asks the key broker for the fleet key again on a
 * schedule, with fresh evidence each time, so a rotation at the broker reaches running
 * replicas while the previous version stays usable until it expires (the overlap). A failed
 * re-fetch (broker down, refusal) is reported and the replica keeps serving what it has; the
 * keys it holds still expire on their own schedule.
 */
import { asCloisterError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { positiveInt } from '../core/validate.js';
import type { FleetKey } from './keys.js';

export const DEFAULT_FLEET_REFRESH_MS = 10 * 60_000;

export type FleetRefreshEvent =
  | { readonly type: 'fleet-refreshed'; readonly changed: boolean; readonly keyId: number }
  | { readonly type: 'fleet-refresh-failed'; readonly code: ErrorCode };

export interface FleetRefreshOptions {
  /** Time between the end of one re-fetch and the start of the next. Default 10 minutes. */
  readonly intervalMs?: number;
  /** One release from the broker (newest first). */
  readonly fetch: () => Promise<FleetKey[]>;
  /** Hands the release to the key manager; true when the current key changed. */
  readonly apply: (keys: FleetKey[]) => boolean;
  readonly onEvent?: (event: FleetRefreshEvent) => void;
}

export interface FleetRefresh {
  /** Re-fetch now (also what the timer runs); never throws, reports through onEvent. */
  refreshNow(): Promise<void>;
  /** Stops the schedule; a re-fetch in flight finishes but is not applied. */
  stop(): void;
}

export function startFleetRefresh(options: FleetRefreshOptions): FleetRefresh {
  const intervalMs = positiveInt('fleet refresh intervalMs', options.intervalMs, DEFAULT_FLEET_REFRESH_MS);
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  const emit = (e: FleetRefreshEvent): void => {
    try {
      options.onEvent?.(e);
    } catch {
      // Logging never breaks the schedule.
    }
  };
  const once = async (): Promise<void> => {
    try {
      const keys = await options.fetch();
      if (stopped) return;
      const changed = options.apply(keys);
      emit({ type: 'fleet-refreshed', changed, keyId: keys[0]?.keyId ?? -1 });
    } catch (err) {
      if (!stopped) emit({ type: 'fleet-refresh-failed', code: asCloisterError(err).code });
    }
  };
  const refreshNow = (): Promise<void> => (running ??= once().finally(() => (running = undefined)));
  const schedule = (): void => {
    if (stopped) return;
    // One at a time: the next re-fetch is scheduled when this one has finished.
    timer = setTimeout(() => void refreshNow().then(schedule), intervalMs);
    timer.unref();
  };
  schedule();
  return {
    refreshNow,
    stop(): void {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
    },
  };
}
