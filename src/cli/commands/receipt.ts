/**
 * `cloister receipt verify --evidence FILE --receipt RECEIPT.json`: checks a receipt the SDK
 * handed to a caller (`onReceipt`, stored with `receiptToJson`) offline against the key config
 * of the evidence file the client kept (`client.evidenceFile()`). It does not verify the
 * evidence itself: that is `cloister verify FILE --policy POLICY`.
 */
import { CloisterError } from '../../errors.js';
import { decodeEvidenceFile, MAX_EVIDENCE_FILE_BYTES } from '../../verifier/evidence-file.js';
import { fromHex } from '../../core/hex.js';
import { checkReceipt, receiptFromJson } from '../../protocol/receipt.js';
import { one, parseArgs, UsageError } from './args.js';
import { readFileLimited, readTextLimited } from './read-file.js';

export const summary = 'check a stored receipt offline against an evidence file';

const USAGE = 'usage: cloister receipt verify --evidence FILE --receipt RECEIPT.json [--request-digest HEX] [--response-digest HEX]';
const MAX_RECEIPT_FILE_BYTES = 64 * 1024;

export async function run(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === '--help' || sub === undefined) {
    console.log(USAGE);
    return sub === undefined ? 2 : 0;
  }
  if (sub.startsWith('--')) throw new UsageError(`unknown option ${sub}; ${USAGE}`);
  if (sub !== 'verify') throw new UsageError(`unknown subcommand '${sub}'; ${USAGE}`);
  const args = parseArgs(rest, { values: ['evidence', 'receipt', 'request-digest', 'response-digest'] });
  if (args.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  const evidencePath = one(args, 'evidence');
  const receiptPath = one(args, 'receipt');
  if (evidencePath === undefined || receiptPath === undefined) throw new UsageError(`--evidence and --receipt are required; ${USAGE}`);
  const digest = (name: string): Uint8Array | undefined => {
    const v = one(args, name);
    return v === undefined ? undefined : fromHex(v, 32, `--${name}`);
  };
  const requestDigest = digest('request-digest');
  const responseDigest = digest('response-digest');
  const evidence = decodeEvidenceFile(await readFileLimited(evidencePath, MAX_EVIDENCE_FILE_BYTES, 'evidence file'));
  let json: unknown;
  try {
    json = JSON.parse(await readTextLimited(receiptPath, MAX_RECEIPT_FILE_BYTES, 'receipt file'));
  } catch (cause) {
    if (cause instanceof CloisterError) throw cause;
    throw new CloisterError('MALFORMED', `receipt file ${receiptPath} is not JSON`, { cause });
  }
  const record = receiptFromJson(json);
  checkReceipt(record, evidence.bundle.keyConfig, {
    ...(requestDigest === undefined ? {} : { requestDigest }),
    ...(responseDigest === undefined ? {} : { responseDigest }),
  });
  console.log(`RECEIPT VERIFIED: signed by the receipt key of key config ${Buffer.from(record.keyConfigDigest).toString('hex')} (key id ${record.keyId})`);
  console.error('note: the evidence itself is checked by `cloister verify FILE --policy POLICY`');
  return 0;
}
