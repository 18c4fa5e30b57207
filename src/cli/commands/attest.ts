/**
 * `cloister attest`: fetch a server's evidence bundle (optionally bound to a nonce) and
 * write it to a file as an evidence file (src/verifier/evidence-file.ts, docs/PROTOCOL.md
 * "Evidence file"): the evidence, the key config it binds, the nonce, and the SNP
 * certificates or TDX collateral the server attached. Nothing is verified here: verify the
 * file with `cloister verify FILE` now or later, offline.
 */
import { writeFile } from 'node:fs/promises';
import { CloisterError } from '../../errors.js';
import { encodeEvidenceFile } from '../../verifier/evidence-file.js';
import { one, parseArgs } from './args.js';
import { hexArg, requireUrl, transportFor } from './client-common.js';

export const summary = "fetch a server's attestation evidence into a file";

const USAGE = 'usage: cloister attest --url URL [--nonce HEX] --out evidence.cbor';

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ['url', 'nonce', 'out'] });
  if (args.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  const url = requireUrl(one(args, 'url'));
  const out = one(args, 'out');
  if (out === undefined) throw new CloisterError('INVALID_ARGUMENT', `--out is required\n\n${USAGE}`);
  const nonce = hexArg(one(args, 'nonce'), '--nonce');
  const transport = await transportFor(url);
  try {
    const bundle = await transport.fetchEvidence(nonce);
    const file = encodeEvidenceFile(bundle, nonce);
    try {
      await writeFile(out, file);
    } catch (cause) {
      throw new CloisterError('NOT_FOUND', `cannot write the evidence file ${out}`, { cause });
    }
    const extra = [
      ...(bundle.certificates === undefined ? [] : [`certificates ${bundle.certificates.byteLength} bytes`]),
      ...(bundle.collateral === undefined ? [] : [`collateral ${bundle.collateral.byteLength} bytes`]),
      ...(nonce === undefined ? [] : ['nonce']),
    ];
    console.log(
      `wrote ${bundle.platform} evidence (${bundle.evidence.byteLength} bytes, key config ${bundle.keyConfig.byteLength} bytes${extra.length === 0 ? '' : `, ${extra.join(', ')}`}) to ${out}`,
    );
    console.log(`verify it: cloister verify ${out}${bundle.platform === 'simulated' ? ' --root <simulated-root.pem>' : ''} [--policy policy.json]`);
  } finally {
    await transport.close();
  }
  return 0;
}
