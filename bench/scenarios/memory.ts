/** bench:memory - placeholder until the modules it measures land. */
import { ResultBuilder } from '../lib/scenario.js';
import type { Scenario, ScenarioResult } from '../lib/scenario.js';

export const scenario: Scenario = {
  name: 'memory',
  title: 'memory',
  async run(): Promise<ScenarioResult> {
    const out = new ResultBuilder();
    out.notes.push('not yet implemented');
    return out.result();
  },
};
