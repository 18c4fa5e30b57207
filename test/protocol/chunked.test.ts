import { describe, expect, it } from 'vitest';
import { CloisterError } from '../../src/errors.js';
import { generateX25519KeyPair, HpkeRecipientKey, suiteFromIds } from '../../src/crypto/index.js';
import type { HpkeSuite } from '../../src/crypto/index.js';
import {
  ChunkedRequestOpener,
  createChunkedRequestSealer,
  DEFAULT_CHUNKED_LIMITS,
  maxSealedRequestLength,
  openChunkedRequest,
  sealChunkedRequest,
} from '../../src/protocol/index.js';
import type { ChunkedResponseOpener, OpenedChunk } from '../../src/protocol/index.js';
import { requestInfo } from '../../src/protocol/ohttp.js';
import { encodeVarint } from '../../src/core/varint.js';
import { hex, toHex } from '../helpers/bytes.js';
import { codeOf } from '../helpers/errors.js';
import { describeWithVectors, hasVectors, readVectorJson } from '../helpers/vectors.js';

const cat = (...p: Uint8Array[]): Uint8Array => Uint8Array.from(Buffer.concat(p));
const pts = (cs: OpenedChunk[]): string[] => cs.map((c) => `${c.final ? 'F' : ''}${toHex(c.plaintext)}`);

const CHUNKED = 'ohttp/chunked-ohttp-08.json';
interface ChunkV {
  plaintext: string;
  ciphertext: string;
  final?: boolean;
  counter?: number;
  chunkNonce?: string;
}
interface CV {
  skR: string;
  keyConfig: string;
  keyId: number;
  kemId: number;
  kdfId: number;
  aeadId: number;
  request: string;
  skE: string;
  enc: string;
  info: string;
  requestChunks: ChunkV[];
  encapsulatedRequest: string;
  response: string;
  responseNonce: string;
  aeadNonce: string;
  responseChunks: ChunkV[];
  encapsulatedResponse: string;
}

describeWithVectors(CHUNKED, 'draft-ietf-ohai-chunked-ohttp-08 Appendix A (test/vectors)', () => {
  const file = hasVectors(CHUNKED) ? readVectorJson<{ vectors: CV[] }>(CHUNKED) : { vectors: [] };
  for (const v of file.vectors) {
    const suite = suiteFromIds(v.kemId, v.kdfId, v.aeadId);
    const key = HpkeRecipientKey.fromPrivateKey(hex(v.skR));
    const lookup = (id: number): HpkeRecipientKey => {
      if (id !== v.keyId) throw new CloisterError('UNKNOWN_KEY_ID');
      return key;
    };
    // Known defects of the JSON transcription (the encapsulated bytes are self-consistent):
    // `info` and `keyConfig` carry a stray trailing 0x00, and the `plaintext` split listed in
    // `requestChunks` does not match its ciphertexts: these decrypt to 12 + 13 + 0 bytes.
    const reqSplit = [hex(v.request).subarray(0, 12), hex(v.request).subarray(12), new Uint8Array(0)];

    it('key config (minus the stray trailing byte) holds pkR; info = label || 0 || hdr', () => {
      expect(v.keyConfig.slice(6, 70)).toBe(toHex(key.publicKey));
      expect(v.keyConfig.endsWith('00')).toBe(true);
      const hdr = hex(v.encapsulatedRequest).subarray(0, 7);
      expect(toHex(requestInfo('message/bhttp chunked request', hdr)) + '00').toBe(v.info);
    });

    it('seals the encapsulated request byte for byte with the pinned skE', () => {
      const s = createChunkedRequestSealer({ keyId: v.keyId, publicKey: key.publicKey, suite }, { ephemeralPrivateKey: hex(v.skE) });
      expect(toHex(s.header)).toBe(v.encapsulatedRequest.slice(0, 78));
      expect(toHex(s.header.subarray(7))).toBe(v.enc);
      const f1 = s.sealChunk(reqSplit[0] ?? new Uint8Array(0));
      const f2 = s.sealChunk(reqSplit[1] ?? new Uint8Array(0));
      const f3 = s.sealFinal(new Uint8Array(0));
      expect([toHex(f1), toHex(f2), toHex(f3)]).toEqual(v.requestChunks.map((c) => c.ciphertext));
      expect(toHex(cat(s.header, f1, f2, f3))).toBe(v.encapsulatedRequest);
    });

    it('opens the request, then seals the response byte for byte (nonce, every chunk, final)', () => {
      const o = new ChunkedRequestOpener(lookup);
      const got = [...o.push(hex(v.encapsulatedRequest)), ...o.finish()];
      expect(pts(got)).toEqual([toHex(reqSplit[0] ?? new Uint8Array(0)), toHex(reqSplit[1] ?? new Uint8Array(0)), 'F']);
      expect(got.map((c) => toHex(c.plaintext)).join('')).toBe(v.request);
      const r = o.response({ responseNonce: hex(v.responseNonce) });
      const parts = [r.start()];
      expect(toHex(parts[0] ?? new Uint8Array(0))).toBe(v.responseNonce);
      for (const c of v.responseChunks) {
        const framed = c.final === true ? r.sealFinal(hex(c.plaintext)) : r.sealChunk(hex(c.plaintext));
        expect(toHex(framed)).toBe(c.final === true ? `00${c.ciphertext}` : c.ciphertext);
        parts.push(framed);
      }
      expect(toHex(cat(...parts))).toBe(v.encapsulatedResponse);
      // openChunkedRequest gives the same plaintext in one call.
      expect(toHex(openChunkedRequest(lookup, hex(v.encapsulatedRequest)).plaintext)).toBe(v.request);
    });

    it('client opens the vector response, byte by byte and whole', () => {
      for (const split of [1, 1000]) {
        const s = createChunkedRequestSealer({ keyId: v.keyId, publicKey: key.publicKey, suite }, { ephemeralPrivateKey: hex(v.skE) });
        const resp = hex(v.encapsulatedResponse);
        const got: OpenedChunk[] = [];
        for (let i = 0; i < resp.length; i += split) got.push(...s.response.push(resp.subarray(i, i + split)));
        got.push(...s.response.finish());
        expect(pts(got)).toEqual(['01', '40c8', 'F']);
        expect(s.response.complete).toBe(true);
      }
    });
  }
});

