/**
 * `cloister audit export` and `cloister audit verify` (docs/PROTOCOL.md section 12, "Audit
 * bundles").
 *
 * export: --evidence FILE (the evidence file the client verified: `client.evidenceFile()` or
 *   `cloister attest --out`) and one --record per request (the audit records the SDK hands
 *   out, `encodeAuditRecord`), written as one self-contained bundle (--out). --server URL
 *   fetches, from the server's log endpoint, the inclusion proofs of records that came
 *   without one and the consistency proofs between their tree heads (each verified).
 * verify: checks a bundle offline with the vendor roots only (a simulated root with --root)
 *   and prints what it proves: which TEE (platform and measurements), which model, which
 *   policy the server enforced, when, and - with --request / --response and --index - that
 *   the request and response are the ones received. --policy also compares the measurements
 *   with a client policy.
 *
 * Exit codes: 0 verified (export: written), 1 a check failed, 2 usage error.
 */
import { writeFile } from 'node:fs/promises';
import { CloisterError, isErrorCode } from '../../errors.js';
import { MAX_EVIDENCE_FILE_BYTES, decodeEvidenceFile } from '../../verifier/evidence-file.js';
import { parsePolicy } from '../../verifier/policy.js';
import { certificatesFromFile } from '../../verifier/x509/certificate.js';
import { toHex } from '../../core/hex.js';
import { MAX_AUDIT_BUNDLE_BYTES, MAX_AUDIT_RECORD_BYTES, buildAuditBundle, decodeAuditRecord } from '../../verifier/audit-bundle.js';
import type { AuditRecord, ConsistencyProof } from '../../verifier/audit-bundle.js';
import { decodeKeyConfig } from '../../protocol/key-config.js';
import type { TreeHead } from '../../protocol/receipt-v2.js';
import { ReceiptLogClient } from '../../client/log-proofs.js';
import { verifyAuditBundle } from '../../verifier/audit.js';
import type { AuditContent, AuditReport } from '../../verifier/audit.js';
import { one, parseArgs, parseAtOption, UsageError } from './args.js';
import { readFileLimited } from './read-file.js';

export const summary = 'export and verify audit bundles (receipts v2, offline)';

const USAGE = [
  'usage: cloister audit export --evidence FILE --record RECORD [--record RECORD ...] [--server URL] --out BUNDLE',
  '       cloister audit verify BUNDLE [--root PEM] [--policy POLICY] [--at ISO-TIME] [--index N --request FILE --response FILE] [--json]',
  '',
  'verify exit status: 0 verified, 1 a check failed (its code and step are printed), 2 usage error',
].join('\n');

/** Largest request / response content file read by verify. */
const MAX_CONTENT_FILE_BYTES = 64 * 1024 * 1024;
const MAX_AUX_FILE_BYTES = 1024 * 1024;

export interface AuditIo {
  out(text: string): void;
  err(text: string): void;
}

const defaultIo: AuditIo = {
  out: (t) => process.stdout.write(`${t}\n`),
  err: (t) => process.stderr.write(`${t}\n`),
};

async function exportBundle(argv: readonly string[], io: AuditIo): Promise<number> {
  const args = parseArgs(argv, { values: ['evidence', 'record', 'out', 'server'], multi: ['record'] });
  if (args.flags.has('help')) {
    io.out(USAGE);
    return 0;
  }
  const evidencePath = one(args, 'evidence');
  const out = one(args, 'out');
  const recordPaths = args.values.get('record') ?? [];
  if (evidencePath === undefined || out === undefined || recordPaths.length === 0) throw new UsageError(`--evidence, --out and at least one --record are required\n${USAGE}`);
  const evidence = await readFileLimited(evidencePath, MAX_EVIDENCE_FILE_BYTES, 'evidence file');
  const records: AuditRecord[] = [];
  for (const p of recordPaths) records.push(decodeAuditRecord(await readFileLimited(p, MAX_AUDIT_RECORD_BYTES, 'audit record')));
  const server = one(args, 'server');
  const extra = server === undefined ? [] : await fetchProofs(server, evidence, records, io);
  const bundle = buildAuditBundle(evidence, records, extra);
  await writeFile(out, bundle, { mode: 0o644, flag: 'wx' }).catch((cause: unknown) => {
    throw new CloisterError('INVALID_ARGUMENT', `cannot write ${out} (it must not exist yet)`, { cause });
  });
  io.out(`wrote ${out}: ${records.length} receipt(s), ${bundle.byteLength} bytes`);
  return 0;
}

