/**
 * Checking a directory of version-1 receipts offline (`cloister receipt verify --dir DIR`): the
 * `<key>-...receipt.json` files and `evidence-<key>.cbor` files that `cloister infer --audit`,
 * `cloister gateway --audit-dir` (src/client/audit-dir.ts) or an SDK caller (receiptToJson,
 * client.evidenceFile()) kept. Every receipt is checked against the key config of its
 * evidence file (checkReceipt: for a fleet, the replica's key and its binding); with a policy,
 * every evidence file and every distinct replica statement is verified too. The report counts
 * the receipts per key config and per replica, so an auditor sees which TEE gave which
 * answers. The first failure throws, naming the file.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CloisterError } from '../errors.js';
import { toHex } from '../core/hex.js';
import { decodeKeyConfig, keyConfigDigest } from '../protocol/key-config.js';
import type { KeyConfig } from '../protocol/key-config.js';
import { replicaStatementDigest } from '../protocol/replica.js';
import type { Platform, VerifiedClaims } from '../core/types.js';
import { decodeEvidenceFile, MAX_EVIDENCE_FILE_BYTES } from './evidence-file.js';
import type { EvidenceFile } from './evidence-file.js';
import { checkReceipt, detachedStatementOf, receiptFromJson } from './receipt.js';
import { KEY_CONFIG_CLOCK_SKEW_SECONDS, verifyEvidence } from './verify.js';
import type { Policy } from './policy.js';

/** Most receipt files one directory check reads. */
export const MAX_RECEIPT_FILES = 100_000;
/** Largest receipt file (a fleet receipt carries its replica statement). */
export const MAX_RECEIPT_FILE_BYTES = 2 * 1024 * 1024;

export interface ReceiptDirOptions {
  /** Verify every evidence file and replica statement against this policy (else: binding and signatures only). */
  readonly policy?: Policy;
  /** Roots for simulated evidence (development), as `cloister verify --root`. */
  readonly simulatedRoots?: readonly (string | Uint8Array)[];
  /** Verification time (default now). */
  readonly at?: Date;
  /** Most receipt files read (LIMIT_EXCEEDED beyond). Default MAX_RECEIPT_FILES. */
  readonly maxFiles?: number;
  /** Reads a file with a size bound (the CLI's readFileLimited). */
  readonly read: (path: string, max: number, what: string) => Promise<Uint8Array>;
}

export interface ReplicaCount {
  /** The replica's receipt key (hex). */
  readonly receiptKey: string;
  readonly receipts: number;
  readonly platform: Platform;
  /** The statement's verified claims (with a policy). */
  readonly claims?: VerifiedClaims;
}

export interface KeyConfigCount {
  /** SHA-256 of the key config (hex). */
  readonly keyConfigDigest: string;
  readonly keyId: number;
  readonly platform: Platform;
  readonly fleet: boolean;
  readonly receipts: number;
  /** Fleet key configs: the replicas that signed, by receipt key. */
  readonly replicas: readonly ReplicaCount[];
  readonly claims?: VerifiedClaims;
}

export interface ReceiptDirReport {
  readonly receipts: number;
  readonly policyChecked: boolean;
  readonly keyConfigs: readonly KeyConfigCount[];
}

/** What the check gathers per evidence file (key config) while it reads the receipts. */
interface KeyConfigEntry {
  readonly file: EvidenceFile;
  readonly kc: KeyConfig;
  receipts: number;
  /** Receipt key (hex) -> receipts it signed, a statement binding it, and that statement's claims once verified. */
  readonly replicas: Map<string, { n: number; readonly statement: Uint8Array; claims?: VerifiedClaims }>;
}

function inFile(file: string, err: unknown): CloisterError {
  const e = err instanceof CloisterError ? err : new CloisterError('INTERNAL', 'failed', { cause: err });
  return new CloisterError(e.code, `${file}: ${e.message}`, { cause: e, detail: { ...e.detail, file } });
}

