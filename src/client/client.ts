/**
 * The Cloister client SDK: verify, then seal.
 *
 * `connect()` fetches evidence (with a fresh random nonce by default) and verifies it with
 * `verifyEvidence` against the caller's policy and trusted roots: the hardware signature,
 * the measurements, the binding of the key config and nonce, the key config's validity and
 * the model digests the policy pins. Nothing is sealed or sent before that passes (fail
 * closed). Each request is then sealed to the attested HPKE key (chunked OHTTP); its
 * response is opened chunk by chunk, must end with the authenticated final chunk
 * (STREAM_TRUNCATED otherwise), and that chunk's receipt must verify under the attested
 * Ed25519 receipt key (RECEIPT_INVALID otherwise).
 *
 * Errors are CloisterError with a stable code. `detail.origin === 'server'` marks a code
 * the server reported (a plaintext transport error, or an error inside the sealed response).
 * KEY_STALE / UNKNOWN_KEY_ID from the server make the client re-fetch and re-verify
 * evidence, then retry the request once, and only when the freshly attested key differs from
 * the one the request was sealed to. Such an error arrives as a plaintext, unauthenticated
 * frame the host can forge after forwarding the request and dropping its answer: resending
 * to the same key would let the host run one request twice. The retry also carries the same
 * request id, so the server's replay window refuses it if the first copy did run.
 *
 * When the policy pins models, only those models are used: their digests are the only ones
 * verifyEvidence checked (POLICY_MISMATCH for any other, before anything is sealed).
 */