// --- round trips and the negative suite -----------------------------------------------------

const kp = generateX25519KeyPair();
const key = HpkeRecipientKey.fromPrivateKey(kp.privateKey);
const lookup = (id: number): HpkeRecipientKey => {
  if (id !== 5) throw new CloisterError('UNKNOWN_KEY_ID');
  return key;
};
const suites: HpkeSuite[] = [suiteFromIds(0x20, 1, 1), suiteFromIds(0x20, 1, 3)];
const target = (suite: HpkeSuite): { keyId: number; publicKey: Uint8Array; suite: HpkeSuite } => ({ keyId: 5, publicKey: kp.publicKey, suite });
const bytesOf = (s: string): Uint8Array => new TextEncoder().encode(s);

/** One exchange: request bytes, the client's opener, and the server's response pieces. */
function exchange(suite: HpkeSuite, chunks = ['alpha', 'beta', 'gamma']): {
  request: Uint8Array;
  opener: ChunkedResponseOpener;
  nonce: Uint8Array;
  frames: Uint8Array[];
} {
  const { bytes, response } = sealChunkedRequest(target(suite), bytesOf('request'));
  const srv = openChunkedRequest(lookup, bytes);
  const nonce = srv.response.start();
  const frames = chunks.slice(0, -1).map((c) => srv.response.sealChunk(bytesOf(c)));
  frames.push(srv.response.sealFinal(bytesOf(chunks[chunks.length - 1] ?? '')));
  return { request: bytes, opener: response, nonce, frames };
}

function openAll(opener: ChunkedResponseOpener, stream: Uint8Array): string[] {
  return pts([...opener.push(stream), ...opener.finish()]);
}

