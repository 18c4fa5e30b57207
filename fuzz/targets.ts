/**
 * The fuzz targets: every decoder that reads bytes from the untrusted side, the openers of
 * sealed data, the SSE parser, the attestation parsers and verifier, and the native crypto
 * boundary. Each target says what it must never do:
 *
 * - crash: throw anything but a CloisterError (a TypeError or RangeError is a parser bug);
 * - accept a mutant: open, verify or decode a damaged input into something other than the
 *   seed (sealed data and signed evidence must reject every change; strict decoders must
 *   accept only the one canonical encoding, checked by re-encoding what they returned);
 * - disagree with a reference: the native AEAD against node:crypto, the SSE parser fed in
 *   pieces against the same bytes fed at once.
 *
 * Seeds come from the project's own encoders and from the real vectors (test/helpers/vectors).
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import fc from 'fast-check';
import { CloisterError } from '../src/errors.js';
import { decodeCbor, encodeCbor } from '../src/core/cbor.js';
import type { CborInput } from '../src/core/cbor.js';
import { decodeWireMessage, encodeWireMessage } from '../src/protocol/wire.js';
import type { WireMessage } from '../src/protocol/wire.js';
import {
  ChunkedRequestOpener,
  createChunkedRequestSealer,
  DEFAULT_CHUNKED_LIMITS,
  decodeKeyConfig,
  decodeResponseChunk,
  decodeSealedRequest,
  encodeKeyConfig,
  encodeResponseChunk,
  encodeSealedRequest,
  openChunkedRequest,
  padChunkPlaintext,
  sealChunkedRequest,
} from '../src/protocol/index.js';
import type { KeyConfig, ResponseChunk, SealedRequest } from '../src/protocol/index.js';
import { HpkeRecipientKey, suiteFromIds } from '../src/crypto/index.js';
import { SseParser } from '../src/inference/upstream/sse.js';
import type { SseEvent } from '../src/inference/upstream/sse.js';
import { decodeCoseSign1 } from '../src/verifier/nitro/cose.js';
import { parseNitroDocument } from '../src/verifier/nitro/document.js';
import { verifyNitroDocument } from '../src/verifier/nitro/verify.js';
import { parseSnpReport } from '../src/verifier/sev-snp/report.js';
import { sevSnpPolicy, verifySevSnpEvidence } from '../src/verifier/sev-snp/index.js';
import { parseTdxQuote } from '../src/verifier/tdx/quote.js';
import { loadNativeCrypto, NATIVE_AEAD_AES_128_GCM, NATIVE_AEAD_AES_256_GCM, NATIVE_AEAD_CHACHA20_POLY1305 } from '../src/native/crypto.js';
import { readVector, readVectorJson } from '../test/helpers/vectors.js';
import { equalBytes, mutatedInputs } from './mutate.js';
import type { MutatedInput } from './mutate.js';

/** A property violation: what went wrong and the input, as hex, to reproduce it. */
export class FuzzFailure extends Error {
  override readonly name = 'FuzzFailure';
}

export type TargetKind = 'decoder' | 'opener' | 'verifier' | 'differential';

export interface FuzzTarget {
  readonly name: string;
  readonly kind: TargetKind;
  /** What the target reads, for the report. */
  readonly describe: string;
  /** Runs of a full campaign (`npm run fuzz`); the CI smoke run uses far fewer. */
  readonly fullRuns: number;
  /** Vector files the seeds need; a missing one makes the target unavailable (a failure under CI=true). */
  readonly vectors: readonly string[];
  /** Built lazily: seeds may read vectors and generate keys. */
  property(): FuzzProperty;
}

/** A fast-check property (sync, or async for verifiers that are) with its input type erased, so targets can sit in one list. */
export type FuzzProperty = fc.IProperty<[unknown]> | fc.IAsyncProperty<[unknown]>;

function erase<T extends unknown[]>(p: fc.IProperty<T> | fc.IAsyncProperty<T>): FuzzProperty {
  return p as unknown as FuzzProperty;
}

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

/** Run `fn`; a CloisterError is a rejection (fine), anything else is a crash. */
function rejectsCleanly<T>(what: string, input: Uint8Array, fn: () => T): { ok: true; value: T } | { ok: false } {
  try {
    return { ok: true, value: fn() };
  } catch (err) {
    if (err instanceof CloisterError) return { ok: false };
    throw new FuzzFailure(`${what} crashed with ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)} on ${hex(input)}`);
  }
}

