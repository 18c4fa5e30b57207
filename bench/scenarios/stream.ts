/** bench:stream - placeholder until the modules it measures land. */
import { ResultBuilder } from '../lib/scenario.js';
import type { Scenario, ScenarioResult } from '../lib/scenario.js';

export const scenario: Scenario = {
  name: 'stream',
  title: 'stream',
  async run(): Promise<ScenarioResult> {
    const out = new ResultBuilder();
    out.notes.push('not yet implemented');
    return out.result();
  },
};
