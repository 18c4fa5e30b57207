/**
 * The cost of padding to size buckets (PROTOCOL.md section 4, "Padding"): bytes on the wire
 * and CPU per response chunk and per request, padded against unpadded, for representative
 * results. No server, no network: the project's own encoders and AES-128-GCM sealers.
 *
 *   npx tsc -p tsconfig.bench.json && node build/bench/bench/padding.js [iterations]
 */
import { generateX25519KeyPair, HpkeRecipientKey, suiteFromIds } from '../src/crypto/index.js';
import { openChunkedRequest, sealChunkedRequest } from '../src/protocol/chunked.js';
import { decodeResponseChunk, encodeResponseChunk, encodeSealedRequest, padChunkPlaintext } from '../src/protocol/messages.js';
import type { ResponseChunk } from '../src/protocol/messages.js';
import { describeMachine, machineInfo } from './lib/machine.js';

const iterations = Number(process.argv[2] ?? 5_000);
const suite = suiteFromIds(0x20, 1, 1);
const kp = generateX25519KeyPair();
const key = HpkeRecipientKey.fromPrivateKey(kp.privateKey);
const target = { keyId: 5, publicKey: kp.publicKey, suite };

/** A fresh response sealer (and the client's opener) for one exchange. */
function exchange(): ReturnType<typeof openChunkedRequest>['response'] {
  const sealed = sealChunkedRequest(target, new Uint8Array(10));
  const sealer = openChunkedRequest(() => key, sealed.bytes).response;
  sealer.start();
  return sealer;
}

const label = (name: string, score: number): { label: string; score: number } => ({ label: name, score });
const CHUNKS: { readonly name: string; readonly chunk: ResponseChunk }[] = [
  { name: 'classify answer (demo, top 1)', chunk: { t: 'data', data: [label('gastroenterology', 0.8123456789)] } },
  { name: 'classify answer (4 labels)', chunk: { t: 'data', data: ['neurology', 'cardiology', 'gastroenterology', 'orthopedics'].map((l, i) => label(l, 0.1 * i + 0.01234)) } },
  { name: 'stream token (json chunk)', chunk: { t: 'json', items: ['{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" the"}}]}'] } },
  { name: 'error chunk', chunk: { t: 'error', code: 'REPLAY', message: 'request replayed or outside the replay window' } },
  { name: 'embedding (384 floats)', chunk: { t: 'data', data: [Array.from({ length: 384 }, (_, i) => Math.sin(i) / 3)] } },
  { name: 'generation, 16 KiB text', chunk: { t: 'data', data: 'x'.repeat(16_000) } },
  { name: 'batch result, 1 MiB text', chunk: { t: 'data', data: 'y'.repeat(1_000_000) } },
];

function nsPerOp(fn: () => void, n: number): number {
  for (let i = 0; i < Math.min(n, 200); i++) fn();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fn();
  return Number(process.hrtime.bigint() - t0) / n;
}

const ROUNDS = 7;
/** ns per op of `a` and `b`, ROUNDS rounds alternating, the fastest round of each (shared, noisy machines). */
function compare(a: () => void, b: () => void, n: number): [number, number] {
  let ta = Infinity;
  let tb = Infinity;
  for (let r = 0; r < ROUNDS; r++) {
    ta = Math.min(ta, nsPerOp(a, n));
    tb = Math.min(tb, nsPerOp(b, n));
  }
  return [ta, tb];
}

console.log(`padding cost, ${iterations} iterations per small row (fewer for large ones), fastest of ${ROUNDS} alternating rounds`);
console.log(`machine: ${describeMachine(machineInfo())}`);
console.log('');
console.log('response chunk                  | plain B | padded B | sealed plain->padded B (+%)  | seal+encode ns plain -> padded (+%) | decode ns plain -> padded');
for (const { name, chunk } of CHUNKS) {
  const plain = encodeResponseChunk(chunk);
  const padded = padChunkPlaintext(plain);
  const sealer = exchange();
  const n = plain.byteLength > 100_000 ? Math.max(20, Math.round(iterations / 500)) : plain.byteLength > 10_000 ? Math.round(iterations / 10) : iterations;
  const sealedPlain = sealer.sealChunk(plain).byteLength;
  const sealedPadded = sealer.sealChunk(padded).byteLength;
  const [tPlain, tPadded] = compare(() => void sealer.sealChunk(encodeResponseChunk(chunk)), () => void sealer.sealChunk(padChunkPlaintext(encodeResponseChunk(chunk))), n);
  const [dPlain, dPadded] = compare(() => void decodeResponseChunk(plain), () => void decodeResponseChunk(padded), n);
  const pct = (a: number, b: number): string => `${(((b - a) / a) * 100).toFixed(1)}%`;
  console.log(
    `${name.padEnd(31)} | ${String(plain.byteLength).padStart(7)} | ${String(padded.byteLength).padStart(8)} | ${`${sealedPlain} -> ${sealedPadded} (+${pct(sealedPlain, sealedPadded)})`.padEnd(28)} | ${`${tPlain.toFixed(0)} -> ${tPadded.toFixed(0)} (+${pct(tPlain, tPadded)})`.padEnd(35)} | ${dPlain.toFixed(0)} -> ${dPadded.toFixed(0)}`,
  );
}

console.log('');
console.log('request (classify, one note)    | plain B | padded B | encode+seal ns plain -> padded');
for (const len of [80, 1_000, 10_000]) {
  const r = { v: 1 as const, op: 'classify' as const, model: 'classifier', input: 'n'.repeat(len), stream: false, ts: Date.now(), id: new Uint8Array(16).fill(7) };
  const plain = encodeSealedRequest(r).byteLength;
  const padded = encodeSealedRequest(r, { pad: true }).byteLength;
  const n = Math.max(20, Math.round(iterations / 20));
  const [tPlain, tPadded] = compare(() => void sealChunkedRequest(target, encodeSealedRequest(r)), () => void sealChunkedRequest(target, encodeSealedRequest(r, { pad: true })), n);
  console.log(`input of ${String(len).padEnd(22)} | ${String(plain).padStart(7)} | ${String(padded).padStart(8)} | ${tPlain.toFixed(0)} -> ${tPadded.toFixed(0)}`);
}