function acceptedMutant(what: string, m: MutatedInput): FuzzFailure {
  return new FuzzFailure(`${what} accepted a mutant (seed ${m.seedIndex}, ${m.mutations.length} mutations): ${hex(m.bytes)}`);
}

/** Decoder target whose valid outputs must re-encode to exactly the input (one encoding per value). */
function canonicalDecoder<T>(
  name: string,
  describe: string,
  seeds: () => Uint8Array[],
  decode: (b: Uint8Array) => T,
  encode: (v: T) => Uint8Array,
): FuzzTarget {
  return {
    name,
    kind: 'decoder',
    describe,
    fullRuns: 1_000_000,
    vectors: [],
    property() {
      const s = seeds();
      return erase(fc.property(mutatedInputs(s), (m) => {
        const r = rejectsCleanly(name, m.bytes, () => decode(m.bytes));
        if (!r.ok) return;
        const again = rejectsCleanly(`${name} re-encode`, m.bytes, () => encode(r.value));
        if (!again.ok) throw new FuzzFailure(`${name}: decoded value does not re-encode: ${hex(m.bytes)}`);
        if (!equalBytes(again.value, m.bytes)) {
          throw new FuzzFailure(`${name}: accepted a non-canonical encoding ${hex(m.bytes)} (canonical ${hex(again.value)})`);
        }
      }));
    },
  };
}

/** Decoder target that must only reject cleanly (no canonical form to compare with). */
function plainDecoder(name: string, describe: string, vectors: readonly string[], seeds: () => Uint8Array[], decode: (b: Uint8Array) => unknown, fullRuns = 1_000_000): FuzzTarget {
  return {
    name,
    kind: 'decoder',
    describe,
    fullRuns,
    vectors,
    property() {
      const s = seeds();
      return erase(fc.property(mutatedInputs(s, { maxRandomLength: 2048 }), (m) => {
        rejectsCleanly(name, m.bytes, () => decode(m.bytes));
      }));
    },
  };
}

// --- Seeds from the project's own encoders ----------------------------------------------------

const FIXED_KEY = new Uint8Array(32).fill(0x42);
const recipient = (): HpkeRecipientKey => HpkeRecipientKey.fromPrivateKey(FIXED_KEY);

function sampleKeyConfig(publicKey: Uint8Array): KeyConfig {
  return {
    version: 1,
    keyId: 7,
    kemId: 0x20,
    kdfId: 1,
    aeadIds: [1, 3],
    hpkePublicKey: publicKey,
    receiptPublicKey: new Uint8Array(32).fill(5),
    models: [
      { name: 'classifier', task: 'text-classification', digest: new Uint8Array(32).fill(7) },
      { name: 'embedder', task: 'feature-extraction', digest: new Uint8Array(32).fill(8) },
    ],
    configDigest: new Uint8Array(32).fill(9),
    platform: 'simulated',
    notBefore: 1_700_000_000,
    expiresAt: 1_700_086_400,
    engine: { kind: 'onnx', model: 'classifier' },
  };
}

function sampleRequests(): SealedRequest[] {
  const id = new Uint8Array(16).fill(3);
  return [
    { v: 1, op: 'classify', model: 'classifier', input: 'chest pain radiating to the left arm', stream: false, ts: 1_700_000_000_123, id },
    { v: 1, op: 'embed', model: 'embedder', input: ['note one', 'note two', ''], stream: false, ts: 0, id },
    {
      v: 1,
      op: 'chat',
      model: 'llm',
      input: { messages: [{ role: 'user', content: 'hello' }], temperature: 0.25, max_tokens: 16 },
      params: { top_p: 0.5, n: 1, stop: ['\n'] },
      stream: true,
      ts: 2 ** 40,
      id,
    },
  ] as SealedRequest[];
}

function sampleChunks(): ResponseChunk[] {
  return [
    { t: 'data', data: [{ label: 'cardiology', score: 0.98 }, { label: 'neurology', score: 0.01 }] },
    { t: 'items', items: ['a', { b: 1 }, [1.5, -2]] },
    { t: 'json', items: ['{"choices":[{"delta":{"content":"x"}}]}', '[]'] },
    { t: 'error', code: 'UNKNOWN_MODEL', message: 'no such model' },
    { t: 'end', receipt: new Uint8Array(64).fill(1) },
    { t: 'end', data: { usage: { prompt_tokens: 3 } }, receipt: new Uint8Array(64).fill(2) },
  ];
}

