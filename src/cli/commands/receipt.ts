/**
 * `cloister receipt verify --evidence FILE --receipt RECEIPT.json`: checks a receipt the SDK
 * handed to a caller (`onReceipt`, stored with `receiptToJson`) offline against the key config
 * of the evidence file the client kept (`client.evidenceFile()`). It does not verify the
 * evidence itself: that is `cloister verify FILE --policy POLICY`.
 *
 * A fleet's receipt names the replica that answered (src/protocol/replica.ts): its receipt key
 * and its statement. The binding of that key to the fleet key config is checked here and the
 * replica named by its key; `--statement-out FILE` writes the statement as an evidence file
 * for `cloister verify FILE --policy POLICY` (the replica's measurements, platform, time).
 */
import { CloisterError } from '../../errors.js';
import { decodeEvidenceFile, MAX_EVIDENCE_FILE_BYTES } from '../../verifier/evidence-file.js';
import { fromHex } from '../../core/hex.js';
import { checkReceipt, receiptFromJson } from '../../verifier/receipt.js';
import { one, parseArgs, UsageError } from './args.js';
import { readFileLimited, readTextLimited } from './read-file.js';
import { writeFile } from 'node:fs/promises';

export const summary = 'check a stored receipt offline against an evidence file';

const USAGE = 'usage: cloister receipt verify --evidence FILE --receipt RECEIPT.json [--request-digest HEX] [--response-digest HEX] [--statement-out FILE]';
/** A receipt with a replica statement (an evidence file, base64) stays well under this. */
const MAX_RECEIPT_FILE_BYTES = 2 * 1024 * 1024;

export async function run(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === '--help' || sub === undefined) {
    console.log(USAGE);
    return sub === undefined ? 2 : 0;
  }
  if (sub.startsWith('--')) throw new UsageError(`unknown option ${sub}; ${USAGE}`);
  if (sub !== 'verify') throw new UsageError(`unknown subcommand '${sub}'; ${USAGE}`);
  const args = parseArgs(rest, { values: ['evidence', 'receipt', 'request-digest', 'response-digest', 'statement-out'] });
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
  const statementOut = one(args, 'statement-out');
  if (record.replica === undefined) {
    if (statementOut !== undefined) throw new CloisterError('INVALID_ARGUMENT', `--statement-out: ${receiptPath} is not a fleet receipt; it names no replica`);
    console.log(`RECEIPT VERIFIED: signed by the receipt key of key config ${Buffer.from(record.keyConfigDigest).toString('hex')} (key id ${record.keyId})`);
    console.error('note: the evidence itself is checked by `cloister verify FILE --policy POLICY`');
    return 0;
  }
  const statement = decodeEvidenceFile(record.replica.statement);
  console.log(
    `RECEIPT VERIFIED: signed by replica ${Buffer.from(record.replica.receiptKey).toString('hex')} (its receipt key, bound by its ${statement.bundle.platform} statement) `
    + `of fleet key config ${Buffer.from(record.keyConfigDigest).toString('hex')} (key id ${record.keyId})`,
  );
  if (statementOut !== undefined) {
    // Never over an existing file: an auditor's earlier statement stays as it was.
    await writeFile(statementOut, record.replica.statement, { flag: 'wx', mode: 0o644 }).catch((cause: unknown) => {
      throw new CloisterError('INVALID_ARGUMENT', `--statement-out ${statementOut}: ${cause instanceof Error ? cause.message : 'cannot write'}`, { cause });
    });
    console.error(`wrote the replica's statement to ${statementOut}; check it with \`cloister verify ${statementOut} --policy POLICY\``);
  }
  console.error('note: the evidence files themselves (the fleet\'s and the replica\'s statement) are checked by `cloister verify FILE --policy POLICY`');
  return 0;
}