/**
 * --server URL: proves each record that came without its inclusion proof against the server's
 * newest signed tree head, and fetches the consistency proofs between neighbouring heads that
 * no record carries (src/client/log-proofs.ts; every head and proof is verified under the
 * evidence file's key config before it goes into the bundle). Replaces records in place.
 */
async function fetchProofs(server: string, evidence: Uint8Array, records: AuditRecord[], io: AuditIo): Promise<ConsistencyProof[]> {
  const keyConfig = decodeKeyConfig(decodeEvidenceFile(evidence).bundle.keyConfig);
  const log = new ReceiptLogClient(server, keyConfig);
  let fetched = 0;
  for (const [i, r] of records.entries()) {
    if (r.proof !== undefined) continue;
    records[i] = { ...r, proof: await log.prove(r.leaf, r.index) };
    fetched++;
  }
  const heads = new Map<number, TreeHead>();
  for (const r of records) {
    if (r.proof === undefined) continue;
    const h = log.verifier.verify(r.proof.treeHead);
    heads.set(h.treeSize, h);
  }
  const sizes = [...heads.keys()].sort((a, b) => a - b);
  const have = records.flatMap((r) => r.consistency ?? []);
  const extra: ConsistencyProof[] = [];
  for (const [i, second] of sizes.slice(1).entries()) {
    const first = sizes[i] as number;
    if (have.some((c) => c.first === first && c.second === second)) continue;
    extra.push({ first, second, path: await log.consistency(heads.get(first) as TreeHead, heads.get(second) as TreeHead) });
  }
  io.err(`fetched from ${server}: ${fetched} inclusion proof(s), ${extra.length} consistency proof(s)`);
  return extra;
}


function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function printReport(r: AuditReport, io: AuditIo): void {
  io.out(`AUDIT VERIFIED  platform ${r.platform}${r.simulated ? ' (SIMULATED: no hardware behind this evidence)' : ''}`);
  io.out(`which TEE       ${r.platform}; measurements ${r.policyChecked ? 'match the given --policy' : 'reported, NOT compared (give --policy to compare)'}`);
  for (const [name, value] of Object.entries(r.claims.measurements)) io.out(`  ${name.padEnd(12)} ${value}`);
  io.out(`key config      id ${r.keyConfig.keyId}, sha256 ${toHex(r.keyConfigDigest)}, valid ${iso(r.keyConfig.notBefore * 1000)} .. ${iso(r.keyConfig.expiresAt * 1000)}`);
  for (const h of r.heads) io.out(`tree head       size ${h.treeSize}, root ${toHex(h.rootHash)}, signed ${iso(h.timestamp)}`);
  if (r.heads.length > 1) io.out(`consistency     each tree head extends the previous one (${r.heads.length - 1} proof(s))`);
  for (const x of r.receipts) {
    const l = x.leaf;
    io.out(`receipt ${x.index}`);
    io.out(`  which model   ${l.model.name} sha256 ${toHex(l.model.digest)}`);
    io.out(`  which policy  retention ${l.policy.retention}, engine ${l.policy.engine}, route ${l.policy.route}`);
    io.out(`  when          ${iso(l.receivedAt)} .. ${iso(l.completedAt)}`);
    io.out(`  outcome       ${l.outcome.status === 'complete' ? `complete, ${l.outcome.chunks} chunk(s)` : `aborted after chunk ${l.outcome.chunks} (${l.outcome.code})`}`);
    io.out(`  request       ${x.requestChecked ? 'is the one given (salted hash matches)' : `salted sha256 ${toHex(l.requestHash)} (give --request to check)`}`);
    io.out(`  response      ${x.responseChecked ? 'is the one given (salted hash matches)' : `salted sha256 ${toHex(l.responseHash)} (give --response to check)`}`);
    io.out(`  included in   the tree head of size ${x.head.treeSize}`);
    if (x.session !== undefined) io.out(`  session       ${x.session === 'undisclosed' ? 'came in a session (no session link in the bundle)' : `session ${x.session.group} of this bundle, request ${x.session.seq}`}`);
  }
}