function sampleWire(): WireMessage[] {
  return [
    { t: 'evidence-req' },
    { t: 'evidence-req', nonce: new Uint8Array(32).fill(1) },
    { t: 'evidence', bundle: { platform: 'simulated', evidence: new Uint8Array(40).fill(2), keyConfig: new Uint8Array(20).fill(3) } },
    { t: 'evidence', bundle: { platform: 'sev-snp', evidence: new Uint8Array(64).fill(2), keyConfig: new Uint8Array(20).fill(3), certificates: new Uint8Array(10) } },
    { t: 'req', sid: 1, body: new Uint8Array(50).fill(4) },
    { t: 'res', sid: 0xffff_ffff, body: new Uint8Array(30).fill(5), fin: true },
    { t: 'cancel', sid: 10 },
    { t: 'err', sid: 11, code: 'OVERLOADED' },
    { t: 'err', code: 'RATE_LIMITED' },
  ];
}

function cborSeeds(): Uint8Array[] {
  const values: CborInput[] = [
    0, 23, 24, 255, 256, 65_535, 65_536, 2 ** 32, 2 ** 53 - 1, -1, -25, -(2 ** 53 - 1), '', 'a', 'héllo ✓', new Uint8Array(0), new Uint8Array(30).fill(9),
    true, false, null, [], [1, [2, [3, [4]]]], new Map<number, CborInput>([[1, 'x'], [2, 'y'], [10, new Map([[1, 2]])]]), { a: 1, b: [true, null], cc: 'text' },
  ];
  return [
    ...values.map((v) => encodeCbor(v)),
    encodeKeyConfig(sampleKeyConfig(new Uint8Array(32).fill(1))),
    ...sampleWire().map(encodeWireMessage),
  ];
}

// --- Targets ----------------------------------------------------------------------------------

const NITRO_DOCS = ['nitro/nitro_base_nov2024.cbor', 'nitro/nitro_blocky_may2024.cbor', 'nitro/nitro_blocky_sept2024.cbor', 'nitro/nitro_uid2core_apr2021_debug.cbor'];
const SNP_REPORTS = ['sev-snp/snp_virtee_milan_report.bin', 'sev-snp/snp_gosevguest_milan_report.bin', 'sev-snp/snp_tinfoil_genoa_report.bin'];
const TDX_QUOTES = ['tdx/tdx_gotdxguest_v5_quote.bin', 'tdx/tdx_gotdxguest_spr_e4_quote.bin', 'tdx/tdx_phala_v4_quote.bin', 'tdx/tdx_nearai_quote.bin'];

function nitroPayloads(): Uint8Array[] {
  return NITRO_DOCS.map((f) => decodeCoseSign1(readVector(f)).payload);
}

const cborStrict = canonicalDecoder('cbor', 'CBOR decoder, strict deterministic mode (key configs, sealed messages)', cborSeeds, (b) => decodeCbor(b), (v) => encodeCbor(v));

const cborRelaxed = plainDecoder(
  'cbor-relaxed',
  'CBOR decoder in the relaxed mode used for Nitro documents (indefinite lengths, tags, floats, bigint)',
  [],
  cborSeeds,
  (b) => decodeCbor(b, { requireCanonical: false, allowIndefinite: true, allowTags: true, allowFloats: true, allowBigInt: true }),
);

const wire: FuzzTarget = {
  name: 'wire',
  kind: 'decoder',
  describe: 'transport frames (WebSocket messages, HTTP evidence and error bodies)',
  fullRuns: 1_000_000,
  vectors: [],
  property() {
    const seeds = sampleWire().map(encodeWireMessage);
    return erase(fc.property(mutatedInputs(seeds), (m) => {
      const r = rejectsCleanly('wire', m.bytes, () => decodeWireMessage(m.bytes));
      if (!r.ok) return;
      // Frames need not be canonical (map key order is free), but what was decoded must
      // survive a round trip unchanged: no field is half-read.
      const again = decodeWireMessage(encodeWireMessage(r.value));
      if (JSON.stringify(again, replacer) !== JSON.stringify(r.value, replacer)) throw new FuzzFailure(`wire: round trip changed ${hex(m.bytes)}`);
    }));
  },
};

