/**
 * `cloister infer`: verify a server against a policy, then send one sealed request.
 *
 *   cloister infer --url URL --policy policy.json [--root root.pem]
 *                  (--text TEXT | --file PATH) [--model NAME] [--op classify|embed|token-classify] [--json]
 *                  [--audit DIR]
 */
import { parsePolicy, policyWarnings } from '../../verifier/policy.js';
import { CloisterError } from '../../errors.js';
import type { ReceiptV2Record } from '../../protocol/response.js';
import type { ReceiptRecord } from '../../verifier/receipt.js';
import { AuditDirectory } from '../../client/audit-dir.js';
import { checkText, connect } from '../../client/client.js';
import { one, parseArgs } from './args.js';
import { readText, requireUrl, rootsFrom } from './client-common.js';
import { readFileLimited, readTextLimited } from './read-file.js';

/** An API key file holds one short line; anything bigger is not one. */
const MAX_API_KEY_FILE_BYTES = 4096;

export const summary = 'verify a server, then classify, embed or tag the tokens of text through the sealed channel';

const USAGE = `usage: cloister infer --url URL --policy policy.json [--root root.pem]
                      (--text TEXT | --file PATH) [--model NAME] [--op classify|embed|token-classify] [--json]
                      [--audit DIR]

  --url     ws://host:port/ or http://host:port, as printed by 'cloister serve'
  --policy  the policy the server must satisfy (from the image build; for the simulated
            platform, the development policy 'cloister serve' wrote)
  --root    a simulated platform's root certificate: optional, since the development policy
            that 'cloister serve' writes pins that root's SHA-256 (platforms.simulated.rootSha256),
            which the client trusts as explicitly as a given root; never used for real TEEs
  --text / --file  the input: not empty, valid UTF-8; at most the server's maxInputChars
            (serve --max-input-chars, default 16384 characters)
  --op      classify (text-classification model, default), embed (feature-extraction model)
            or token-classify (token-classification model, e.g. PHI detection: one line per
            tagged token, index, label, score, word)
  --api-key-file  the client API key the server requires (serve --client-keys): the file's
            first line, sent inside the sealed request (CLOISTER_API_KEY sets it directly)
  --audit   write this request's receipts-v2 record (with its inclusion proof to a signed tree
            head) and the verified evidence into DIR (created, mode 0700; printed paths), for
            'cloister audit export --evidence EVIDENCE --record RECORD --out B' and
            'cloister audit verify B'. Content-free: salted hashes and the salt (keep the record
            as private as the request: with the salt, a guess at the text can be checked).`;

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ['url', 'policy', 'root', 'text', 'file', 'model', 'op', 'api-key-file', 'audit'], flags: ['json'] });
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
  const text = textArg ?? (await readUtf8(fileArg ?? ''));
  if (text === '') throw new CloisterError('INVALID_ARGUMENT', `${textArg === undefined ? `--file ${fileArg ?? ''}` : '--text'} is empty: there is no input to send`);
  checkText(text, textArg === undefined ? `--file ${fileArg ?? ''}` : '--text');
  const op = one(args, 'op') ?? 'classify';
  if (op !== 'classify' && op !== 'embed' && op !== 'token-classify') throw new CloisterError('INVALID_ARGUMENT', '--op must be classify, embed or token-classify');
  const model = one(args, 'model');
  const trustedRoots = await rootsFrom(one(args, 'root'));

  const keyFile = one(args, 'api-key-file');
  const apiKey = keyFile === undefined ? process.env['CLOISTER_API_KEY'] : ((await readTextLimited(keyFile, MAX_API_KEY_FILE_BYTES, 'API key file')).split(/\r?\n/, 1)[0] ?? '').trim();
  if (apiKey === '') throw new CloisterError('CONFIG_INVALID', keyFile === undefined ? 'CLOISTER_API_KEY is set but empty' : `API key file ${keyFile} is empty`);
  const auditDir = one(args, 'audit');
  if (auditDir === '') throw new CloisterError('INVALID_ARGUMENT', '--audit needs a directory');
  const records: (ReceiptV2Record | ReceiptRecord)[] = [];
  const policy = parsePolicy(await readText(policyPath, 'policy'), { source: policyPath });
  for (const w of policyWarnings(policy)) console.error(`cloister infer: ${w}`);
  const client = await connect(url, {
    policy,
    ...(trustedRoots === undefined ? {} : { trustedRoots }),
    ...(apiKey === undefined ? {} : { apiKey }),
    // An audit record: receipts v2 with the inclusion proof, asked for in-band, where the server
    // offers them; else (a fleet, whose replicas sign their own; an older server) the v1 receipt.
    ...(auditDir === undefined ? {} : { receiptProofs: true, onReceiptV2: (r: ReceiptV2Record) => records.push(r), onReceipt: (r: ReceiptRecord) => records.push(r) }),
  });
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
    } else if (op === 'token-classify') {
      const result = await client.classifyTokens(text, model === undefined ? {} : { model });
      if (args.flags.has('json')) console.log(JSON.stringify({ platform: client.platform, result }));
      else if (result.length === 0) console.log('no tagged tokens');
      else for (const e of result) console.log(`${e.index}\t${e.entity}\t${e.score.toFixed(4)}\t${e.word}`);
    } else {
      const [vector] = await client.embed([text], model === undefined ? {} : { model });
      if (vector === undefined) throw new CloisterError('PROTOCOL_VIOLATION', 'empty embedding');
      if (args.flags.has('json')) console.log(JSON.stringify({ platform: client.platform, result: vector }));
      else console.log(`embedding of ${vector.length} dimensions: [${vector.slice(0, 4).map((x) => x.toFixed(4)).join(', ')}, ...]`);
    }
    if (auditDir !== undefined) await writeAudit(auditDir, client.evidenceFile(), records);
  } finally {
    await client.close();
  }
  return 0;
}

/** `--audit DIR`: the request's audit record (or v1 receipt) and its key's evidence file (src/client/audit-dir.ts). */
async function writeAudit(dir: string, evidence: Uint8Array, records: readonly (ReceiptV2Record | ReceiptRecord)[]): Promise<void> {
  const [r] = records;
  if (r === undefined || records.length !== 1) throw new CloisterError('RECEIPT_INVALID', `--audit: expected one receipt, got ${records.length}`);
  const d = await AuditDirectory.open(dir);
  const files = 'leaf' in r ? await d.write(r, evidence) : await d.writeReceipt(r, evidence);
  console.error(`audit: wrote ${files.evidence} and ${files.record}`);
}

/** Largest --file read (the server's own --max-input-chars is the real limit; default 16 384 characters). */
export const MAX_INFER_FILE_BYTES = 4 * 1024 * 1024;

/** The input file as UTF-8, strictly: invalid bytes are refused, not replaced by U+FFFD. */
async function readUtf8(path: string): Promise<string> {
  const bytes = await readFileLimited(path, MAX_INFER_FILE_BYTES, 'input file');
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new CloisterError('INVALID_ARGUMENT', `input file '${path}' is not valid UTF-8`);
  }
}