function reportJson(r: AuditReport): unknown {
  return {
    ok: true,
    platform: r.platform,
    simulated: r.simulated,
    policyChecked: r.policyChecked,
    measurements: r.claims.measurements,
    keyConfig: { keyId: r.keyConfig.keyId, sha256: toHex(r.keyConfigDigest), notBefore: r.keyConfig.notBefore, expiresAt: r.keyConfig.expiresAt },
    heads: r.heads.map((h) => ({ treeSize: h.treeSize, rootHash: toHex(h.rootHash), timestamp: h.timestamp })),
    receipts: r.receipts.map((x) => ({
      index: x.index,
      model: { name: x.leaf.model.name, digest: toHex(x.leaf.model.digest) },
      policy: { ...x.leaf.policy },
      receivedAt: x.leaf.receivedAt,
      completedAt: x.leaf.completedAt,
      outcome: { ...x.leaf.outcome },
      requestHash: toHex(x.leaf.requestHash),
      responseHash: toHex(x.leaf.responseHash),
      requestChecked: x.requestChecked,
      responseChecked: x.responseChecked,
      treeSize: x.head.treeSize,
      ...(x.session === undefined ? {} : { session: x.session }),
    })),
  };
}

async function verifyCommand(argv: readonly string[], io: AuditIo): Promise<number> {
  const [path, ...rest] = argv;
  if (path === '--help') {
    io.out(USAGE);
    return 0;
  }
  if (path === undefined || path.startsWith('--')) throw new UsageError(`give the bundle file first\n${USAGE}`);
  const args = parseArgs(rest, { values: ['root', 'policy', 'at', 'index', 'request', 'response'], flags: ['json'] });
  const at = parseAtOption(one(args, 'at'));
  const rootPath = one(args, 'root');
  const policyPath = one(args, 'policy');
  const index = one(args, 'index');
  const requestPath = one(args, 'request');
  const responsePath = one(args, 'response');
  if ((requestPath !== undefined || responsePath !== undefined) !== (index !== undefined)) throw new UsageError('--request / --response go with --index N (the receipt they belong to)');
  if (index !== undefined && !/^(0|[1-9]\d{0,15})$/.test(index)) throw new UsageError('--index must be a leaf index (an unsigned integer)');
  const json = args.flags.has('json');
  try {
    const bytes = await readFileLimited(path, MAX_AUDIT_BUNDLE_BYTES, 'audit bundle');
    const simulatedRoots = rootPath === undefined ? undefined : certificatesFromFile(await readFileLimited(rootPath, MAX_AUX_FILE_BYTES, 'root file'), rootPath, 'root file');
    const policy = policyPath === undefined ? undefined : parsePolicy(await readFileLimited(policyPath, MAX_AUX_FILE_BYTES, 'policy file'), { source: policyPath });
    const content: AuditContent[] = [];
    if (index !== undefined) {
      content.push({
        index: Number(index),
        ...(requestPath === undefined ? {} : { request: await readFileLimited(requestPath, MAX_CONTENT_FILE_BYTES, 'request file') }),
        ...(responsePath === undefined ? {} : { response: [await readFileLimited(responsePath, MAX_CONTENT_FILE_BYTES, 'response file')] }),
      });
    }
    const report = await verifyAuditBundle(bytes, {
      ...(simulatedRoots === undefined ? {} : { simulatedRoots }),
      ...(policy === undefined ? {} : { policy }),
      ...(at === undefined ? {} : { at }),
      content,
    });
    if (json) io.out(JSON.stringify(reportJson(report), null, 2));
    else printReport(report, io);
    return 0;
  } catch (err) {
    const code = err instanceof CloisterError && isErrorCode(err.code) ? err.code : 'INTERNAL';
    const step = err instanceof CloisterError && typeof err.detail?.['step'] === 'string' ? err.detail['step'] : undefined;
    const message = err instanceof Error ? err.message : String(err);
    if (json) io.out(JSON.stringify({ ok: false, code, ...(step === undefined ? {} : { step }), message }, null, 2));
    io.err(`cloister audit verify: NOT VERIFIED: ${code}${step === undefined ? '' : ` at ${step}`}: ${message}`);
    return 1;
  }
}

export async function run(argv: string[], io: AuditIo = defaultIo): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help') {
    io.out(USAGE);
    return sub === undefined ? 2 : 0;
  }
  if (sub.startsWith('--')) throw new UsageError(`unknown option ${sub}\n${USAGE}`);
  if (sub === 'export') return exportBundle(rest, io);
  if (sub === 'verify') return verifyCommand(rest, io);
  throw new UsageError(`unknown subcommand '${sub}'\n${USAGE}`);
}
