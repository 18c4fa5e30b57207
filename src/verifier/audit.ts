/**
 * Offline verification of an audit bundle (audit-bundle.ts; docs/PROTOCOL.md
 * section 12): an auditor needs the bundle and the vendor roots, nothing else. In order:
 *
 *   decode -> evidence -> tree-heads -> consistency -> receipts -> content (optional)
 *
 * - evidence: the evidence file's evidence under the pinned vendor root (AWS Nitro, AMD,
 *   Intel; a simulated root only when given explicitly), binding exactly the bundled key
 *   config (and nonce), at the time of the earliest receipt. With a policy, the full client
 *   pipeline (verifyEvidence: measurements, models, TCB); without one, every check but the
 *   measurement comparison runs and the measurements are reported for the auditor to compare.
 * - tree-heads: each signed by the key config's receipt key, for that key config.
 * - consistency: each head's log is a prefix of the next one's (RFC 9162 consistency proofs).
 * - receipts: each leaf is for that key config, serves a model the key config lists with its
 *   digest, lies within the key config's validity and before its head, commits to the bundled
 *   salt, and is included in its head (RFC 9162 inclusion proof); a bundled session link
 *   (session salt, sequence number) must open the leaf's session commitment, and groups the
 *   receipts by session (one sequence number once per session).
 * - content: given the request plaintext and the response chunk plaintexts, their salted
 *   hashes equal the leaf's (the response is the one received).
 *
 * Every failure is a CloisterError naming the step; nothing is partially trusted.
 */
import { CloisterError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { decodeEvidenceFile } from './evidence-file.js';
import { nitroBindingFor } from '../protocol/binding.js';
import { verifyNitroDocument } from './nitro/verify.js';
import { inspectSevSnpEvidence, inspectTdxEvidence } from './inspect.js';
import { KEY_CONFIG_CLOCK_SKEW_SECONDS, verifyEvidence } from './verify.js';
import type { Policy } from './policy.js';
import type { Platform, VerificationReport, VerifiedClaims } from '../core/types.js';
import type { CertificateInput } from './x509/certificate.js';
import { timingSafeEqualBytes } from '../crypto/ct.js';
import { decodeKeyConfig, keyGenerationDigest } from '../protocol/key-config.js';
import type { KeyConfig } from '../protocol/key-config.js';
import { merkleLeafHash, verifyConsistency, verifyInclusion } from '../protocol/merkle.js';
import { decodeAuditBundle } from './audit-bundle.js';
import {
  TreeHeadVerifier,
  decodeReceiptLeaf,
  decodeSignedTreeHead,
  saltCommitment,
  saltedRequestHash,
  sessionCommitment,
  saltedResponseHash,
} from '../protocol/receipt-v2.js';
import type { ReceiptLeaf, TreeHead } from '../protocol/receipt-v2.js';

export interface AuditContent {
  /** The exact request plaintext (the sealed request's CBOR) of the receipt at `index`. */
  readonly index: number;
  readonly request?: Uint8Array;
  /** The response chunk plaintexts before the final chunk, in order. */
  readonly response?: readonly Uint8Array[];
}

export interface VerifyAuditOptions {
  /** A client policy: measurements, models and TCB are then enforced as a client would. */
  readonly policy?: Policy;
  /** Roots for simulated evidence (never trusted without one); Nitro's default is the AWS root. */
  readonly simulatedRoots?: readonly CertificateInput[];
  /** Verify the evidence as of this time. Default: the earliest receipt's receivedAt. */
  readonly at?: Date;
  /** Content to check against the receipts' salted hashes. */
  readonly content?: readonly AuditContent[];
}

export interface AuditedReceipt {
  readonly index: number;
  readonly leaf: ReceiptLeaf;
  /** The tree head its inclusion proof leads to. */
  readonly head: TreeHead;
  /** Whether the request / response content was given and matched. */
  readonly requestChecked: boolean;
  readonly responseChecked: boolean;
  /**
   * The session the request came in: `group` numbers the distinct sessions of the bundle
   * (1, 2, ...; receipts with one group came from one session), `seq` the request's sequence
   * number in it. 'undisclosed': the leaf names a session, the bundle holds no link to it.
   */
  readonly session?: { readonly group: number; readonly seq: number } | 'undisclosed';
}

export interface AuditReport {
  readonly platform: Platform;
  readonly simulated: boolean;
  /** Whether a policy compared the measurements (else they are reported only). */
  readonly policyChecked: boolean;
  readonly claims: VerifiedClaims;
  readonly evidenceSteps: VerificationReport['steps'];
  readonly keyConfig: KeyConfig;
  readonly keyConfigDigest: Uint8Array;
  readonly heads: readonly TreeHead[];
  readonly receipts: readonly AuditedReceipt[];
}

/** A failed audit step: `step` names it; the code is the underlying check's. */
export class AuditVerificationError extends CloisterError {
  readonly step: string;
  constructor(code: ErrorCode, step: string, message: string, cause?: unknown) {
    super(code, `audit ${step}: ${message}`, { detail: { step }, ...(cause === undefined ? {} : { cause }) });
    this.name = 'AuditVerificationError';
    this.step = step;
  }
}

function fail(step: string, code: ErrorCode, message: string, cause?: unknown): never {
  throw new AuditVerificationError(code, step, message, cause);
}

function stage<T>(step: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof AuditVerificationError) throw err;
    if (err instanceof CloisterError) fail(step, err.code, err.message, err);
    fail(step, 'INTERNAL', err instanceof Error ? err.message : 'unknown', err);
  }
}

