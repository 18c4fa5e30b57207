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
 *
 * `cloister receipt verify --dir DIR [--policy POLICY] [--root PEM] [--at TIME]` checks every
 * receipt an audit directory holds (src/verifier/receipt-dir.ts) and counts them per key
 * config and per replica; with --policy it also verifies every evidence file and replica
 * statement. Exit 1 names the first file that fails.
 */
import { CloisterError } from '../../errors.js';
import { decodeEvidenceFile, MAX_EVIDENCE_FILE_BYTES } from '../../verifier/evidence-file.js';
import { fromHex } from '../../core/hex.js';
import { checkReceipt, detachedStatementOf, receiptFromJson } from '../../verifier/receipt.js';
import { one, parseArgs, parseAtOption, UsageError } from './args.js';
import { readFileLimited, readTextLimited } from './read-file.js';
import { MAX_RECEIPT_FILE_BYTES, verifyReceiptDirectory } from '../../verifier/receipt-dir.js';
import { dirname, join } from 'node:path';
import type { ReceiptDirReport } from '../../verifier/receipt-dir.js';
import { parsePolicy } from '../../verifier/policy.js';
import { certificatesFromFile } from '../../verifier/x509/certificate.js';
import type { ParsedArgs } from './args.js';
import { writeFile } from 'node:fs/promises';

export const summary = 'check a stored receipt offline against an evidence file';

const USAGE = [
  'usage: cloister receipt verify --evidence FILE --receipt RECEIPT.json [--statement FILE] [--request-digest HEX] [--response-digest HEX] [--statement-out FILE]',
  '       cloister receipt verify --dir DIR [--policy POLICY] [--root PEM] [--at ISO-TIME] [--json]',
].join('\n');
const MAX_AUX_FILE_BYTES = 1024 * 1024;

export async function run(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === '--help' || sub === undefined) {
    console.log(USAGE);
    return sub === undefined ? 2 : 0;
  }
  if (sub.startsWith('--')) throw new UsageError(`unknown option ${sub}; ${USAGE}`);
  if (sub !== 'verify') throw new UsageError(`unknown subcommand '${sub}'; ${USAGE}`);
  const args = parseArgs(rest, { values: ['evidence', 'receipt', 'statement', 'request-digest', 'response-digest', 'statement-out', 'dir', 'policy', 'root', 'at'], flags: ['json'] });
  if (args.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  const dir = one(args, 'dir');
  if (dir !== undefined) {
    const stray = ['evidence', 'receipt', 'statement', 'request-digest', 'response-digest', 'statement-out'].find((k) => one(args, k) !== undefined);
    if (stray !== undefined) throw new UsageError(`--${stray} does not go with --dir; ${USAGE}`);
    return verifyDirectory(dir, args);
  }
  const onlyDir = ['policy', 'root', 'at'].find((k) => one(args, k) !== undefined) ?? (args.flags.has('json') ? 'json' : undefined);
  if (onlyDir !== undefined) throw new UsageError(`--${onlyDir} goes with --dir; ${USAGE}`);
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
  // A fleet receipt whose statement is kept apart (as the audit directory keeps it): --statement
  // FILE, else statement-<sha256>.cbor next to the receipt.
  const named = detachedStatementOf(json);
  if (named === undefined && one(args, 'statement') !== undefined) throw new UsageError(`--statement: ${receiptPath} keeps no statement apart`);
  const statementPath = named === undefined ? undefined : (one(args, 'statement') ?? join(dirname(receiptPath), `statement-${named}.cbor`));
  const detached = statementPath === undefined ? undefined : await readFileLimited(statementPath, MAX_EVIDENCE_FILE_BYTES, 'statement file');
  const record = receiptFromJson(json, detached);
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

/** `--dir DIR`: every receipt in an audit directory, counted per key config and replica. */
async function verifyDirectory(dir: string, args: ParsedArgs): Promise<number> {
  const policyPath = one(args, 'policy');
  const rootPath = one(args, 'root');
  const at = parseAtOption(one(args, 'at'));
  const policy = policyPath === undefined ? undefined : parsePolicy(await readFileLimited(policyPath, MAX_AUX_FILE_BYTES, 'policy file'), { source: policyPath });
  const simulatedRoots = rootPath === undefined ? undefined : certificatesFromFile(await readFileLimited(rootPath, MAX_AUX_FILE_BYTES, 'root file'), rootPath, 'root file');
  const report = await verifyReceiptDirectory(dir, {
    read: readFileLimited,
    ...(policy === undefined ? {} : { policy }),
    ...(simulatedRoots === undefined ? {} : { simulatedRoots }),
    ...(at === undefined ? {} : { at }),
  });
  if (args.flags.has('json')) console.log(JSON.stringify(report, null, 2));
  else printDirectory(report);
  if (!report.policyChecked) console.error('note: evidence files and replica statements were not verified: give --policy POLICY to verify them too');
  return 0;
}

function measured(claims: { readonly measurements: Readonly<Record<string, string>> } | undefined): string {
  if (claims === undefined) return '';
  const first = Object.entries(claims.measurements)[0];
  return first === undefined ? '' : `, ${first[0]} ${first[1].slice(0, 16)}...`;
}

function printDirectory(r: ReceiptDirReport): void {
  console.log(`RECEIPTS VERIFIED: ${r.receipts} receipt(s), signatures${r.policyChecked ? ', evidence and replica statements against the policy' : ' and bindings (evidence not verified)'}`);
  for (const k of r.keyConfigs) {
    console.log(`key config ${k.keyConfigDigest} (key id ${k.keyId}, ${k.platform}${k.fleet ? ', fleet' : ''}${measured(k.claims)}): ${k.receipts} receipt(s)`);
    for (const rep of k.replicas) console.log(`  replica ${rep.receiptKey} (${rep.platform}${measured(rep.claims)}): ${rep.receipts} receipt(s)`);
  }
}
