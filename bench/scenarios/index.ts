/** The scenarios, loaded lazily so that running one does not load the others' engines. */
import type { Scenario } from '../lib/scenario.js';

export const SCENARIOS: Readonly<Record<string, () => Promise<Scenario>>> = {
  crypto: async () => (await import('./crypto.js')).scenario,
  e2e: async () => (await import('./e2e.js')).scenario,
  stream: async () => (await import('./stream.js')).scenario,
  attest: async () => (await import('./attest.js')).scenario,
  batch: async () => (await import('./batch.js')).scenario,
  memory: async () => (await import('./memory.js')).scenario,
  generate: async () => (await import('./generate.js')).scenario,
  rag: async () => (await import('./rag.js')).scenario,
  injection: async () => (await import('./injection.js')).scenario,
  fleet: async () => (await import('./fleet.js')).scenario,
};

export const SCENARIO_NAMES: readonly string[] = Object.keys(SCENARIOS);