function failedStep(report: VerificationReport): never {
  const f = report.steps.find((s) => !s.ok);
  fail('evidence', f?.code ?? 'INTERNAL', `${f?.step ?? 'verification'}: ${f?.detail ?? 'failed'}`);
}

/** Evidence checks with the binding always enforced and measurements reported, not compared. */
async function inspectEvidence(
  platform: Platform,
  evidence: Uint8Array,
  kcBytes: Uint8Array,
  kc: KeyConfig,
  extra: { readonly certificates?: Uint8Array; readonly collateral?: Uint8Array; readonly nonce?: Uint8Array },
  options: VerifyAuditOptions,
  at: Date,
): Promise<VerificationReport> {
  switch (platform) {
    case 'nitro':
    case 'simulated': {
      if (platform === 'simulated' && (options.simulatedRoots === undefined || options.simulatedRoots.length === 0)) {
        fail('evidence', 'ROOT_UNTRUSTED', 'the bundle holds SIMULATED evidence: give the simulated root explicitly (--root) to check it');
      }
      return verifyNitroDocument(evidence, {
        platform,
        at,
        // The document is produced once per key generation: it may be as old as the generation.
        maxAgeMs: (kc.expiresAt - kc.notBefore) * 1000 + KEY_CONFIG_CLOCK_SKEW_SECONDS * 1000,
        ...(platform === 'simulated' ? { trustedRoots: options.simulatedRoots } : {}),
        binding: nitroBindingFor(kcBytes, kc.hpkePublicKey, extra.nonce),
      });
    }
    case 'sev-snp':
      return inspectSevSnpEvidence(
        { platform, evidence, keyConfig: kcBytes, ...(extra.certificates === undefined ? {} : { certificates: extra.certificates }) },
        { at, binding: { kind: 'key-config', ...(extra.nonce === undefined ? {} : { nonce: extra.nonce }) } },
      );
    case 'tdx':
      return inspectTdxEvidence(
        { platform, evidence, keyConfig: kcBytes, ...(extra.collateral === undefined ? {} : { collateral: extra.collateral }) },
        { at, binding: { kind: 'key-config', ...(extra.nonce === undefined ? {} : { nonce: extra.nonce }) } },
      );
  }
}