describe('chunked OHTTP round trips', () => {
  for (const suite of suites) {
    it(`stream round trip, aead ${suite.aeadId}`, () => {
      const e = exchange(suite);
      expect(openAll(e.opener, cat(e.nonce, ...e.frames))).toEqual([toHex(bytesOf('alpha')), toHex(bytesOf('beta')), `F${toHex(bytesOf('gamma'))}`]);
    });
  }

  it('any byte split of the stream gives the same chunks', () => {
    const e = exchange(suites[0] ?? suiteFromIds(0x20, 1, 1));
    const stream = cat(e.nonce, ...e.frames);
    for (let cut = 0; cut <= stream.length; cut += 3) {
      const again = exchange(suites[0] ?? suiteFromIds(0x20, 1, 1));
      const s = cat(again.nonce, ...again.frames);
      const got = [...again.opener.push(s.subarray(0, cut)), ...again.opener.push(s.subarray(cut)), ...again.opener.finish()];
      expect(got).toHaveLength(3);
    }
  });

  it('large requests are cut into chunks and reassembled; request stream pushed byte by byte', () => {
    const big = new Uint8Array(150_000).map((_, i) => i & 0xff);
    const { bytes } = sealChunkedRequest(target(suites[1] ?? suiteFromIds(0x20, 1, 3)), big);
    expect(openChunkedRequest(lookup, bytes).plaintext).toEqual(big);
    const small = sealChunkedRequest(target(suites[0] ?? suiteFromIds(0x20, 1, 1)), bytesOf('hi'), { chunkSize: 1 });
    const o = new ChunkedRequestOpener(lookup);
    const got: OpenedChunk[] = [];
    for (const b of small.bytes) got.push(...o.push(Uint8Array.of(b)));
    got.push(...o.finish());
    expect(pts(got)).toEqual(['68', 'F69']);
    expect(o.keyId).toBe(5);
  });
});

