/**
 * `cloister infer`: verify a server against a policy, then send one sealed request.
 *
 *   cloister infer --url URL --policy policy.json [--root root.pem]
 *                  (--text TEXT | --file PATH) [--model NAME] [--op classify|embed] [--json]
 */
import { parsePolicy } from '../../attestation/policy.js';
import { CloisterError } from '../../errors.js';
import { connect } from '../../client/client.js';
import { one, parseArgs } from './args.js';
import { readText, requireUrl, rootsFrom } from './client-common.js';

export const summary = 'verify a server, then classify or embed text through the sealed channel';

const USAGE = `usage: cloister infer --url URL --policy policy.json [--root root.pem]
                      (--text TEXT | --file PATH) [--model NAME] [--op classify|embed] [--json]

  --url     ws://host:port/ or http://host:port, as printed by 'cloister serve'
  --policy  the policy the server must satisfy (from the image build; for the simulated
            platform, the development policy 'cloister serve' wrote)
  --root    a simulated platform's root certificate: optional, since the development policy
            that 'cloister serve' writes pins that root's SHA-256 (platforms.simulated.rootSha256),
            which the client trusts as explicitly as a given root; never used for real TEEs`;

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ['url', 'policy', 'root', 'text', 'file', 'model', 'op'], flags: ['json'] });
  if (args.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  const url = requireUrl(one(args, 'url'));
  const policyPath = one(args, 'policy');
  if (policyPath === undefined) throw new CloisterError('INVALID_ARGUMENT', `--policy is required\n\n${USAGE}`);
  const textArg = one(args, 'text');
  const fileArg = one(args, 'file');
  if ((textArg === undefined) === (fileArg === undefined)) throw new CloisterError('INVALID_ARGUMENT', 'give exactly one of --text or --file');
  const text = textArg ?? (await readText(fileArg ?? '', 'input file'));
  const op = one(args, 'op') ?? 'classify';
  if (op !== 'classify' && op !== 'embed') throw new CloisterError('INVALID_ARGUMENT', '--op must be classify or embed');
  const model = one(args, 'model');
  const trustedRoots = await rootsFrom(one(args, 'root'));

  const client = await connect(url, { policy: parsePolicy(await readText(policyPath, 'policy'), { source: policyPath }), ...(trustedRoots === undefined ? {} : { trustedRoots }) });
  try {
    if (!args.flags.has('json') && client.simulated) console.error('note: the server runs on the SIMULATED platform (no TEE)');
    if (op === 'classify') {
      const result = await client.classify(text, model === undefined ? {} : { model });
      if (args.flags.has('json')) console.log(JSON.stringify({ platform: client.platform, result }));
      else {
        const top = result[0];
        if (top === undefined) throw new CloisterError('PROTOCOL_VIOLATION', 'empty classification');
        console.log(`${top.label}\t${top.score.toFixed(4)}`);
      }
    } else {
      const [vector] = await client.embed([text], model === undefined ? {} : { model });
      if (vector === undefined) throw new CloisterError('PROTOCOL_VIOLATION', 'empty embedding');
      if (args.flags.has('json')) console.log(JSON.stringify({ platform: client.platform, result: vector }));
      else console.log(`embedding of ${vector.length} dimensions: [${vector.slice(0, 4).map((x) => x.toFixed(4)).join(', ')}, ...]`);
    }
  } finally {
    await client.close();
  }
  return 0;
}