function replacer(_k: string, v: unknown): unknown {
  return v instanceof Uint8Array ? `bytes:${hex(v)}` : v;
}

/**
 * A decoded inner message with the length of its zero `pad` field (PROTOCOL.md section 4,
 * "Padding"), which the decoders check and drop: re-encoding puts the same pad back, so an
 * accepted padded mutant must still be the one canonical encoding.
 */
interface Padded<T> {
  readonly value: T;
  readonly pad: number | undefined;
}
function padOf(bytes: Uint8Array): number | undefined {
  const m = decodeCbor(bytes, { allowFloats: true });
  const pad = m instanceof Map ? m.get('pad') : undefined;
  return pad instanceof Uint8Array ? pad.byteLength : undefined;
}
function withPad(encoded: Uint8Array, pad: number | undefined): Uint8Array {
  if (pad === undefined) return encoded;
  const m = decodeCbor(encoded, { allowFloats: true }) as Map<string, CborInput>;
  return encodeCbor(new Map([...m, ['pad', new Uint8Array(pad)]]));
}

const sealedRequestMessage = canonicalDecoder<Padded<SealedRequest>>(
  'sealed-request',
  'inner sealed request message (after decryption)',
  () => [...sampleRequests().map((r) => encodeSealedRequest(r)), ...sampleRequests().map((r) => encodeSealedRequest(r, { pad: true }))],
  (b) => ({ value: decodeSealedRequest(b), pad: padOf(b) }),
  (v) => withPad(encodeSealedRequest(v.value), v.pad),
);

const responseChunkMessage = canonicalDecoder<Padded<ResponseChunk>>(
  'response-chunk',
  'inner response chunk message (after decryption)',
  () => [...sampleChunks().map(encodeResponseChunk), ...sampleChunks().map((c) => padChunkPlaintext(encodeResponseChunk(c)))],
  (b) => ({ value: decodeResponseChunk(b), pad: padOf(b) }),
  (v) => withPad(encodeResponseChunk(v.value), v.pad),
);

const keyConfig = canonicalDecoder(
  'key-config',
  'key config (published by the server, bound into the evidence)',
  () => [encodeKeyConfig(sampleKeyConfig(recipient().publicKey)), encodeKeyConfig({ ...sampleKeyConfig(new Uint8Array(32).fill(1)), models: [], aeadIds: [1] })],
  (b) => decodeKeyConfig(b),
  encodeKeyConfig,
);

const chunkedRequestOpener: FuzzTarget = {
  name: 'chunked-request',
  kind: 'opener',
  describe: 'server-side opener of sealed (chunked OHTTP) requests: every change must be refused',
  fullRuns: 1_000_000,
  vectors: [],
  property() {
    const key = recipient();
    const suite = suiteFromIds(0x20, 1, 1);
    const target = { keyId: 7, publicKey: key.publicKey, suite };
    const lookup = (id: number): HpkeRecipientKey => {
      if (id !== 7) throw new CloisterError('UNKNOWN_KEY_ID');
      return key;
    };
    const seeds = [
      sealChunkedRequest(target, new TextEncoder().encode('a sealed request body'), { ephemeralPrivateKey: new Uint8Array(32).fill(0x11) }).bytes,
      sealChunkedRequest(target, new Uint8Array(100).fill(0x61), { chunkSize: 30, ephemeralPrivateKey: new Uint8Array(32).fill(0x12) }).bytes,
      sealChunkedRequest({ ...target, suite: suiteFromIds(0x20, 1, 3) }, new Uint8Array(0), { ephemeralPrivateKey: new Uint8Array(32).fill(0x13) }).bytes,
    ];
    return erase(fc.property(mutatedInputs(seeds), (m) => {
      const r = rejectsCleanly('chunked-request', m.bytes, () => openChunkedRequest(lookup, m.bytes));
      if (r.ok && !m.unchanged) throw acceptedMutant('chunked-request', m);
    }));
  },
};