describe('chunked OHTTP negative suite', () => {
  const suite = suites[0] ?? suiteFromIds(0x20, 1, 1);

  it('request: a flipped bit in the header, enc, any chunk byte or tag fails', () => {
    const { bytes } = sealChunkedRequest(target(suite), bytesOf('abcdef'), { chunkSize: 2 });
    for (let i = 0; i < bytes.length; i++) {
      const bad = Uint8Array.from(bytes);
      bad[i] = (bad[i] ?? 0) ^ 0x04;
      const code = codeOf(() => openChunkedRequest(lookup, bad));
      if (i === 0) expect(code).toBe('UNKNOWN_KEY_ID');
      else if (i < 7) expect(code).toBe('UNSUPPORTED_SUITE');
      else expect(['HPKE_OPEN_FAILED', 'HPKE_DECAP_FAILED', 'MALFORMED', 'STREAM_TRUNCATED', 'LIMIT_EXCEEDED']).toContain(code);
    }
  });

  it('response: a flipped bit in the nonce, any chunk length, ciphertext or tag fails', () => {
    const probe = exchange(suite);
    const len = cat(probe.nonce, ...probe.frames).length;
    for (let i = 0; i < len; i++) {
      const e = exchange(suite);
      const stream = cat(e.nonce, ...e.frames);
      stream[i] = (stream[i] ?? 0) ^ 0x01;
      expect(['HPKE_OPEN_FAILED', 'MALFORMED', 'STREAM_TRUNCATED']).toContain(codeOf(() => openAll(e.opener, stream)));
    }
  });

  it('truncated streams never read as complete', () => {
    const probe = exchange(suite);
    const full = cat(probe.nonce, ...probe.frames);
    const finalStart = full.length - (probe.frames[2]?.length ?? 0);
    for (let cut = 0; cut < full.length; cut++) {
      const e = exchange(suite);
      const code = codeOf(() => openAll(e.opener, cat(e.nonce, ...e.frames).subarray(0, cut)));
      // Before the final indicator: truncated. Inside the final chunk: its tag fails.
      expect(code).toBe(cut <= finalStart ? 'STREAM_TRUNCATED' : 'HPKE_OPEN_FAILED');
    }
    const r = new ChunkedRequestOpener(lookup);
    const { bytes } = sealChunkedRequest(target(suite), bytesOf('abcdef'), { chunkSize: 2 });
    r.push(bytes.subarray(0, bytes.length - 20));
    expect(codeOf(() => r.finish())).toBe('STREAM_TRUNCATED');
    expect(codeOf(() => openChunkedRequest(lookup, bytes.subarray(0, 39)))).toBe('STREAM_TRUNCATED');
  });

  it('reordered, dropped, duplicated or spliced chunks fail', () => {
    const e = exchange(suite);
    const [a, b, f] = e.frames;
    if (a === undefined || b === undefined || f === undefined) throw new Error('frames');
    expect(codeOf(() => openAll(e.opener, cat(e.nonce, b, a, f)))).toBe('HPKE_OPEN_FAILED');
    const e2 = exchange(suite);
    expect(codeOf(() => openAll(e2.opener, cat(e2.nonce, e2.frames[0] ?? a, e2.frames[2] ?? f)))).toBe('HPKE_OPEN_FAILED');
    const e3 = exchange(suite);
    expect(codeOf(() => openAll(e3.opener, cat(e3.nonce, e3.frames[0] ?? a, e3.frames[0] ?? a)))).toBe('HPKE_OPEN_FAILED');
    // Splice: a chunk from another stream (same key, other request) at the same position.
    const x = exchange(suite);
    const y = exchange(suite);
    expect(codeOf(() => openAll(x.opener, cat(x.nonce, y.frames[0] ?? a, x.frames[1] ?? b, x.frames[2] ?? f)))).toBe('HPKE_OPEN_FAILED');
    const z = exchange(suite);
    expect(codeOf(() => openAll(z.opener, cat(y.nonce, ...y.frames)))).toBe('HPKE_OPEN_FAILED');
    // A non-final chunk re-framed as final, and the final re-framed as non-final.
    const w = exchange(suite);
    const aCt = (w.frames[0] ?? a).subarray(1);
    expect(codeOf(() => openAll(w.opener, cat(w.nonce, Uint8Array.of(0), aCt)))).toBe('HPKE_OPEN_FAILED');
    const u = exchange(suite);
    const fCt = (u.frames[2] ?? f).subarray(1);
    expect(codeOf(() => openAll(u.opener, cat(u.nonce, u.frames[0] ?? a, u.frames[1] ?? b, encodeVarint(fCt.length), fCt)))).toBe('HPKE_OPEN_FAILED');
  });

  it('anything after the final chunk throws; errors are terminal', () => {
    const e = exchange(suite);
    openAll(e.opener, cat(e.nonce, ...e.frames));
    expect(codeOf(() => e.opener.push(Uint8Array.of(1)))).toBe('PROTOCOL_VIOLATION');
    expect(codeOf(() => e.opener.finish())).toBe('PROTOCOL_VIOLATION');
    // Sealers refuse after final too.
    const { bytes } = sealChunkedRequest(target(suite), bytesOf('q'));
    const srv = openChunkedRequest(lookup, bytes);
    expect(codeOf(() => srv.response.sealChunk(bytesOf('x')))).toBe('PROTOCOL_VIOLATION');
    srv.response.start();
    srv.response.sealFinal(bytesOf('x'));
    expect(codeOf(() => srv.response.sealChunk(bytesOf('x')))).toBe('PROTOCOL_VIOLATION');
    expect(codeOf(() => srv.response.sealFinal(bytesOf('x')))).toBe('PROTOCOL_VIOLATION');
    expect(codeOf(() => srv.response.start())).toBe('PROTOCOL_VIOLATION');
    const cs = createChunkedRequestSealer(target(suite));
    cs.sealFinal(bytesOf('x'));
    expect(codeOf(() => cs.sealChunk(bytesOf('y')))).toBe('PROTOCOL_VIOLATION');
    // After a failure the opener stays failed.
    const e3 = exchange(suite);
    const bad = cat(e3.nonce, ...e3.frames);
    bad[20] = (bad[20] ?? 0) ^ 1;
    expect(codeOf(() => e3.opener.push(bad))).toBe('HPKE_OPEN_FAILED');
    expect(codeOf(() => e3.opener.finish())).toBe('PROTOCOL_VIOLATION');
  });

  it('trailing bytes after the final chunk in a stream: the tag fails', () => {
    const e = exchange(suite);
    expect(codeOf(() => openAll(e.opener, cat(e.nonce, ...e.frames, Uint8Array.of(0))))).toBe('HPKE_OPEN_FAILED');
    const { bytes } = sealChunkedRequest(target(suite), bytesOf('q'));
    expect(codeOf(() => openChunkedRequest(lookup, cat(bytes, Uint8Array.of(0))))).toBe('HPKE_OPEN_FAILED');
  });

  it('limits: oversize chunk, too much plaintext, too many chunks, oversize body; all named', () => {
    const e = exchange(suite, ['x'.repeat(100), 'end']);
    const small = createChunkedRequestSealer(target(suite), { limits: { maxChunkLength: 64 } });
    const { bytes } = sealChunkedRequest(target(suite), bytesOf('q'));
    const srv = openChunkedRequest(lookup, bytes);
    void srv;
    // Response side: a 116-byte chunk against a 64-byte limit, detected from the length alone.
    expect(codeOf(() => small.response.push(cat(e.nonce, (e.frames[0] ?? new Uint8Array(0)).subarray(0, 3))))).toBe('LIMIT_EXCEEDED');
    // Final chunk buffering is bounded too.
    const fin = createChunkedRequestSealer(target(suite), { limits: { maxChunkLength: 64 } });
    expect(codeOf(() => fin.response.push(cat(new Uint8Array(16), Uint8Array.of(0), new Uint8Array(65))))).toBe('LIMIT_EXCEEDED');
    // Request side.
    const big = sealChunkedRequest(target(suite), new Uint8Array(1000)).bytes;
    expect(codeOf(() => openChunkedRequest(lookup, big, { maxChunkLength: 500 }))).toBe('LIMIT_EXCEEDED');
    expect(codeOf(() => openChunkedRequest(lookup, big, { maxMessageBytes: 999 }))).toBe('LIMIT_EXCEEDED');
    expect(openChunkedRequest(lookup, big, { maxMessageBytes: 1000 }).plaintext).toHaveLength(1000);
    const many = sealChunkedRequest(target(suite), new Uint8Array(10), { chunkSize: 1 }).bytes;
    expect(codeOf(() => openChunkedRequest(lookup, many, { maxChunks: 9 }))).toBe('LIMIT_EXCEEDED');
    expect(openChunkedRequest(lookup, many, { maxChunks: 10 }).plaintext).toHaveLength(10);
    expect(maxSealedRequestLength({ maxMessageBytes: 100, maxChunks: 2, maxChunkLength: 60 })).toBe(7 + 32 + 100 + 2 * 17);
    expect(maxSealedRequestLength()).toBeGreaterThan(DEFAULT_CHUNKED_LIMITS.maxMessageBytes);
    const limit = maxSealedRequestLength({ maxMessageBytes: 16, maxChunks: 1 });
    expect(codeOf(() => openChunkedRequest(lookup, new Uint8Array(limit + 1), { maxMessageBytes: 16, maxChunks: 1 }))).toBe('LIMIT_EXCEEDED');
    expect(codeOf(() => openChunkedRequest(lookup, big, { maxChunks: 0 }))).toBe('CONFIG_INVALID');
  });

  it('lookupKey errors propagate unchanged; bad varints are malformed; empty non-final chunks refused', () => {
    const stale = new CloisterError('KEY_STALE', 'rotated');
    const { bytes } = sealChunkedRequest(target(suite), bytesOf('q'));
    let thrown: unknown;
    try {
      openChunkedRequest(() => {
        throw stale;
      }, bytes);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBe(stale);
    expect(codeOf(() => openChunkedRequest(lookup, Uint8Array.of(9, ...bytes.subarray(1))))).toBe('UNKNOWN_KEY_ID');
    const e = exchange(suite);
    // 0x4001 is a non-minimal 2-byte encoding of 1.
    expect(codeOf(() => e.opener.push(cat(e.nonce, Uint8Array.of(0x40, 0x01))))).toBe('MALFORMED');
    const cs = createChunkedRequestSealer(target(suite));
    expect(codeOf(() => cs.sealChunk(new Uint8Array(0)))).toBe('INVALID_ARGUMENT');
    const ro = new ChunkedRequestOpener(lookup);
    expect(codeOf(() => ro.response())).toBe('PROTOCOL_VIOLATION');
  });

  it('never mutates or aliases caller buffers (pooled Buffer subarrays)', () => {
    const pt = Buffer.from('73656372657420726571756573742062797465', 'hex');
    const before = toHex(pt);
    const pk = Buffer.from(toHex(kp.publicKey), 'hex');
    const { bytes, response } = sealChunkedRequest({ keyId: 5, publicKey: pk, suite }, pt);
    expect(toHex(pt)).toBe(before);
    pk.fill(0);
    pt.fill(0);
    const pooled = Buffer.from(toHex(bytes), 'hex');
    const srv = openChunkedRequest(lookup, pooled);
    pooled.fill(0xff);
    expect(toHex(srv.plaintext)).toBe(before);
    const nonce = srv.response.start();
    const rp = Buffer.from('6f6b', 'hex');
    const frame = srv.response.sealFinal(rp);
    rp.fill(0);
    const stream = Buffer.from(toHex(cat(nonce, frame)), 'hex');
    const half = stream.subarray(0, 20);
    const first = response.push(half);
    half.fill(0); // the opener must have copied what it buffered
    const got = [...first, ...response.push(stream.subarray(20)), ...response.finish()];
    expect(pts(got)).toEqual(['F6f6b']);
    expect(srv.plaintext.buffer.byteLength).toBe(srv.plaintext.byteLength);
  });
});
