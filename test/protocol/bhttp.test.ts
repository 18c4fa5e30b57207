/**
 * Binary HTTP (RFC 9292) against the RFC's own examples (section 5: the known-length request
 * of Figure 8 and its truncations, the indeterminate-length response with informational
 * responses of Figure 11, the known-length response of Figure 13) and the BHTTP messages
 * inside the RFC 9458 Appendix A vector; strict decoding and named limits.
 */
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { decodeBhttpRequest, decodeBhttpResponse, encodeBhttpRequest, encodeBhttpResponse } from '../../src/protocol/bhttp.js';
import { codeOf } from '../helpers/errors.js';

const unhex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const ascii = (b: Uint8Array): string => Buffer.from(b).toString('latin1');

// RFC 9292 Figure 8 (135 bytes).
const FIG8 = unhex(`00034745 54056874 74707300 0a2f6865 6c6c6f2e 74787440 6c0a7573 65722d61
  67656e74 34637572 6c2f372e 31362e33 206c6962 6375726c 2f372e31 362e3320
  4f70656e 53534c2f 302e392e 376c207a 6c69622f 312e322e 3304686f 73740f77
  77772e65 78616d70 6c652e63 6f6d0f61 63636570 742d6c61 6e677561 67650665
  6e2c206d 690000`);
// RFC 9292 Figure 11 (368 bytes): indeterminate length, two informational responses.
const FIG11 = unhex(`03406607 72756e6e 696e670a 22736c65 65702031 35220040 67046c69 6e6b233c
  2f737479 6c652e63 73733e3b 2072656c 3d707265 6c6f6164 3b206173 3d737479
  6c65046c 696e6b24 3c2f7363 72697074 2e6a733e 3b207265 6c3d7072 656c6f61
  643b2061 733d7363 72697074 0040c804 64617465 1d4d6f6e 2c203237 204a756c
  20323030 39203132 3a32383a 35332047 4d540673 65727665 72064170 61636865
  0d6c6173 742d6d6f 64696669 65641d57 65642c20 3232204a 756c2032 30303920
  31393a31 353a3536 20474d54 04657461 67142233 34616133 38372d64 2d313536
  38656230 30220d61 63636570 742d7261 6e676573 05627974 65730e63 6f6e7465
  6e742d6c 656e6774 68023531 04766172 790f4163 63657074 2d456e63 6f64696e
  670c636f 6e74656e 742d7479 70650a74 6578742f 706c6169 6e003348 656c6c6f
  20576f72 6c642120 4d792063 6f6e7465 6e742069 6e636c75 64657320 61207472
  61696c69 6e672043 524c462e 0d0a0000`);
// RFC 9292 Figure 13 (48 bytes).
const FIG13 = unhex(`0140c800 1d546869 7320636f 6e74656e 7420636f 6e746169 6e732043 524c462e
  0d0a0d07 74726169 6c657204 74657874`);

const FIG7_REQUEST = {
  method: 'GET',
  scheme: 'https',
  authority: '',
  path: '/hello.txt',
  headers: [
    ['user-agent', 'curl/7.16.3 libcurl/7.16.3 OpenSSL/0.9.7l zlib/1.2.3'],
    ['host', 'www.example.com'],
    ['accept-language', 'en, mi'],
  ] as const,
  content: new Uint8Array(0),
  trailers: [],
};