const chunkedResponseOpener: FuzzTarget = {
  name: 'chunked-response',
  kind: 'opener',
  describe: 'client-side opener of sealed response streams: changes refused, truncation never complete',
  fullRuns: 1_000_000,
  vectors: [],
  property() {
    const key = recipient();
    const target = { keyId: 7, publicKey: key.publicKey, suite: suiteFromIds(0x20, 1, 1) };
    const eph = new Uint8Array(32).fill(0x21);
    // One fixed exchange (pinned ephemeral key and response nonce) gives the same response
    // bytes every time, so each run opens them with a fresh opener of the same request.
    const s = createChunkedRequestSealer(target, { ephemeralPrivateKey: eph });
    const body = concatAll([s.header, s.sealFinal(new TextEncoder().encode('request'))]);
    const server = new ChunkedRequestOpener(() => key, DEFAULT_CHUNKED_LIMITS);
    server.push(body);
    server.finish();
    const sealer = server.response({ responseNonce: new Uint8Array(16).fill(0x31) });
    const response = concatAll([
      sealer.start(),
      sealer.sealChunk(new TextEncoder().encode('first chunk')),
      sealer.sealChunk(new Uint8Array(40).fill(0x62)),
      sealer.sealFinal(new TextEncoder().encode('end')),
    ]);
    return erase(fc.property(mutatedInputs([response]), (m) => {
      const opener = createChunkedRequestSealer(target, { ephemeralPrivateKey: eph }).response;
      const r = rejectsCleanly('chunked-response', m.bytes, () => {
        opener.push(m.bytes);
        opener.finish();
        return opener.complete;
      });
      if (r.ok && r.value && !m.unchanged) throw acceptedMutant('chunked-response', m);
    }));
  },
};

function concatAll(parts: readonly Uint8Array[]): Uint8Array {
  return Uint8Array.from(Buffer.concat(parts));
}

const sse: FuzzTarget = {
  name: 'sse',
  kind: 'differential',
  describe: 'SSE parser of upstream engine streams: the same bytes fed in any split give the same events or the same rejection',
  fullRuns: 1_000_000,
  vectors: [],
  property() {
    const enc = new TextEncoder();
    const seeds = [
      enc.encode('data: {"choices":[{"delta":{"content":"Hel"}}]}\n\ndata: {"choices":[{"delta":{"content":"lo"}}]}\n\ndata: [DONE]\n\n'),
      enc.encode(': comment\r\nevent: x\r\nid: 7\r\ndata: a\r\ndata: b\r\n\r\nretry: 10\n\n'),
      enc.encode('\uFEFFdata:no space\rdata:  two\r\r'),
    ];
    const splits = fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 6 });
    return erase(fc.property(mutatedInputs(seeds), splits, (m, cuts) => {
      const whole = parseSse(m.bytes, []);
      const pieces = parseSse(m.bytes, cuts.map((c) => Math.floor((c / 0x10000) * (m.bytes.byteLength + 1))));
      if (JSON.stringify(whole) !== JSON.stringify(pieces)) {
        throw new FuzzFailure(`sse: split parse differs (${JSON.stringify(whole)} vs ${JSON.stringify(pieces)}) on ${hex(m.bytes)} cut at ${cuts.join(',')}`);
      }
    }));
  },
};

/** Parse `bytes` cut at `cuts`; the events, or the rejection code. Crashes propagate. */
function parseSse(bytes: Uint8Array, cuts: number[]): { events: SseEvent[] } | { code: string } {
  const p = new SseParser({ maxEventBytes: 4096 });
  const events: SseEvent[] = [];
  const points = [...new Set(cuts)].sort((a, b) => a - b);
  let from = 0;
  try {
    for (const at of [...points, bytes.byteLength]) {
      events.push(...p.push(bytes.subarray(from, at)));
      from = at;
    }
    return { events };
  } catch (err) {
    if (err instanceof CloisterError) return { code: err.code };
    throw new FuzzFailure(`sse crashed with ${String(err)} on ${hex(bytes)}`);
  }
}

const nitroEnvelope = plainDecoder('nitro-cose', 'Nitro COSE_Sign1 envelope (real AWS documents)', NITRO_DOCS, () => NITRO_DOCS.map(readVector), (b) => decodeCoseSign1(b));

const nitroDocument = plainDecoder('nitro-document', 'Nitro attestation document payload (real AWS documents)', NITRO_DOCS, nitroPayloads, (b) => parseNitroDocument(b));