/** Checks every `*.receipt.json` in `dir` against its `evidence-<key>.cbor`; throws at the first failure. */
export async function verifyReceiptDirectory(dir: string, options: ReceiptDirOptions): Promise<ReceiptDirReport> {
  let names: string[];
  try {
    names = (await readdir(dir)).sort();
  } catch (cause) {
    throw new CloisterError('NOT_FOUND', `cannot read the receipt directory ${dir}`, { cause, detail: { file: dir } });
  }
  const receiptFiles = names.filter((n) => n.endsWith('.receipt.json'));
  if (receiptFiles.length === 0) throw new CloisterError('NOT_FOUND', `${dir} holds no *.receipt.json files`, { detail: { file: dir } });
  const maxFiles = options.maxFiles ?? MAX_RECEIPT_FILES;
  if (receiptFiles.length > maxFiles) {
    throw new CloisterError('LIMIT_EXCEEDED', `${dir} holds ${receiptFiles.length} receipt files; at most ${maxFiles} (maxFiles) are checked at once`, { detail: { limit: 'maxFiles', value: maxFiles } });
  }
  const at = options.at ?? new Date();
  const evidence = new Map<string, KeyConfigEntry>();
  const evidenceFor = async (prefix: string, receiptFile: string): Promise<KeyConfigEntry> => {
    const have = evidence.get(prefix);
    if (have !== undefined) return have;
    const path = join(dir, `evidence-${prefix}.cbor`);
    if (!names.includes(`evidence-${prefix}.cbor`)) throw new CloisterError('NOT_FOUND', `${receiptFile}: no evidence file ${path} for its key config`, { detail: { file: path } });
    let file: EvidenceFile;
    let kc: KeyConfig;
    try {
      file = decodeEvidenceFile(await options.read(path, MAX_EVIDENCE_FILE_BYTES, 'evidence file'));
      kc = decodeKeyConfig(file.bundle.keyConfig);
    } catch (err) {
      throw inFile(path, err);
    }
    const entry: KeyConfigEntry = { file, kc, receipts: 0, replicas: new Map() };
    evidence.set(prefix, entry);
    return entry;
  };
  // The key config's evidence, or a statement, against the policy; a stored document may be as old as its key.
  const verify = async (file: EvidenceFile, kc: KeyConfig, what: string): Promise<VerifiedClaims> => {
    const policy = options.policy;
    if (policy === undefined) throw new CloisterError('INTERNAL', 'no policy');
    try {
      const v = await verifyEvidence(file.bundle, {
        policy: { ...policy, nonceRequired: false },
        at,
        ...(file.nonce === undefined ? {} : { nonce: file.nonce }),
        ...(options.simulatedRoots === undefined ? {} : { trustedRoots: { simulated: options.simulatedRoots } }),
        nitro: { maxAgeMs: (kc.expiresAt - kc.notBefore) * 1000 + KEY_CONFIG_CLOCK_SKEW_SECONDS * 1000 },
      });
      return v.claims;
    } catch (err) {
      throw inFile(what, err);
    }
  };

  const verifiedStatements = new Set<string>();
  const statements = new Map<string, Uint8Array>();
  for (const name of receiptFiles) {
    const path = join(dir, name);
    let record;
    try {
      const text = new TextDecoder('utf-8', { fatal: true }).decode(await options.read(path, MAX_RECEIPT_FILE_BYTES, 'receipt file'));
      const json: unknown = JSON.parse(text);
      // A statement kept apart (statement-<sha256>.cbor, as AuditDirectory writes it): read once.
      const named = detachedStatementOf(json);
      let statement = named === undefined ? undefined : statements.get(named);
      if (named !== undefined && statement === undefined && names.includes(`statement-${named}.cbor`)) {
        statement = await options.read(join(dir, `statement-${named}.cbor`), MAX_EVIDENCE_FILE_BYTES, 'statement file');
        statements.set(named, statement);
      }
      record = receiptFromJson(json, statement);
    } catch (err) {
      throw inFile(path, err instanceof SyntaxError || err instanceof TypeError ? new CloisterError('MALFORMED', 'not a receipt JSON file', { cause: err }) : err);
    }
    const prefix = toHex(record.keyConfigDigest).slice(0, 16);
    const e = await evidenceFor(prefix, path);
    // checkReceipt also refuses an evidence file that holds another key config than the receipt names.
    try {
      checkReceipt(record, e.file.bundle.keyConfig);
    } catch (err) {
      throw inFile(path, err);
    }
    e.receipts++;
    if (record.replica !== undefined) {
      const key = toHex(record.replica.receiptKey);
      const r = e.replicas.get(key) ?? { n: 0, statement: record.replica.statement };
      r.n++;
      e.replicas.set(key, r);
      // Each distinct statement once (a replica re-attests every evidenceRefreshMs).
      if (options.policy !== undefined) {
        const seen = toHex(replicaStatementDigest(record.replica.statement));
        if (!verifiedStatements.has(seen)) {
          r.claims = await verify(decodeEvidenceFile(record.replica.statement), e.kc, `${path} (its replica statement)`);
          verifiedStatements.add(seen);
        }
      }
    }
  }
  const keyConfigs: KeyConfigCount[] = [];
  for (const [prefix, e] of evidence) {
    const claims = options.policy === undefined ? undefined : await verify(e.file, e.kc, join(dir, `evidence-${prefix}.cbor`));
    keyConfigs.push({
      keyConfigDigest: toHex(keyConfigDigest(e.file.bundle.keyConfig)),
      keyId: e.kc.keyId,
      platform: e.file.bundle.platform,
      fleet: e.kc.replicaReceipts === true,
      receipts: e.receipts,
      replicas: [...e.replicas].map(([receiptKey, r]) => ({
        receiptKey,
        receipts: r.n,
        platform: decodeEvidenceFile(r.statement).bundle.platform,
        ...(r.claims === undefined ? {} : { claims: r.claims }),
      })),
      ...(claims === undefined ? {} : { claims }),
    });
  }
  return { receipts: receiptFiles.length, policyChecked: options.policy !== undefined, keyConfigs };
}