/** Verifies an encoded audit bundle offline; throws AuditVerificationError at the first failed step. */
export async function verifyAuditBundle(bytes: Uint8Array, options: VerifyAuditOptions = {}): Promise<AuditReport> {
  const bundle = stage('decode', () => decodeAuditBundle(bytes));
  const file = stage('decode', () => decodeEvidenceFile(bundle.evidence));
  const kcBytes = file.bundle.keyConfig;
  const kc = stage('decode', () => decodeKeyConfig(kcBytes));
  const kcDigest = keyGenerationDigest(kc);
  const leaves = bundle.entries.map((e) => stage('decode', () => decodeReceiptLeaf(e.leaf)));
  const earliest = Math.min(...leaves.map((l) => l.receivedAt));
  const at = options.at ?? new Date(earliest);

  // --- evidence ------------------------------------------------------------------------------
  const platform = file.bundle.platform;
  let report: VerificationReport;
  if (options.policy !== undefined) {
    try {
      const verified = await verifyEvidence(file.bundle, {
        policy: options.policy,
        at,
        ...(file.nonce === undefined ? {} : { nonce: file.nonce }),
        ...(options.simulatedRoots === undefined ? {} : { trustedRoots: { simulated: options.simulatedRoots } }),
        nitro: { maxAgeMs: (kc.expiresAt - kc.notBefore) * 1000 + KEY_CONFIG_CLOCK_SKEW_SECONDS * 1000 },
      });
      report = verified.report;
    } catch (err) {
      if (err instanceof CloisterError) fail('evidence', err.code, err.message, err);
      throw err;
    }
  } else {
    try {
      report = await inspectEvidence(platform, file.bundle.evidence, kcBytes, kc, {
        ...(file.bundle.certificates === undefined ? {} : { certificates: file.bundle.certificates }),
        ...(file.bundle.collateral === undefined ? {} : { collateral: file.bundle.collateral }),
        ...(file.nonce === undefined ? {} : { nonce: file.nonce }),
      }, options, at);
    } catch (err) {
      if (err instanceof AuditVerificationError) throw err;
      if (err instanceof CloisterError) fail('evidence', err.code, err.message, err);
      throw err;
    }
  }
  if (!report.ok) failedStep(report);
  const claims = report.claims;
  if (claims === undefined) fail('evidence', 'INTERNAL', 'the verifier returned no claims');
  if (claims.platform !== platform || kc.platform !== platform) fail('evidence', 'BINDING_MISMATCH', `key config names platform ${kc.platform}, evidence is ${platform}`);

  // --- tree heads and consistency --------------------------------------------------------------
  const verifier = new TreeHeadVerifier(kc.receiptPublicKey, kcDigest, { maxCached: bundle.heads.length });
  const heads = bundle.heads.map((h) => stage('tree-heads', () => verifier.verify(decodeSignedTreeHead(h))));
  for (const [i, proof] of bundle.consistency.entries()) {
    const a = heads[i] as TreeHead;
    const b = heads[i + 1] as TreeHead;
    if (!verifyConsistency(a.treeSize, b.treeSize, a.rootHash, b.rootHash, proof)) {
      fail('consistency', 'RECEIPT_INVALID', `the log of size ${a.treeSize} is not a prefix of the log of size ${b.treeSize}: the server showed inconsistent logs`);
    }
    if (b.timestamp < a.timestamp) fail('consistency', 'RECEIPT_INVALID', `the head of size ${b.treeSize} is dated before the head of size ${a.treeSize}`);
  }

  // --- receipts ---------------------------------------------------------------------------------
  const validFrom = (kc.notBefore - KEY_CONFIG_CLOCK_SKEW_SECONDS) * 1000;
  const validUntil = kc.expiresAt * 1000;
  const sessionGroups = new Map<string, { readonly n: number; readonly seqs: Set<number> }>();
  const receipts: AuditedReceipt[] = bundle.entries.map((e, i) => {
    const leaf = leaves[i] as ReceiptLeaf;
    const head = heads[e.head] as TreeHead;
    const step = `receipt ${e.index}`;
    const reject = (why: string): never => fail(step, 'RECEIPT_INVALID', why);
    if (!timingSafeEqualBytes(leaf.keyConfigDigest, kcDigest)) reject('the leaf names another key config than the evidence binds');
    const model = kc.models.find((m) => m.name === leaf.model.name);
    if (model === undefined || !timingSafeEqualBytes(model.digest, leaf.model.digest)) reject(`the leaf names model ${leaf.model.name} with a digest the key config does not list`);
    if (leaf.receivedAt < validFrom || leaf.completedAt > validUntil) reject('the leaf lies outside the key config\'s validity');
    if (leaf.completedAt > head.timestamp) reject(`the leaf completed after its tree head was signed`);
    if (!timingSafeEqualBytes(leaf.saltCommitment, saltCommitment(e.salt))) reject('the bundled salt is not the one the leaf commits to');
    if (!verifyInclusion(e.index, head.treeSize, merkleLeafHash(e.leaf), e.path, head.rootHash)) reject(`the inclusion proof does not lead to the signed tree head of size ${head.treeSize}`);
    let session: AuditedReceipt['session'];
    if (e.session !== undefined) {
      if (leaf.session === undefined || !timingSafeEqualBytes(leaf.session, sessionCommitment(e.session.salt, e.session.seq))) reject('the bundled session link is not the one the leaf commits to');
      const key = Buffer.from(e.session.salt).toString('hex');
      let group = sessionGroups.get(key);
      if (group === undefined) {
        group = { n: sessionGroups.size + 1, seqs: new Set() };
        sessionGroups.set(key, group);
      }
      if (group.seqs.has(e.session.seq)) reject(`two receipts of one session with sequence number ${e.session.seq}`);
      group.seqs.add(e.session.seq);
      session = { group: group.n, seq: e.session.seq };
    } else if (leaf.session !== undefined) {
      session = 'undisclosed';
    }
    const content = options.content?.find((c) => c.index === e.index);
    const requestChecked = content?.request !== undefined;
    const responseChecked = content?.response !== undefined;
    if (content?.request !== undefined && !timingSafeEqualBytes(saltedRequestHash(e.salt, content.request), leaf.requestHash)) reject('the request given is not the one this receipt is for');
    if (content?.response !== undefined && !timingSafeEqualBytes(saltedResponseHash(e.salt, content.response), leaf.responseHash)) reject('the response given is not the one this receipt is for');
    return { index: e.index, leaf, head, requestChecked, responseChecked, ...(session === undefined ? {} : { session }) };
  });
  for (const c of options.content ?? []) {
    if (!bundle.entries.some((e) => e.index === c.index)) fail('content', 'INVALID_ARGUMENT', `no receipt with index ${c.index} in the bundle`);
  }
  return { platform, simulated: platform === 'simulated', policyChecked: options.policy !== undefined, claims, evidenceSteps: report.steps, keyConfig: kc, keyConfigDigest: kcDigest, heads, receipts };
}
