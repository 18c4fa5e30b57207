/**
 * Public reads of the receipts-v2 logs (docs/PROTOCOL.md section 12, "Publishing tree heads"):
 *
 *   GET /v1/log/head[?key=ID]                     the newest signed tree head
 *   GET /v1/log/proof?index=I&size=N[&key=ID]     an inclusion proof (PATH(I, D[N]))
 *   GET /v1/log/consistency?first=M&second=N[&key=ID]   a consistency proof (PROOF(M, D[N]))
 *
 * `key` is the OHTTP key id of the current generation or of the previous one in its grace
 * (default: current). Answers are CBOR maps: {t:'log-head', keyId, sth: bstr} (sth as
 * `encodeSignedTreeHead`), {t:'log-proof' | 'log-consistency', keyId, path: [bstr]}. Nothing
 * here is secret (heads and proofs are hashes over salted leaves) and nothing costs a
 * signature beyond the periodic head (`ReceiptLog.headIfDue`: at most one per
 * treeHeadIntervalMs), so the endpoint needs no rate limit of its own beyond the server's.
 */
import { CloisterError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { encodeCbor } from '../core/cbor.js';
import { encodeSignedTreeHead } from '../protocol/receipt-v2.js';
import type { KeyManager } from './keys.js';

export const LOG_PATHS: ReadonlySet<string> = new Set(['/v1/log/head', '/v1/log/proof', '/v1/log/consistency']);

export type LogAnswer = { readonly body: Uint8Array } | { readonly code: ErrorCode };

function uint(params: URLSearchParams, name: string, required: boolean): number | undefined {
  const v = params.get(name);
  if (v === null) {
    if (required) throw new CloisterError('MALFORMED', `missing ?${name}=`);
    return undefined;
  }
  if (!/^(0|[1-9]\d{0,14})$/.test(v)) throw new CloisterError('MALFORMED', `?${name} must be an unsigned integer`);
  return Number(v);
}

export function answerLog(keys: KeyManager, url: URL): LogAnswer {
  try {
    const keyId = uint(url.searchParams, 'key', false);
    const gen = keyId === undefined ? keys.current() : keys.byKeyId(keyId);
    if (gen === undefined) return { code: 'KEY_STALE' };
    const log = gen.receiptLog;
    switch (url.pathname) {
      case '/v1/log/head': {
        const sth = log.headIfDue() ?? log.latest() ?? (log.size > 0 ? log.signHead() : undefined);
        if (sth === undefined) return { code: 'NOT_FOUND' };
        return { body: encodeCbor({ t: 'log-head', keyId: gen.keyId, sth: encodeSignedTreeHead(sth) }) };
      }
      case '/v1/log/proof': {
        const index = uint(url.searchParams, 'index', true) as number;
        const size = uint(url.searchParams, 'size', true) as number;
        return { body: encodeCbor({ t: 'log-proof', keyId: gen.keyId, path: log.inclusionProof(index, size) }) };
      }
      case '/v1/log/consistency': {
        const first = uint(url.searchParams, 'first', true) as number;
        const second = uint(url.searchParams, 'second', true) as number;
        return { body: encodeCbor({ t: 'log-consistency', keyId: gen.keyId, path: log.consistencyProof(first, second) }) };
      }
      default:
        return { code: 'NOT_FOUND' };
    }
  } catch (err) {
    return { code: err instanceof CloisterError && (err.code === 'MALFORMED' || err.code === 'INVALID_ARGUMENT') ? 'MALFORMED' : 'INTERNAL' };
  }
}
