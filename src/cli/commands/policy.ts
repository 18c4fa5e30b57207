/**
 * `cloister policy --url URL`: print the development policy matching a running SIMULATED
 * server. Refuses real platforms: their policy must come from the image build, never from
 * the server it is meant to check.
 */
import { developmentPolicyFromEvidence } from '../../client/dev-policy.js';
import { one, parseArgs } from './args.js';
import { requireUrl, transportFor } from './client-common.js';

export const summary = 'print the development policy of a running SIMULATED server';

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ['url'] });
  if (args.flags.has('help')) {
    console.log('usage: cloister policy --url URL   (simulated platform only)');
    return 0;
  }
  const transport = await transportFor(requireUrl(one(args, 'url')));
  try {
    const bundle = await transport.fetchEvidence(undefined);
    console.log(JSON.stringify(developmentPolicyFromEvidence(bundle), null, 2));
    console.error('note: development policy for the SIMULATED platform; it trusts whatever this server reports');
  } finally {
    await transport.close();
  }
  return 0;
}