const nitroVerify: FuzzTarget = {
  name: 'nitro-verify',
  kind: 'verifier',
  describe: 'Nitro verifier (chain to the AWS root, ES384 signature) on damaged real documents: none may verify',
  // Each run checks a P-384 chain and signature (milliseconds), so a full run is smaller.
  fullRuns: 5_000,
  vectors: [...NITRO_DOCS, ...NITRO_DOCS.map((f) => f.replace(/\.cbor$/, '.json'))],
  property() {
    const docs = NITRO_DOCS.slice(0, 3);
    const at = docs.map((f) => new Date(readVectorJson<{ timestamp_ms: number }>(f.replace(/\.cbor$/, '.json')).timestamp_ms));
    const seeds = docs.map(readVector);
    return erase(fc.property(mutatedInputs(seeds, { randomWeight: 0 }), (m) => {
      const report = verifyNitroDocument(m.bytes, { at: at[m.seedIndex] ?? new Date() });
      const internal = report.steps.find((s) => s.code === 'INTERNAL');
      if (internal !== undefined) throw new FuzzFailure(`nitro-verify: step ${internal.step} crashed (INTERNAL) on ${hex(m.bytes)}`);
      if (report.ok && !m.unchanged) throw acceptedMutant('nitro-verify', m);
    }));
  },
};

const snpReport = plainDecoder('snp-report', 'SEV-SNP attestation report (real reports)', SNP_REPORTS, () => SNP_REPORTS.map(readVector), (b) => parseSnpReport(b));

const snpVerify: FuzzTarget = {
  name: 'snp-verify',
  kind: 'verifier',
  describe: 'SEV-SNP verifier (VCEK signature, TCB, policy, report data) on damaged real reports: none may verify',
  // Each run checks a P-384 signature (about a millisecond), so a full run is smaller.
  fullRuns: 20_000,
  vectors: ['sev-snp/snp_virtee_milan_report.bin', 'sev-snp/snp_virtee_milan_vcek.der'],
  property() {
    const seed = readVector('sev-snp/snp_virtee_milan_report.bin');
    const vcek = readVector('sev-snp/snp_virtee_milan_vcek.der');
    const original = parseSnpReport(seed);
    const options = { policy: sevSnpPolicy({ measurements: [original.measurement] }), vcek, at: new Date('2024-06-01T00:00:00Z'), expectedReportData: original.reportData };
    return erase(
      fc.asyncProperty(mutatedInputs([seed], { randomWeight: 0 }), async (m) => {
        const report = await verifySevSnpEvidence({ platform: 'sev-snp', evidence: m.bytes, keyConfig: new Uint8Array([1]) }, options);
        const internal = report.steps.find((s) => s.code === 'INTERNAL');
        if (internal !== undefined) throw new FuzzFailure(`snp-verify: step ${internal.step} crashed (INTERNAL) on ${hex(m.bytes)}`);
        if (report.ok && !m.unchanged) throw acceptedMutant('snp-verify', m);
      }),
    );
  },
};

const tdxQuote = plainDecoder('tdx-quote', 'TDX DCAP quote v4/v5 (real quotes)', TDX_QUOTES, () => TDX_QUOTES.map(readVector), (b) => parseTdxQuote(b));

const NODE_CIPHER = { [NATIVE_AEAD_AES_128_GCM]: 'aes-128-gcm', [NATIVE_AEAD_AES_256_GCM]: 'aes-256-gcm', [NATIVE_AEAD_CHACHA20_POLY1305]: 'chacha20-poly1305' } as const;
const KEY_LENGTH = { [NATIVE_AEAD_AES_128_GCM]: 16, [NATIVE_AEAD_AES_256_GCM]: 32, [NATIVE_AEAD_CHACHA20_POLY1305]: 32 } as const;

function nodeSeal(alg: 0 | 1 | 2, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, pt: Uint8Array): Uint8Array {
  const c = createCipheriv(NODE_CIPHER[alg] as 'aes-128-gcm', key, nonce, { authTagLength: 16 });
  c.setAAD(aad, { plaintextLength: pt.byteLength });
  return Uint8Array.from(Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]));
}

