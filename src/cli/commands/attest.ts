/**
 * `cloister attest`: fetch a server's evidence bundle (optionally bound to a nonce) and
 * write it to a file as the CBOR wire message {t:'evidence', bundle}. Nothing is verified
 * here: hand the file to a verifier (or `cloister verify`, where available).
 */
import { writeFile } from 'node:fs/promises';
import { CloisterError } from '../../errors.js';
import { encodeWireMessage } from '../../protocol/wire.js';
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
    await writeFile(out, encodeWireMessage({ t: 'evidence', bundle }));
    console.log(`wrote ${bundle.platform} evidence (${bundle.evidence.byteLength} bytes, key config ${bundle.keyConfig.byteLength} bytes) to ${out}`);
  } finally {
    await transport.close();
  }
  return 0;
}