describe('binary HTTP (RFC 9292 section 5 examples)', () => {
  it('Figure 8: decodes to the Figure 7 request and encodes back to the same 135 bytes', () => {
    expect(FIG8.byteLength).toBe(135);
    expect(decodeBhttpRequest(FIG8)).toEqual(FIG7_REQUEST);
    expect(hex(encodeBhttpRequest(FIG7_REQUEST))).toBe(hex(FIG8));
  });

  it('Figure 8 truncated (trailers, then content removed) and padded decodes the same', () => {
    expect(decodeBhttpRequest(FIG8.subarray(0, 134))).toEqual(FIG7_REQUEST);
    expect(decodeBhttpRequest(FIG8.subarray(0, 133))).toEqual(FIG7_REQUEST);
    expect(decodeBhttpRequest(new Uint8Array([...FIG8, 0, 0, 0, 0]))).toEqual(FIG7_REQUEST);
  });

  it('Figure 11: the indeterminate-length response with 102 and 103 informational responses', () => {
    expect(FIG11.byteLength).toBe(368);
    const r = decodeBhttpResponse(FIG11);
    expect(r.informational).toEqual([
      { status: 102, headers: [['running', '"sleep 15"']] },
      { status: 103, headers: [['link', '</style.css>; rel=preload; as=style'], ['link', '</script.js>; rel=preload; as=script']] },
    ]);
    expect(r.status).toBe(200);
    expect(r.headers.map(([n]) => n)).toEqual(['date', 'server', 'last-modified', 'etag', 'accept-ranges', 'content-length', 'vary', 'content-type']);
    expect(r.headers[6]).toEqual(['vary', 'Accept-Encoding']);
    expect(ascii(r.content)).toBe('Hello World! My content includes a trailing CRLF.\r\n');
    expect(r.trailers).toEqual([]);
    // Re-encoded in known-length form, it decodes to the same message.
    expect(decodeBhttpResponse(encodeBhttpResponse(r))).toEqual(r);
  });

  it('Figure 13: the known-length response with a trailer, both ways', () => {
    const r = decodeBhttpResponse(FIG13);
    expect(r).toEqual({ informational: [], status: 200, headers: [], content: new TextEncoder().encode('This content contains CRLF.\r\n'), trailers: [['trailer', 'text']] });
    expect(hex(encodeBhttpResponse(r))).toBe(hex(FIG13));
  });

  it('the BHTTP messages inside the RFC 9458 Appendix A vector (truncated known-length)', () => {
    const path = new URL('../../../shared/vectors/ohttp/rfc9458.json', import.meta.url);
    const v = existsSync(path)
      ? (JSON.parse(readFileSync(path, 'utf8')) as { vectors: { request: string; response: string }[] }).vectors[0]
      : { request: '00034745540568747470730b6578616d706c652e636f6d012f', response: '0140c8' };
    expect(decodeBhttpRequest(unhex(v?.request ?? ''))).toEqual({ method: 'GET', scheme: 'https', authority: 'example.com', path: '/', headers: [], content: new Uint8Array(0), trailers: [] });
    expect(decodeBhttpResponse(unhex(v?.response ?? ''))).toEqual({ informational: [], status: 200, headers: [], content: new Uint8Array(0), trailers: [] });
  });
});

describe('binary HTTP: strict decoding and limits', () => {
  it('refuses other framings, bad statuses, overruns, non-zero padding, uppercase names', () => {
    expect(codeOf(() => decodeBhttpRequest(FIG13))).toBe('MALFORMED');
    expect(codeOf(() => decodeBhttpResponse(FIG8))).toBe('MALFORMED');
    expect(codeOf(() => decodeBhttpResponse(unhex('0140c7')))).toBe('MALFORMED'); // 199 as a final status is informational; then truncated
    expect(codeOf(() => decodeBhttpResponse(unhex('01425c')))).toBe('MALFORMED'); // 604
    expect(codeOf(() => decodeBhttpRequest(FIG8.subarray(0, 40)))).toBe('MALFORMED');
    expect(codeOf(() => decodeBhttpRequest(new Uint8Array([...FIG8, 1])))).toBe('MALFORMED');
    expect(codeOf(() => decodeBhttpRequest(unhex('00034745540568747470730001' + '2f' + '05' + '0141' + '0162')))).toBe('MALFORMED');
    expect(codeOf(() => decodeBhttpRequest(unhex('0004')))).toBe('MALFORMED');
    expect(codeOf(() => encodeBhttpRequest({ ...FIG7_REQUEST, headers: [['Host', 'x']] }))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => encodeBhttpRequest({ ...FIG7_REQUEST, headers: [['host', 'a\r\nb']] }))).toBe('INVALID_ARGUMENT');
  });

  it('each limit is hit by name', () => {
    expect(codeOf(() => decodeBhttpRequest(FIG8, { maxFieldLines: 2 }))).toBe('LIMIT_EXCEEDED');
    expect(codeOf(() => decodeBhttpRequest(FIG8, { maxFieldBytes: 50 }))).toBe('LIMIT_EXCEEDED');
    expect(codeOf(() => decodeBhttpResponse(FIG13, { maxContentBytes: 28 }))).toBe('LIMIT_EXCEEDED');
    expect(codeOf(() => decodeBhttpResponse(FIG11, { maxInformational: 1 }))).toBe('LIMIT_EXCEEDED');
    expect(codeOf(() => decodeBhttpResponse(FIG11, { maxContentBytes: 50 }))).toBe('LIMIT_EXCEEDED');
  });
});