function nodeOpen(alg: 0 | 1 | 2, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, ct: Uint8Array): Uint8Array | undefined {
  if (ct.byteLength < 16) return undefined;
  try {
    const d = createDecipheriv(NODE_CIPHER[alg] as 'aes-128-gcm', key, nonce, { authTagLength: 16 });
    d.setAuthTag(ct.subarray(ct.byteLength - 16));
    d.setAAD(aad, { plaintextLength: ct.byteLength - 16 });
    return Uint8Array.from(Buffer.concat([d.update(ct.subarray(0, ct.byteLength - 16)), d.final()]));
  } catch {
    return undefined;
  }
}

const nativeAead: FuzzTarget = {
  name: 'native-aead',
  kind: 'differential',
  describe: 'native addon AEADs (C, OpenSSL) against node:crypto: same ciphertexts, same refusals, no crash on bad lengths',
  fullRuns: 1_000_000,
  vectors: [],
  property() {
    const loaded = loadNativeCrypto();
    if (loaded.crypto === undefined) throw new FuzzFailure(`native addon unavailable: ${loaded.reason}`);
    const n = loaded.crypto;
    const input = fc.record({
      alg: fc.constantFrom(0 as const, 1 as const, 2 as const),
      keyDelta: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -16, max: 16 }) }),
      nonceLength: fc.oneof({ weight: 8, arbitrary: fc.constant(12) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 40 }) }),
      seed: fc.uint8Array({ minLength: 64, maxLength: 64 }),
      aad: fc.uint8Array({ maxLength: 64 }),
      pt: fc.uint8Array({ maxLength: 600 }),
      flip: fc.option(fc.nat(), { nil: undefined }),
    });
    return erase(fc.property(input, (x) => {
      const keyLength = Math.max(0, KEY_LENGTH[x.alg] + x.keyDelta);
      const key = x.seed.slice(0, Math.min(keyLength, 64));
      const nonce = x.seed.slice(64 - Math.min(x.nonceLength, 64));
      const validShape = key.byteLength === KEY_LENGTH[x.alg] && nonce.byteLength === 12;
      let sealed: Uint8Array;
      try {
        sealed = n.aeadSeal(x.alg, key, nonce, x.aad, x.pt);
      } catch (err) {
        if (validShape) throw new FuzzFailure(`native-aead: seal refused a valid input (${String(err)})`);
        if (typeof (err as { code?: unknown }).code !== 'string') throw new FuzzFailure(`native-aead: seal threw an uncoded error ${String(err)}`);
        return;
      }
      if (!validShape) throw new FuzzFailure(`native-aead: seal accepted key ${key.byteLength} B, nonce ${nonce.byteLength} B`);
      const reference = nodeSeal(x.alg, key, nonce, x.aad, x.pt);
      if (!equalBytes(sealed, reference)) throw new FuzzFailure(`native-aead: ciphertext differs from node:crypto (alg ${x.alg})`);
      const ct = sealed.slice();
      if (x.flip !== undefined) ct[x.flip % ct.byteLength] = (ct[x.flip % ct.byteLength] ?? 0) ^ 0x01;
      let opened: Uint8Array | undefined;
      try {
        opened = n.aeadOpen(x.alg, key, nonce, x.aad, ct);
      } catch (err) {
        if (typeof (err as { code?: unknown }).code !== 'string') throw new FuzzFailure(`native-aead: open threw an uncoded error ${String(err)}`);
        opened = undefined;
      }
      const expected = nodeOpen(x.alg, key, nonce, x.aad, ct);
      if ((opened === undefined) !== (expected === undefined) || (opened !== undefined && expected !== undefined && !equalBytes(opened, expected))) {
        throw new FuzzFailure(`native-aead: open disagrees with node:crypto (alg ${x.alg}, flip ${String(x.flip)})`);
      }
      if (x.flip !== undefined && opened !== undefined) throw new FuzzFailure('native-aead: opened a modified ciphertext');
    }));
  },
};

/** Every target, in report order. */
export const TARGETS: readonly FuzzTarget[] = [
  cborStrict,
  cborRelaxed,
  wire,
  keyConfig,
  sealedRequestMessage,
  responseChunkMessage,
  chunkedRequestOpener,
  chunkedResponseOpener,
  sse,
  nitroEnvelope,
  nitroDocument,
  nitroVerify,
  snpReport,
  snpVerify,
  tdxQuote,
  nativeAead,
];