import { randomBytes } from 'node:crypto';
import { randomBytesPooled } from '../crypto/random.js';
import { CloisterError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import type { EvidenceBundle, Platform, VerificationReport } from '../core/types.js';
import { verifyEvidence } from '../verifier/verify.js';
import { encodeEvidenceFile } from '../verifier/evidence-file.js';
import type { TrustedRoots, VerifyEvidenceOptions } from '../verifier/verify.js';
import { parsePolicy } from '../verifier/policy.js';
import type { Policy } from '../verifier/policy.js';
import { keyConfigDigest, keyGenerationDigest, sealTargetFromKeyConfig } from '../protocol/key-config.js';
import type { KeyConfig } from '../protocol/key-config.js';
import { timingSafeEqualBytes } from '../crypto/ct.js';
import { CAPABILITIES, MAX_CLIENT_KEY_BYTES, RECEIPT_PROOF_CAPABILITY, RECEIPT_V2_CAPABILITY, REQUEST_SALT_LENGTH, isClientKey, verifyReceipt } from '../protocol/messages.js';
import { TreeHeadVerifier, decodeReceiptLeaf } from '../protocol/receipt-v2.js';
import type { InclusionProof } from '../protocol/receipt-v2.js';
import { ReceiptLogClient } from './log-proofs.js';
import { ReplicaStatements } from './replicas.js';
import { REPLICA_CAPABILITY } from '../protocol/replica.js';
import type { ReplicaRef } from '../protocol/replica.js';
import type { ReceiptV2ReaderContext, ReceiptV2Record } from '../protocol/response.js';
import type { SealedRequest } from '../protocol/messages.js';
import { sealRequest } from '../protocol/request.js';
import type { SealRequestOptions } from '../protocol/request.js';
import { SESSION_PROTOCOL_VERSION, SessionOpening } from '../protocol/session.js';
import type { ClientSession } from '../protocol/session.js';
import type { LabelScore, TokenEntity } from '../protocol/messages.js';
import { digestsOfReceiptMessage } from '../verifier/receipt.js';
import type { ReceiptRecord } from '../verifier/receipt.js';
import type { CborInput } from '../core/cbor.js';
import { AEAD_AES_128_GCM, AEAD_CHACHA20_POLY1305 } from '../crypto/hpke/suite.js';
import type { Operation } from '../inference/types.js';
import { HttpClientTransport } from './http-transport.js';
import type { ClientTransport, ExchangeKind, SealedExchange, TransportLimits } from './transport.js';
import { WsClientTransport } from './ws-transport.js';
import { startDeadline } from '../core/deadline.js';
import { targetOf } from './connection-error.js';

export interface ConnectOptions {
  /** The policy (parsed, or the JSON text of a policy file). Required: there is no default trust. */
  readonly policy: Policy | string;
  /** Roots to trust (simulated evidence needs its run's root here explicitly). */
  readonly trustedRoots?: TrustedRoots;
  /** A nonce of your own for the first evidence fetch (1..64 bytes). */
  readonly nonce?: Uint8Array;
  /**
   * Ask for evidence bound to a fresh random nonce (default true). With false and no
   * `nonce`, the server's cached evidence is accepted, fresh by its age bound only.
   */
  readonly requireFreshNonce?: boolean;
  /**
   * When the server refuses a nonce request with RATE_LIMITED (its budget of fresh
   * attestations is spent, e.g. by a burst from other clients behind the same address),
   * accept its cached evidence instead, only where that evidence carries its own time
   * (Nitro, simulated: fresh within the verifier's maximum age, 5 minutes by default) and
   * neither the policy (`nonceRequired`) nor a caller-supplied `nonce` demands one. Default
   * true; false fails with RATE_LIMITED.
   */
  readonly nonceFallback?: boolean;
  /** AEAD for requests. Default AES-128-GCM. */
  readonly aead?: 'aes-128-gcm' | 'chacha20-poly1305';
  /** Transport limits (message size, flow control, connect deadline). */
  readonly transport?: TransportLimits;
  /** Deadline for each request, from send to final chunk. Default 120 s. */
  readonly requestTimeoutMs?: number;
  /**
   * Extra platform verifier inputs: SEV-SNP VCEK, Nitro document limits, TDX collateral (a
   * file's bytes, or `pcs: new PcsCollateralFetcher({ baseUrl })` to fetch it yourself, with
   * `ignoreEvidenceCollateral: true` to prefer it over what the server attached).
   */
  readonly verify?: Pick<VerifyEvidenceOptions, 'sevSnp' | 'nitro' | 'tdx' | 'gpu'>;
  /**
   * WebSocket only: how a lost connection (server idle timeout, restart, network blip) is
   * healed. The next request reconnects with bounded exponential backoff, fetches FRESH
   * evidence (a new random nonce) and verifies it against the same policy and roots before
   * anything is sent; a server that no longer satisfies the policy is refused (its code, e.g.
   * POLICY_MISMATCH, and nothing sent). `false`: no reconnect, every later request fails.
   */
  readonly reconnect?: ReconnectOptions | false;
  /** Connection events (content-free: codes, counts, timing, key id, measurements), e.g. for a log. */
  readonly onEvent?: (event: ClientEvent) => void;
  /**
   * Pad requests to size buckets and ask the server to pad its response chunks (the `pad`
   * capability, PROTOCOL.md section 4, "Padding"), so that sizes on the wire do not tell
   * inputs or answers apart. Default true. Needs a server that knows `pad` (servers from
   * before it refuse a padded request, MALFORMED): set false for those.
   */
  readonly pad?: boolean;
  /**
   * Called with the verified receipt of every request this client completes (results or a
   * sealed error), before the request's iterator ends: keep it with `evidenceFile()` and an
   * auditor can check it offline (`checkReceipt`, `cloister receipt verify`). Content-free:
   * digests, key id, signature.
   */
  readonly onReceipt?: (receipt: ReceiptRecord) => void;
  /**
   * Client API key for a server that requires one (`cloister serve --client-keys`): sent
   * inside every sealed request, so only the attested TEE sees it (docs/PROTOCOL.md section 4
   * "Client API keys"). 1 to 256 printable ASCII characters. Default: none, the request
   * carries no `key` field (servers from before client keys refuse one as MALFORMED).
   */
  readonly apiKey?: string;
  /**
   * Protocol v2 sessions (PROTOCOL.md section 11): when the attested key config offers them,
   * the first request opens a session with one HPKE exchange (the server adds an ephemeral
   * share: forward secrecy against a later leak of its long-term key), and every request
   * after that costs only symmetric crypto. Default true; false: every request is a v1
   * one-shot exchange (unlinkable requests, e.g. through an OHTTP relay).
   */
  readonly sessions?: boolean;
  /**
   * Receipts v2 (docs/PROTOCOL.md section 12): every request carries a fresh 32-byte salt
   * and the `receipt2` capability; the server answers with a Merkle-log receipt leaf (salted
   * hashes, model, enforced policy, times, outcome) that the client checks against the
   * exchange it saw (RECEIPT_INVALID otherwise), and signs tree heads instead of every
   * response. Default: on when the attested key config offers protocol 2 (`protocols`), off
   * otherwise (v1 receipts, `onReceipt`). false: v1 receipts only. true: required; a server
   * whose attested key config does not offer protocol version 2 (from before receipts v2, or a
   * fleet) is refused before anything is sent: VERSION_UNSUPPORTED, detail.upgrade 'server'.
   */
  readonly receiptsV2?: boolean;
  /** With receiptsV2: ask for the inclusion proof to a signed tree head in-band (`receipt-proof`), verified once per head. Default false. */
  readonly receiptProofs?: boolean;
  /** With receiptsV2: each verified receipt (leaf, index, salt, proof): with `evidenceFile()`, an audit record (`encodeAuditRecord`). */
  readonly onReceiptV2?: (record: ReceiptV2Record) => void;
  /** Clock, for tests. */
  readonly now?: () => number;
}

/** The capabilities a client declares without padding (`ConnectOptions.pad: false`). */
const CAPABILITIES_NO_PAD: readonly string[] = CAPABILITIES.filter((c) => c !== 'pad');

export interface ReconnectOptions {
  /** Connection attempts per reconnect before the request fails with CONNECTION_FAILED. Default 5. */
  readonly maxAttempts?: number;
  /** Backoff before the second attempt; it doubles per attempt, with jitter (half of it random). Default 250 ms. */
  readonly initialDelayMs?: number;
  /** Largest backoff between two attempts. Default 5 000 ms. */
  readonly maxDelayMs?: number;
}

export const DEFAULT_RECONNECT: Required<ReconnectOptions> = Object.freeze({ maxAttempts: 5, initialDelayMs: 250, maxDelayMs: 5_000 });

/** What happened to the connection. No field carries request or response content. */
export type ClientEvent =
  | { readonly type: 'disconnected'; readonly target: string; readonly code: ErrorCode; readonly reason: string }
  | { readonly type: 'reconnecting'; readonly target: string; readonly attempt: number; readonly delayMs: number }
  | {
      readonly type: 'reconnected';
      readonly target: string;
      readonly attempts: number;
      readonly durationMs: number;
      readonly platform: Platform;
      readonly keyId: number;
      /** Whether the verified HPKE key differs from the one in use before (a restarted server). */
      readonly keyChanged: boolean;
      /** The verified measurements (hex; not secret), e.g. { PCR0: ... }. */
      readonly measurements: Readonly<Record<string, string>>;
    }
  | { readonly type: 'reconnect-failed'; readonly target: string; readonly attempts: number; readonly code: ErrorCode; readonly reason: string }
  /** A protocol v2 session was opened (PROTOCOL.md section 11). */
  | { readonly type: 'session-opened'; readonly target: string; readonly keyId: number };

export interface RequestOptions {
  readonly op: Operation;
  readonly model: string;
  readonly input: CborInput;
  readonly params?: { readonly [k: string]: CborInput };
  /** Ask the engine for incremental chunks. Default false. */
  readonly stream?: boolean;
  readonly signal?: AbortSignal;
  /** This request's verified receipt (in addition to ConnectOptions.onReceipt). */
  readonly onReceipt?: (receipt: ReceiptRecord) => void;
  /**
   * The server's `report` for this answer (output guard verdict, retrieval facts; no content),
   * delivered once the receipt that covers it verified.
   */
  readonly onReport?: (report: unknown) => void;
}

export interface ClassifyOptions {
  readonly model?: string;
  readonly topK?: number;
  readonly signal?: AbortSignal;
}


export type { LabelScore, TokenEntity };

export const DEFAULT_CLIENT_REQUEST_TIMEOUT_MS = 120_000;
/** A session is not used for a new request this close to its age or idle bound (the request could cross it). */
const SESSION_MARGIN_MS = 10_000;
/** After a server at its maxSessions refused a session, requests go one-shot this long before the next try. */
const SESSION_BACKOFF_MS = 5_000;

interface Attested {
  readonly keyConfig: KeyConfig;
  readonly report: VerificationReport;
  /** The verified evidence as received, and the nonce it was requested with (for evidenceFile()). */
  readonly bundle: EvidenceBundle;
  readonly nonce: Uint8Array | undefined;
}

/** An open session and the key config (object and exact bytes) it was opened under. */
interface SessionEntry {
  readonly s: ClientSession;
  readonly keyConfig: KeyConfig;
  readonly keyConfigBytes: Uint8Array;
  usedAt: number;
}

/** Per-attempt state: whether results reached the caller, and the key the request was sealed to. */
interface Attempt {
  started: boolean;
  sealedTo: KeyConfig | undefined;
}

/** Whether two key configs name the same HPKE key (same id and same public key). */
function sameHpkeKey(a: KeyConfig, b: KeyConfig): boolean {
  return a.keyId === b.keyId && timingSafeEqualBytes(a.hpkePublicKey, b.hpkePublicKey);
}

function isClassOutput(v: unknown): v is LabelScore[] {
  return Array.isArray(v) && v.every((e) => typeof e === 'object' && e !== null && typeof (e as LabelScore).label === 'string' && typeof (e as LabelScore).score === 'number');
}

/**
 * A text worth sending: a string, not empty (there is nothing to classify, and a model would
 * still answer with a guess), and well-formed Unicode (a lone surrogate has no UTF-8 form: it
 * would be sent as U+FFFD, a text the caller never wrote).
 */
export function checkText(text: unknown, what: string): asserts text is string {
  if (typeof text !== 'string') throw new CloisterError('INVALID_ARGUMENT', `${what} must be a string`);
  if (text.length === 0) throw new CloisterError('INVALID_ARGUMENT', `${what} is empty: there is no input to send`);
  if (!(text as string & { isWellFormed(): boolean }).isWellFormed()) {
    throw new CloisterError('INVALID_ARGUMENT', `${what} is not well-formed Unicode (a lone surrogate)`);
  }
}


function isTokenEntities(v: unknown): v is TokenEntity[] {
  return (
    Array.isArray(v) &&
    v.every((e) => {
      const t = e as TokenEntity;
      return typeof e === 'object' && e !== null && typeof t.entity === 'string' && typeof t.score === 'number' && typeof t.index === 'number' && typeof t.word === 'string';
    })
  );
}

function isEmbeddings(v: unknown): v is number[][] {
  return Array.isArray(v) && v.every((row) => Array.isArray(row) && row.every((x) => typeof x === 'number'));
}

export class CloisterClient {
  private attested: Attested;
  private refreshing: Promise<Attested> | undefined;
  private reconnecting: Promise<void> | undefined;
  private closed = false;
  /** The open session, the key config it was opened under, and when it was last used. */
  private session: SessionEntry | undefined;
  private opening: Promise<SessionEntry | undefined> | undefined;
  /** No session open is tried before this time (the server was at maxSessions). */
  private sessionBackoffUntil = 0;
  private readonly reconnectOptions: Required<ReconnectOptions> | false;
  /** Replica statements of a fleet, verified against the policy (per-replica receipts, src/client/replicas.ts). */
  private readonly replicas: ReplicaStatements;

  private constructor(
    private transport: ClientTransport,
    private readonly url: string,
    private readonly options: ConnectOptions,
    private readonly policy: Policy,
    attested: Attested,
  ) {
    this.attested = attested;
    this.reconnectOptions = options.reconnect === false ? false : reconnectOptionsOf(options.reconnect);
    const now = options.now ?? Date.now;
    // A statement is shared by every client of a replica: no nonce of ours can be in it (what
    // makes it trustworthy is the key it binds, held in that TEE only). The rest of the policy holds.
    const statementPolicy: Policy = { ...policy, nonceRequired: false };
    this.replicas = new ReplicaStatements(async (bundle) => {
      await verifyEvidence(bundle, {
        ...options.verify,
        policy: statementPolicy,
        ...(options.trustedRoots === undefined ? {} : { trustedRoots: options.trustedRoots }),
        at: new Date(now()),
      });
    }, now);
    this.watch(transport);
  }

  /** Connects, fetches and verifies evidence. Rejects (and sends nothing sealed) when verification fails. */
  static async connect(url: string, options: ConnectOptions): Promise<CloisterClient> {
    const policy = typeof options.policy === 'string' ? parsePolicy(options.policy) : options.policy;
    if (options.apiKey !== undefined && !isClientKey(options.apiKey)) {
      throw new CloisterError('INVALID_ARGUMENT', `apiKey must be 1 to ${MAX_CLIENT_KEY_BYTES} printable ASCII characters`);
    }
    if (options.reconnect !== undefined && options.reconnect !== false) reconnectOptionsOf(options.reconnect);
    // A v1-only client never asks for the v2 key config: a policy that requires v2 could only fail.
    if (!asksVersion2(options) && policy.requireProtocols?.includes(SESSION_PROTOCOL_VERSION) === true) {
      throw new CloisterError('CONFIG_INVALID', 'the policy requires protocol version 2 (protocols.require), and with sessions: false and without receiptsV2 the client asks for version 1 only');
    }
    const transport = await openTransport(url, options.transport);
    try {
      const attested = await attest(transport, options, policy, options.nonce);
      return new CloisterClient(transport, url, options, policy, attested);
    } catch (err) {
      await transport.close().catch(() => undefined);
      throw err;
    }
  }

  private emit(event: ClientEvent): void {
    try {
      this.options.onEvent?.(event);
    } catch {
      // a listener's failure is not the connection's
    }
  }

  /** Reports the end of a WebSocket connection (not of one this client closed). */
  private watch(transport: ClientTransport): void {
    if (!(transport instanceof WsClientTransport)) return;
    transport.onClose((err) => {
      if (!this.closed && this.transport === transport) this.emit({ type: 'disconnected', target: transport.target, code: err.code, reason: err.message });
    });
  }

  /**
   * A usable connection: when the WebSocket was lost, reconnect and re-verify first (one
   * reconnect at a time, shared by every request waiting for it). HTTP has no connection to keep.
   */
  private async connection(): Promise<void> {
    if (this.closed) throw new CloisterError('CONNECTION_FAILED', 'the client was closed', { detail: { sent: false } });
    const t = this.transport;
    if (!(t instanceof WsClientTransport) || t.closedWith === undefined) return;
    if (this.reconnectOptions === false) throw t.closedWith;
    this.reconnecting ??= this.reconnect(this.reconnectOptions).finally(() => {
      this.reconnecting = undefined;
    });
    await this.reconnecting;
  }

  private async reconnect(opts: Required<ReconnectOptions>): Promise<void> {
    const target = targetOf(this.url);
    const now = this.options.now ?? Date.now;
    const started = now();
    for (let attempt = 1; ; attempt++) {
      if (attempt > 1) {
        // Exponential backoff with jitter: half the step fixed, half random.
        const step = Math.min(opts.maxDelayMs, opts.initialDelayMs * 2 ** (attempt - 2));
        const delayMs = Math.round(step / 2 + Math.random() * (step / 2));
        this.emit({ type: 'reconnecting', target, attempt, delayMs });
        await new Promise((r) => setTimeout(r, delayMs));
      }
      if (this.closed) throw new CloisterError('CONNECTION_FAILED', 'the client was closed', { detail: { sent: false } });
      let transport: WsClientTransport | undefined;
      try {
        transport = await WsClientTransport.connect(this.url, this.options.transport);
        // Always fresh: a new random nonce, whatever requireFreshNonce says, against the same policy.
        const attested = await attest(transport, this.options, this.policy, new Uint8Array(randomBytes(32)));
        const before = this.attested.keyConfig;
        this.transport = transport;
        this.attested = attested;
        this.watch(transport);
        this.emit({
          type: 'reconnected',
          target,
          attempts: attempt,
          durationMs: Math.max(0, now() - started),
          platform: attested.keyConfig.platform,
          keyId: attested.keyConfig.keyId,
          keyChanged: !sameHpkeKey(before, attested.keyConfig),
          measurements: attested.report.claims?.measurements ?? {},
        });
        return;
      } catch (err) {
        await transport?.close().catch(() => undefined);
        const e = err instanceof CloisterError ? err : new CloisterError('CONNECTION_FAILED', undefined, { cause: err });
        // Only a failure to reach the server is worth another try; a verification failure is final (fail closed).
        const retry = (e.code === 'CONNECTION_FAILED' || e.code === 'OVERLOADED') && attempt < opts.maxAttempts;
        if (!retry) {
          this.emit({ type: 'reconnect-failed', target, attempts: attempt, code: e.code, reason: e.message });
          // Nothing was sent: the caller may try again later (the next request reconnects anew).
          throw new CloisterError(e.code, `reconnecting to ${target} failed after ${attempt} attempt(s): ${e.message}`, {
            cause: e,
            detail: { target, attempts: attempt, sent: false, stage: 'reconnect' },
          });
        }
      }
    }
  }

  /** The verified key config (what the TEE published and the evidence bound). */
  get keyConfig(): KeyConfig {
    return this.attested.keyConfig;
  }
  get platform(): Platform {
    return this.attested.keyConfig.platform;
  }
  get simulated(): boolean {
    return this.attested.report.simulated;
  }
  /** The per-step verification report of the evidence in use. */
  get report(): VerificationReport {
    return this.attested.report;
  }

  /**
   * The evidence in use as an evidence file (the format `cloister attest --out` writes): save
   * it, and anyone can verify it later with `cloister verify FILE` (src/verifier/evidence-file.ts).
   */
  evidenceFile(): Uint8Array {
    // Encoded once per verified evidence (an audit directory asks with every answer); a copy out.
    if (this.evidenceFileOf?.attested !== this.attested) {
      this.evidenceFileOf = { attested: this.attested, bytes: encodeEvidenceFile(this.attested.bundle, this.attested.nonce) };
    }
    return this.evidenceFileOf.bytes.slice();
  }
  private evidenceFileOf: { readonly attested: Attested; readonly bytes: Uint8Array } | undefined;

  /** Models listed in the attested key config that the policy lets us use (all of them when it pins none). */
  models(): readonly { name: string; task: string }[] {
    return this.attested.keyConfig.models.filter((m) => this.isPinned(m.name)).map((m) => ({ name: m.name, task: m.task }));
  }

  /** A policy without `models` accepts any model of the attested server; one with `models` only those it pins. */
  private isPinned(model: string): boolean {
    return this.policy.models === undefined || this.policy.models.has(model);
  }

  /** Re-fetches and re-verifies evidence (one at a time). */
  async refresh(): Promise<void> {
    await this.connection();
    this.refreshing ??= attest(this.transport, this.options, this.policy, undefined).finally(() => {
      this.refreshing = undefined;
    });
    this.attested = await this.refreshing;
  }

  private defaultModel(task: string, op: string): string {
    const forTask = this.attested.keyConfig.models.filter((x) => x.task === task);
    const m = forTask.find((x) => this.isPinned(x.name));
    if (m !== undefined) return m.name;
    if (forTask.length > 0) throw new CloisterError('POLICY_MISMATCH', `the policy pins none of the server's ${task} models for ${op}`);
    const served = this.attested.keyConfig.models.map((x) => `${x.name} (${x.task})`).join(', ') || 'none';
    throw new CloisterError('UNKNOWN_MODEL', `the server lists no ${task} model for ${op}; it serves ${served}`);
  }

  /** Classifies one text; labels sorted by score, highest first. */
  async classify(text: string, options: ClassifyOptions = {}): Promise<LabelScore[]> {
    checkText(text, 'text');
    const model = options.model ?? this.defaultModel('text-classification', 'classify');
    const out = await this.collectOne({
      op: 'classify',
      model,
      input: text,
      ...(options.topK === undefined ? {} : { params: { topK: options.topK } }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    if (!isClassOutput(out)) throw new CloisterError('PROTOCOL_VIOLATION', 'classification result has the wrong shape');
    return out;
  }

  /**
   * Tags the tokens of one text with a token-classification model (e.g. PHI detection): one
   * entry per token the model did not label "O", in text order. The server bounds the text
   * (maxInputChars, `serve --max-input-chars`, default 16 384 characters).
   */
  async classifyTokens(text: string, options: { model?: string; signal?: AbortSignal } = {}): Promise<TokenEntity[]> {
    checkText(text, 'text');
    const model = options.model ?? this.defaultModel('token-classification', 'token-classify');
    const out = await this.collectOne({ op: 'token-classify', model, input: text, ...(options.signal === undefined ? {} : { signal: options.signal }) });
    if (!isTokenEntities(out)) throw new CloisterError('PROTOCOL_VIOLATION', 'token-classification result has the wrong shape');
    return out;
  }

  /** One embedding per text. */
  async embed(texts: readonly string[], options: { model?: string; signal?: AbortSignal } = {}): Promise<number[][]> {
    if (!Array.isArray(texts) || texts.length === 0) throw new CloisterError('INVALID_ARGUMENT', 'texts must be a non-empty array of strings');
    texts.forEach((t, i) => checkText(t, `texts[${i}]`));
    const model = options.model ?? this.defaultModel('feature-extraction', 'embed');
    const out = await this.collectOne({ op: 'embed', model, input: [...texts], ...(options.signal === undefined ? {} : { signal: options.signal }) });
    if (!isEmbeddings(out) || out.length !== texts.length) throw new CloisterError('PROTOCOL_VIOLATION', 'embedding result has the wrong shape');
    return out;
  }

  private async collectOne(req: RequestOptions): Promise<unknown> {
    const chunks: unknown[] = [];
    for await (const c of this.request(req)) chunks.push(c);
    if (chunks.length !== 1) throw new CloisterError('PROTOCOL_VIOLATION', 'expected exactly one result chunk');
    return chunks[0];
  }

  /**
   * Sends one sealed request and yields the engine's result chunks as they are opened. The
   * iterator throws the request's error code (server codes carry detail.origin 'server').
   * A KEY_STALE / UNKNOWN_KEY_ID answer (sent before any data) triggers one refresh, and a
   * retry only when the refreshed, verified key config holds a different HPKE key than the
   * one the request was sealed to; otherwise that error is thrown and nothing is resent.
   * A model the attested key config serves but the policy does not pin is refused with
   * POLICY_MISMATCH before anything is sent; a name the key config does not list at all goes
   * to the server, which answers UNKNOWN_MODEL (no unchecked digest is involved).
   */
  async *request(req: RequestOptions): AsyncGenerator<unknown> {
    // One id for the request and its retry: should the host have delivered the first copy
    // after all, the server's replay window (DESIGN.md "Requests and responses") refuses the second.
    const id = randomBytesPooled(16);
    for (let attempt = 0; ; attempt++) {
      const state: Attempt = { started: false, sealedTo: undefined };
      try {
        // requestOnce yields the results of each opened piece together: one async step per
        // piece, not per result (a stream's results pass one async generator, not two).
        for await (const results of this.requestOnce(req, id, state)) {
          for (const result of results) yield result;
        }
        return;
      } catch (err) {
        // Provably never written to the socket (the connection was already gone): send it
        // once more over a new, re-verified connection (requestOnce reconnects first).
        const unsent = err instanceof CloisterError && err.code === 'CONNECTION_FAILED' && err.detail?.['sent'] === false && err.detail['stage'] !== 'reconnect';
        if (unsent && !state.started && attempt === 0 && !this.closed) continue;
        // A session ended (key rotation, its age or byte bound): the server said so inside the
        // sealed, authenticated answer, before running anything. Send it again in a new session.
        if (err instanceof CloisterError && err.code === 'SESSION_EXPIRED' && err.detail?.['sealed'] === true && !state.started && attempt < 2) continue;
        // SESSION_UNKNOWN: the server lost the session (a restart: then its key changed too).
        const stale = err instanceof CloisterError && (err.code === 'KEY_STALE' || err.code === 'UNKNOWN_KEY_ID' || err.code === 'SESSION_UNKNOWN') && err.detail?.['origin'] === 'server';
        if (!stale || state.started || attempt > 0 || state.sealedTo === undefined) throw err;
        await this.refresh();
        // The error frame is unauthenticated: only a key that really changed justifies resending.
        if (sameHpkeKey(state.sealedTo, this.attested.keyConfig)) {
          throw new CloisterError(err.code, 'the server reported a stale key, but the freshly attested key is the one the request used; not resending', {
            cause: err,
            detail: { origin: 'server' },
          });
        }
      }
    }
  }

  private async *requestOnce(req: RequestOptions, id: Uint8Array, state: Attempt): AsyncGenerator<readonly unknown[]> {
    const now = this.options.now ?? Date.now;
    await this.connection();
    if (this.attested.keyConfig.expiresAt * 1000 <= now()) await this.refresh();
    // verifyEvidence checked the digests of pinned models only: an unpinned served model is unverified.
    if (!this.isPinned(req.model) && this.attested.keyConfig.models.some((m) => m.name === req.model)) {
      throw new CloisterError('POLICY_MISMATCH', 'the policy does not pin this model');
    }
    const aeadId = (this.options.aead ?? 'aes-128-gcm') === 'aes-128-gcm' ? AEAD_AES_128_GCM : AEAD_CHACHA20_POLY1305;
    if (!this.attested.keyConfig.aeadIds.includes(aeadId)) throw new CloisterError('UNSUPPORTED_SUITE', 'the server does not offer this AEAD');
    // A session (opened under the key config it names), or undefined for a one-shot request.
    const entry = await this.sessionFor(aeadId, req.signal);
    const session = entry?.s;
    const keyConfig = entry?.keyConfig ?? this.attested.keyConfig;
    const keyConfigBytes = entry?.keyConfigBytes ?? this.attested.bundle.keyConfig;
    const pad = this.options.pad !== false;
    const v2 = this.receiptsV2For(keyConfig, req.model) ? this.receiptV2Context(keyConfig, req.model) : undefined;
    const baseCaps = pad ? CAPABILITIES : CAPABILITIES_NO_PAD;
    // A fleet (replicaReceipts): the replica that answers names itself; its receipt key signs.
    const replica = keyConfig.replicaReceipts === true ? this.replicas.check(keyConfig) : undefined;
    const known = replica?.known;
    const caps = [...baseCaps, ...(v2 === undefined ? [] : [RECEIPT_V2_CAPABILITY, ...(v2.requireProof ? [RECEIPT_PROOF_CAPABILITY] : [])]), ...(replica === undefined ? [] : [REPLICA_CAPABILITY])];
    const request: SealedRequest = {
      v: 1,
      op: req.op,
      model: req.model,
      input: req.input,
      ...(req.params === undefined ? {} : { params: req.params }),
      stream: req.stream ?? false,
      ts: now(),
      id,
      caps,
      ...(this.options.apiKey === undefined ? {} : { key: this.options.apiKey }),
      ...(v2 === undefined ? {} : { salt: v2.salt }),
      ...(known === undefined ? {} : { replicas: known }),
    };
    // With a replica, the receipt is handed out once the replica's statement verified (settle()).
    let pendingReceipt: ReceiptRecord | undefined;
    const readerOptions: SealRequestOptions = {
      pad,
      verify: (message, signature) => verifyReceipt(keyConfig.receiptPublicKey, message, signature),
      onReceipt: (message, signature) => {
        const record: ReceiptRecord = {
          version: 1,
          keyId: keyConfig.keyId,
          keyConfigDigest: keyConfigDigest(keyConfigBytes),
          ...digestsOfReceiptMessage(message),
          signature,
        };
        if (replica === undefined) this.deliverReceipt(req, record);
        else pendingReceipt = record;
      },
      ...(replica === undefined ? {} : { replica: (ref: ReplicaRef) => replica.resolve(ref) }),
      parseJson: parseJsonResult,
      ...(v2 === undefined ? {} : { receiptV2: v2 }),
      ...(this.options.onReceiptV2 === undefined ? {} : { onReceiptV2: this.options.onReceiptV2 }),
    };
    const { bytes, reader } = session === undefined ? sealRequest(sealTargetFromKeyConfig(keyConfig, aeadId), request, readerOptions) : session.seal(request, readerOptions);
    state.sealedTo = keyConfig;

    // The server's report (guard verdict, retrieval facts) once the receipt verified, before
    // the last results reach the caller.
    let reported = false;
    // Complete, and with a replica its statement verified: then the receipt, report and last results go out.
    let settled = replica === undefined;
    const settle = async (): Promise<void> => {
      if (settled || replica === undefined || !reader.complete) return;
      // An error answer from before the replica named itself: no receipt; the error is thrown below.
      if (!replica.named && reader.serverError !== undefined) {
        settled = true;
        return;
      }
      const named = await replica.settle();
      settled = true;
      if (pendingReceipt !== undefined) this.deliverReceipt(req, { ...pendingReceipt, replica: named });
    };
    const deliverReport = (): void => {
      if (reported || !reader.complete || !settled) return;
      reported = true;
      const report = reader.report;
      if (report === undefined) return;
      try {
        req.onReport?.(report);
      } catch {
        // A throwing callback must not fail a verified answer.
      }
    };
    const deadline = this.startExchange(bytes, req.signal, session === undefined ? 'req' : 'sreq');
    try {
      for await (const piece of deadline.exchange.pieces) {
        if (session !== undefined) session.bytes += piece.byteLength;
        const results = reader.push(piece);
        state.started = reader.started;
        if (!settled) await settle();
        deliverReport();
        if (results.length > 0) yield results;
      }
      const results = reader.finish();
      if (!settled) await settle();
      deliverReport();
      if (results.length > 0) yield results;
    } catch (err) {
      state.started ||= reader.started;
      // The server no longer holds the session (restart, idle bound): a plaintext answer the
      // host could forge, so the request is not resent unless the key changed (request()).
      if (session !== undefined && err instanceof CloisterError && err.code === 'SESSION_UNKNOWN') this.dropSession(session);
      if (deadline.timedOut && !(req.signal?.aborted ?? false)) throw new CloisterError('TIMEOUT', 'no complete response before the deadline', { cause: err });
      throw err;
    } finally {
      deadline.dispose();
    }
    if (reader.serverError !== undefined) {
      if (session !== undefined && reader.serverError.code === 'SESSION_EXPIRED') {
        this.dropSession(session);
        // Authenticated (sealed in the session): request() may send the request again.
        throw new CloisterError('SESSION_EXPIRED', reader.serverError.message, { cause: reader.serverError, detail: { origin: 'server', sealed: true } });
      }
      throw reader.serverError;
    }
  }

  private dropSession(s: ClientSession): void {
    if (this.session?.s === s) this.session = undefined;
  }

  /**
   * The session for the next request, opening one when there is none (or it is near its age,
   * byte or idle bound, or was opened under another key); undefined for a v1 one-shot
   * request (sessions off, not offered by the attested key config, or the server at its
   * maxSessions). Concurrent requests share one open.
   */
  private async sessionFor(aeadId: number, signal: AbortSignal | undefined): Promise<SessionEntry | undefined> {
    const keyConfig = this.attested.keyConfig;
    if (this.options.sessions === false || keyConfig.protocols?.includes(SESSION_PROTOCOL_VERSION) !== true) return undefined;
    const now = (this.options.now ?? Date.now)();
    const cur = this.session;
    if (cur !== undefined) {
      const idle = now - cur.usedAt >= cur.s.reply.idleS * 1000 - SESSION_MARGIN_MS;
      if (!idle && sameHpkeKey(cur.keyConfig, keyConfig) && cur.s.usable(now, 0, SESSION_MARGIN_MS)) {
        cur.usedAt = now;
        return cur;
      }
      this.session = undefined;
    }
    if (now < this.sessionBackoffUntil) return undefined;
    this.opening ??= this.openSession(aeadId, signal).finally(() => {
      this.opening = undefined;
    });
    return this.opening;
  }

  /**
   * Opens a session to the attested key. An open runs nothing on the server, so it may be sent
   * again: after KEY_STALE / UNKNOWN_KEY_ID (a rotation) the client re-attests and opens once
   * more with the new key, so no request fails for a rotation.
   */
  private async openSession(aeadId: number, signal: AbortSignal | undefined): Promise<SessionEntry | undefined> {
    const now = this.options.now ?? Date.now;
    for (let attempt = 0; ; attempt++) {
      const { keyConfig, bundle } = this.attested;
      const opening = new SessionOpening(sealTargetFromKeyConfig(keyConfig, aeadId));
      const deadline = this.startExchange(opening.bytes, signal, 'sopen');
      try {
        for await (const piece of deadline.exchange.pieces) opening.push(piece);
        const entry: SessionEntry = { s: opening.finish(now()), keyConfig, keyConfigBytes: bundle.keyConfig, usedAt: now() };
        this.session = entry;
        this.emit({ type: 'session-opened', target: targetOf(this.url), keyId: keyConfig.keyId });
        return entry;
      } catch (err) {
        const fromServer = err instanceof CloisterError && err.detail?.['origin'] === 'server';
        // At its maxSessions the server serves this request one-shot; no open is tried for a while.
        if (fromServer && err.code === 'OVERLOADED') {
          this.sessionBackoffUntil = now() + SESSION_BACKOFF_MS;
          return undefined;
        }
        if (fromServer && (err.code === 'KEY_STALE' || err.code === 'UNKNOWN_KEY_ID') && attempt === 0) {
          await this.refresh();
          if (!sameHpkeKey(keyConfig, this.attested.keyConfig)) continue;
        }
        if (deadline.timedOut && !(signal?.aborted ?? false)) throw new CloisterError('TIMEOUT', 'no session open answer before the deadline', { cause: err });
        throw err;
      } finally {
        deadline.dispose();
      }
    }
  }

  /**
   * Whether this request asks for receipts v2 (PROTOCOL.md section 12). `receiptsV2: false`:
   * never. `receiptsV2: true`: always, and a key config that does not offer protocol version 2
   * (a server from before receipts v2, or a fleet, whose logs would be per replica) is refused
   * before anything is sent. Default: when the key config offers protocol 2 (sessions and
   * receipts v2 came together) and lists the model (the leaf names its digest; another name
   * gets the server's UNKNOWN_MODEL under a v1 receipt), so a response costs no signature.
   */
  private receiptsV2For(keyConfig: KeyConfig, model: string): boolean {
    const offered = keyConfig.protocols?.includes(SESSION_PROTOCOL_VERSION) === true;
    const asked = this.options.receiptsV2;
    if (asked === false) return false;
    if (asked === true) {
      if (!offered) {
        throw new CloisterError('VERSION_UNSUPPORTED', `receipts v2 need a server whose attested key config offers protocol version 2; this one offers [${(keyConfig.protocols ?? [1]).join(', ')}]: upgrade the server, or connect without receiptsV2`, {
          detail: { upgrade: 'server', sent: false },
        });
      }
      return true;
    }
    return offered && keyConfig.models.some((m) => m.name === model);
  }

  /** Tree head verifiers per key config (one signature per head), bounded. */
  private readonly treeHeadVerifiers = new Map<string, TreeHeadVerifier>();

  private verifierFor(keyConfig: KeyConfig): { readonly digest: Uint8Array; readonly verifier: TreeHeadVerifier } {
    // The generation's digest: the same for the v1 and the v2 (sessions) form of its key config.
    const digest = keyGenerationDigest(keyConfig);
    const id = Buffer.from(digest).toString('hex');
    let verifier = this.treeHeadVerifiers.get(id);
    if (verifier === undefined) {
      if (this.treeHeadVerifiers.size >= 8) this.treeHeadVerifiers.clear();
      verifier = new TreeHeadVerifier(keyConfig.receiptPublicKey, digest);
      this.treeHeadVerifiers.set(id, verifier);
    }
    return { digest, verifier };
  }

  /**
   * The inclusion proof of a receipts-v2 record (one that came without it) to the server's
   * newest signed tree head, fetched from its log endpoint (`GET /v1/log/head`, `/v1/log/proof`,
   * over HTTP on the server's URL) and verified: the head under the attested receipt key, the
   * path to its root (RECEIPT_INVALID otherwise). NOT_FOUND while no head covers the leaf yet
   * (ask again after the server's treeHeadIntervalMs); INVALID_ARGUMENT for a record of a key
   * generation this client no longer holds. The result, with `evidenceFile()`, is an audit record.
   */
  async proofFor(record: ReceiptV2Record): Promise<ReceiptV2Record & { readonly proof: InclusionProof }> {
    const leafDigest = decodeReceiptLeaf(record.leaf).keyConfigDigest;
    const keyConfig = [this.attested.keyConfig, this.session?.keyConfig].find((kc) => kc !== undefined && timingSafeEqualBytes(keyGenerationDigest(kc), leafDigest));
    if (keyConfig === undefined) throw new CloisterError('INVALID_ARGUMENT', 'the record is from a key generation this client no longer holds (keep proofs of old generations with the log endpoint and `cloister audit export --server`)');
    const log = new ReceiptLogClient(this.url, keyConfig, { verifier: this.verifierFor(keyConfig).verifier, ...(this.options.transport === undefined ? {} : { limits: this.options.transport }) });
    return { ...record, proof: await log.prove(record.leaf, record.index) };
  }

  private receiptV2Context(keyConfig: KeyConfig, model: string): ReceiptV2ReaderContext {
    const served = keyConfig.models.find((m) => m.name === model);
    if (served === undefined) throw new CloisterError('UNKNOWN_MODEL', 'receipts v2 name a model the key config lists; this one is not listed');
    const { digest, verifier } = this.verifierFor(keyConfig);
    return { salt: new Uint8Array(randomBytes(REQUEST_SALT_LENGTH)), keyConfigDigest: digest, model: { name: served.name, digest: served.digest }, verifier, requireProof: this.options.receiptProofs === true };
  }

  private deliverReceipt(req: RequestOptions, record: ReceiptRecord): void {
    for (const cb of [this.options.onReceipt, req.onReceipt]) {
      try {
        cb?.(record);
      } catch {
        // a listener's failure is not the request's
      }
    }
  }

  /**
   * Sends `sealed` under the request deadline. Over WebSocket without a caller's signal, the
   * deadline's timer cancels the exchange directly; otherwise (a caller's signal, or HTTP,
   * whose fetch needs one) a deadline signal joins the caller's and the deadline.
   */
  private startExchange(sealed: Uint8Array, signal: AbortSignal | undefined, kind: ExchangeKind): ExchangeDeadline {
    const ms = this.options.requestTimeoutMs ?? DEFAULT_CLIENT_REQUEST_TIMEOUT_MS;
    if (signal === undefined && this.transport instanceof WsClientTransport) return timedExchange(this.transport, sealed, ms, kind);
    const deadline = startDeadline(ms, signal);
    return {
      exchange: this.transport.exchange(sealed, deadline.signal, kind),
      get timedOut() {
        return deadline.timedOut;
      },
      dispose: () => deadline.dispose(),
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.reconnecting?.catch(() => undefined);
    await this.transport.close();
  }
}

function reconnectOptionsOf(o: ReconnectOptions | undefined): Required<ReconnectOptions> {
  const out = { ...DEFAULT_RECONNECT, ...o };
  for (const [k, v] of Object.entries(out)) {
    if (!Number.isSafeInteger(v) || v < (k === 'maxAttempts' ? 1 : 0)) throw new CloisterError('CONFIG_INVALID', `reconnect.${k} must be a ${k === 'maxAttempts' ? 'positive' : 'non-negative'} integer`);
  }
  return out;
}

/** One exchange and the deadline that bounds it. */
interface ExchangeDeadline {
  readonly exchange: SealedExchange;
  /** True once the deadline itself fired (not a caller's signal). */
  readonly timedOut: boolean;
  dispose(): void;
}

/** A WebSocket exchange cancelled by a plain (unref'd) timer at the deadline. */
function timedExchange(transport: WsClientTransport, sealed: Uint8Array, ms: number, kind: ExchangeKind): ExchangeDeadline {
  if (!Number.isFinite(ms) || ms <= 0) throw new RangeError('deadline must be a positive number of milliseconds');
  const exchange = transport.cancellableExchange(sealed, kind);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    exchange.cancel(new CloisterError('CANCELLED', 'request deadline passed'));
  }, ms);
  timer.unref();
  return {
    exchange,
    get timedOut() {
      return timedOut;
    },
    dispose: () => clearTimeout(timer),
  };
}

/** One `json` chunk item: JSON text that must parse (MALFORMED otherwise, without the text). */
function parseJsonResult(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new CloisterError('MALFORMED', 'json chunk item is not valid JSON', { detail: { field: 'items' } });
  }
}

async function openTransport(url: string, limits: TransportLimits | undefined): Promise<ClientTransport> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (cause) {
    throw new CloisterError('INVALID_ARGUMENT', 'not a URL', { cause });
  }
  switch (parsed.protocol) {
    case 'ws:':
    case 'wss:':
    case 'ws+unix:':
      return WsClientTransport.connect(url, limits);
    case 'http:':
    case 'https:':
      return new HttpClientTransport(url, limits);
    default:
      throw new CloisterError('INVALID_ARGUMENT', 'URL must be ws://, wss://, ws+unix:, http:// or https://');
  }
}

/** Whether the client asks for the version-2 key config: for sessions, or for receipts v2 (which need a server that offers 2). */
function asksVersion2(options: ConnectOptions): boolean {
  return options.sessions !== false || options.receiptsV2 === true;
}

async function attest(transport: ClientTransport, options: ConnectOptions, policy: Policy, nonce: Uint8Array | undefined): Promise<Attested> {
  const useNonce = nonce ?? (options.requireFreshNonce === false && !policy.nonceRequired ? undefined : new Uint8Array(randomBytes(32)));
  if (useNonce !== undefined && (useNonce.byteLength < 1 || useNonce.byteLength > 64)) {
    throw new CloisterError('INVALID_ARGUMENT', 'nonce must be 1..64 bytes');
  }
  let bundle: EvidenceBundle;
  let boundNonce = useNonce;
  // Ask for the key config that offers sessions (version 2); a server from before them
  // refuses the field (MALFORMED) before any attestation: ask again as a v1 client.
  const v2 = asksVersion2(options);
  const fetchEvidence = async (n: Uint8Array | undefined): Promise<EvidenceBundle> => {
    if (!v2) return transport.fetchEvidence(n);
    try {
      return await transport.fetchEvidence(n, SESSION_PROTOCOL_VERSION);
    } catch (err) {
      if (!(err instanceof CloisterError && err.code === 'MALFORMED' && err.detail?.['origin'] === 'server')) throw err;
      return transport.fetchEvidence(n);
    }
  };
  try {
    bundle = await fetchEvidence(useNonce);
  } catch (err) {
    const mayFallBack = err instanceof CloisterError && err.code === 'RATE_LIMITED' && useNonce !== undefined && options.nonce === undefined
      && options.nonceFallback !== false && !policy.nonceRequired;
    if (!mayFallBack) throw err;
    const cached = await fetchEvidence(undefined);
    // Only evidence that carries its own time can stand in for a nonce (its age is then bounded).
    if (cached.platform !== 'nitro' && cached.platform !== 'simulated') throw err;
    bundle = cached;
    boundNonce = undefined;
  }
  const now = options.now ?? Date.now;
  const verified = await verifyEvidence(bundle, {
    ...options.verify,
    policy,
    ...(options.trustedRoots === undefined ? {} : { trustedRoots: options.trustedRoots }),
    ...(boundNonce === undefined ? {} : { nonce: boundNonce }),
    at: new Date(now()),
  });
  return { keyConfig: verified.keyConfig, report: verified.report, bundle, nonce: boundNonce };
}

/** Connects to a Cloister server and verifies it (see CloisterClient.connect). */
export function connect(url: string, options: ConnectOptions): Promise<CloisterClient> {
  return CloisterClient.connect(url, options);
}
