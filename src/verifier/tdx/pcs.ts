/**
 * TDX collateral from Intel PCS or a PCCS, over the PCS v4 API, for the server to attach to its
 * evidence (and for a client that fetches collateral itself):
 *
 *   GET {base}/sgx/certification/v4/pckcrl?ca={processor|platform}&encoding=der
 *         body: the PCK CRL (DER); header SGX-PCK-CRL-Issuer-Chain (URL-encoded PEM)
 *   GET {base}/tdx/certification/v4/tcb?fmspc={FMSPC}
 *         body: {"tcbInfo": {...}, "signature": "<hex>"}; header TCB-Info-Issuer-Chain
 *         (SGX-TCB-Info-Issuer-Chain on older servers)
 *   GET {base}/tdx/certification/v4/qe/identity
 *         body: {"enclaveIdentity": {...}, "signature": "<hex>"}; header SGX-Enclave-Identity-Issuer-Chain
 *   GET {base}/sgx/certification/v4/rootcacrl        (a PCCS: the root CA CRL, hex or DER)
 *   or  the root certificate's CRL distribution point (Intel PCS has no rootcacrl endpoint)
 *
 * FMSPC and CA type come from the PCK certificate in the quote. Every request has a timeout
 * and a response size bound (named options below); the result is the QuoteCollateralV3 JSON
 * that the verifier reads, with `nextUpdate` = the earliest expiry of its parts. Nothing here
 * is trusted: the verifier checks every part against the pinned Intel root.
 */
import type { Collateral } from '@phala/dcap-qvl';
import { INTEL_PCS_URL, utils as qvlUtils } from '@phala/dcap-qvl';
import { X509Certificate } from 'node:crypto';
import { CloisterError } from '../../errors.js';
import { pemToDerList } from '../x509/certificate.js';
import { crlNextUpdate } from './crl.js';
import { parseTdxQuote } from './quote.js';

export { INTEL_PCS_URL };
/** The Intel SGX Root CA's CRL distribution point (used with Intel PCS, which has no rootcacrl endpoint). */
export const INTEL_ROOT_CA_CRL_URL = 'https://certificates.trustedservices.intel.com/IntelSGXRootCA.der';
export const DEFAULT_PCS_TIMEOUT_MS = 15_000;
export const DEFAULT_PCS_MAX_RESPONSE_BYTES = 1024 * 1024;

export interface PcsFetchOptions {
  /** PCS or PCCS base URL (without /sgx/certification/v4). Default Intel PCS. */
  readonly baseUrl?: string;
  /** Per request. Default 15 s. */
  readonly timeoutMs?: number;
  /** Largest response body accepted. Default 1 MiB. */
  readonly maxResponseBytes?: number;
  /** Root CA CRL URL. Default: {base}/sgx/certification/v4/rootcacrl, or the Intel CRL URL for Intel PCS. */
  readonly rootCaCrlUrl?: string;
}

export interface FetchedCollateral {
  /** QuoteCollateralV3 JSON (UTF-8), as attached to evidence bundles. */
  readonly bytes: Uint8Array;
  readonly collateral: Collateral;
  /** Earliest nextUpdate of TCB info, QE identity and both CRLs. */
  readonly nextUpdate: Date;
  /** The platform it is for: FMSPC (hex, upper case) and PCK CA. */
  readonly fmspc: string;
  readonly ca: 'processor' | 'platform';
}

/** FMSPC and PCK CA type of a TDX quote (from the PCK certificate in its certification data). */
export function pckPlatformOf(quote: Uint8Array): { fmspc: string; ca: 'processor' | 'platform' } {
  const q = parseTdxQuote(quote);
  if (q.certificationDataType !== 5) {
    throw new CloisterError('EVIDENCE_MALFORMED', `the quote carries certification data type ${q.certificationDataType}, not a PCK certificate chain (5)`);
  }
  let end = q.certificationData.byteLength;
  while (end > 0 && q.certificationData[end - 1] === 0) end--;
  const leaf = pemToDerList(new TextDecoder().decode(q.certificationData.subarray(0, end)))[0];
  if (leaf === undefined) throw new CloisterError('EVIDENCE_MALFORMED', 'the quote has no PCK certificate');
  let fmspc: string;
  try {
    fmspc = Buffer.from(qvlUtils.getFmspc(qvlUtils.getIntelExtension(Buffer.from(leaf)))).toString('hex').toUpperCase();
  } catch (cause) {
    throw new CloisterError('EVIDENCE_MALFORMED', 'the PCK certificate has no FMSPC', { cause });
  }
  const issuer = new X509Certificate(leaf).issuer;
  const ca = issuer.includes('Platform') ? 'platform' : 'processor';
  return { fmspc, ca };
}

interface Response {
  readonly body: Uint8Array;
  readonly headers: Headers;
}

async function get(url: string, timeoutMs: number, maxBytes: number): Promise<Response> {
  let res: globalThis.Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: 'error' });
  } catch (cause) {
    const timedOut = cause instanceof Error && (cause.name === 'TimeoutError' || cause.name === 'AbortError');
    throw new CloisterError(timedOut ? 'TIMEOUT' : 'CONNECTION_FAILED', `GET ${url}: ${timedOut ? `no answer within ${timeoutMs} ms` : cause instanceof Error ? (cause.cause instanceof Error ? cause.cause.message : cause.message) : 'failed'}`, { cause });
  }
  if (res.status !== 200) {
    await res.body?.cancel().catch(() => undefined);
    throw new CloisterError('CONNECTION_FAILED', `GET ${url} returned ${res.status}`);
  }
  const declared = Number(res.headers.get('content-length') ?? '0');
  if (declared > maxBytes) {
    await res.body?.cancel().catch(() => undefined);
    throw new CloisterError('LIMIT_EXCEEDED', `GET ${url}: response of ${declared} bytes exceeds maxResponseBytes ${maxBytes}`);
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  if (res.body !== null) {
    for await (const chunk of res.body) {
      total += chunk.byteLength;
      if (total > maxBytes) throw new CloisterError('LIMIT_EXCEEDED', `GET ${url}: response exceeds maxResponseBytes ${maxBytes}`);
      chunks.push(chunk);
    }
  }
  return { body: new Uint8Array(Buffer.concat(chunks)), headers: res.headers };
}

function header(r: Response, url: string, ...names: string[]): string {
  for (const n of names) {
    const v = r.headers.get(n);
    if (v !== null && v.length > 0) {
      try {
        return decodeURIComponent(v);
      } catch (cause) {
        throw new CloisterError('MALFORMED', `GET ${url}: header ${n} is not URL-encoded`, { cause });
      }
    }
  }
  throw new CloisterError('MALFORMED', `GET ${url}: header ${names.join(' / ')} is missing`);
}

function signedJson(r: Response, url: string, key: 'tcbInfo' | 'enclaveIdentity'): { body: string; signature: string; nextUpdate: Date } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(r.body));
  } catch (cause) {
    throw new CloisterError('MALFORMED', `GET ${url}: body is not JSON`, { cause });
  }
  const o = parsed as Record<string, unknown>;
  const inner = o[key] as Record<string, unknown> | undefined;
  const signature = o['signature'];
  if (typeof inner !== 'object' || inner === null || typeof signature !== 'string' || !/^(?:[0-9a-fA-F]{2})+$/.test(signature)) {
    throw new CloisterError('MALFORMED', `GET ${url}: body is not {"${key}": {...}, "signature": "<hex>"}`);
  }
  const next = new Date(String(inner['nextUpdate']));
  if (!Number.isFinite(next.getTime())) throw new CloisterError('MALFORMED', `GET ${url}: ${key}.nextUpdate is not a time`);
  // Intel signs the compact JSON of the inner object: what @phala/dcap-qvl's own fetcher sends too.
  return { body: JSON.stringify(inner), signature: signature.toLowerCase(), nextUpdate: next };
}

/** Fetch the collateral for a TDX quote from Intel PCS or a PCCS. */
export async function fetchTdxCollateral(quote: Uint8Array, options: PcsFetchOptions = {}): Promise<FetchedCollateral> {
  const base = (options.baseUrl ?? INTEL_PCS_URL).replace(/\/+$/, '').replace(/\/(sgx|tdx)\/certification\/v4$/, '');
  const timeoutMs = options.timeoutMs ?? DEFAULT_PCS_TIMEOUT_MS;
  const maxBytes = options.maxResponseBytes ?? DEFAULT_PCS_MAX_RESPONSE_BYTES;
  const { fmspc, ca } = pckPlatformOf(quote);

  const pckUrl = `${base}/sgx/certification/v4/pckcrl?ca=${ca}&encoding=der`;
  const tcbUrl = `${base}/tdx/certification/v4/tcb?fmspc=${fmspc}`;
  const qeUrl = `${base}/tdx/certification/v4/qe/identity`;
  const rootUrl = options.rootCaCrlUrl ?? (base === INTEL_PCS_URL ? INTEL_ROOT_CA_CRL_URL : `${base}/sgx/certification/v4/rootcacrl`);
  const [pck, tcb, qe, root] = await Promise.all([pckUrl, tcbUrl, qeUrl, rootUrl].map((u) => get(u, timeoutMs, maxBytes)));
  if (pck === undefined || tcb === undefined || qe === undefined || root === undefined) throw new CloisterError('INTERNAL', 'missing response');

  const tcbInfo = signedJson(tcb, tcbUrl, 'tcbInfo');
  const qeIdentity = signedJson(qe, qeUrl, 'enclaveIdentity');
  // A PCCS answers rootcacrl in hex; the CRL distribution point answers DER.
  const rootText = new TextDecoder().decode(root.body).trim();
  const rootCrl = root.body[0] === 0x30 ? root.body : /^(?:[0-9a-fA-F]{2})+$/.test(rootText) ? new Uint8Array(Buffer.from(rootText, 'hex')) : undefined;
  if (rootCrl === undefined) throw new CloisterError('MALFORMED', `GET ${rootUrl}: body is neither a DER nor a hex CRL`);
  const collateral = {
    pck_crl_issuer_chain: header(pck, pckUrl, 'SGX-PCK-CRL-Issuer-Chain'),
    root_ca_crl: Buffer.from(rootCrl).toString('hex'),
    pck_crl: Buffer.from(pck.body).toString('hex'),
    tcb_info_issuer_chain: header(tcb, tcbUrl, 'TCB-Info-Issuer-Chain', 'SGX-TCB-Info-Issuer-Chain'),
    tcb_info: tcbInfo.body,
    tcb_info_signature: tcbInfo.signature,
    qe_identity_issuer_chain: header(qe, qeUrl, 'SGX-Enclave-Identity-Issuer-Chain'),
    qe_identity: qeIdentity.body,
    qe_identity_signature: qeIdentity.signature,
  } as unknown as Collateral;
  const times = [tcbInfo.nextUpdate, qeIdentity.nextUpdate, crlNextUpdate(rootCrl, 'root_ca_crl'), crlNextUpdate(pck.body, 'pck_crl')];
  const nextUpdate = new Date(Math.min(...times.map((t) => t.getTime())));
  return { bytes: new TextEncoder().encode(JSON.stringify(collateral)), collateral, nextUpdate, fmspc, ca };
}

/** Earliest nextUpdate of a collateral's parts (for collateral read from a file). */
export function collateralNextUpdate(c: Collateral): Date {
  const times: Date[] = [];
  for (const [k, v] of [['tcb_info', c.tcb_info], ['qe_identity', c.qe_identity]] as const) {
    const t = new Date(String((JSON.parse(String(v)) as Record<string, unknown>)['nextUpdate']));
    if (!Number.isFinite(t.getTime())) throw new CloisterError('EVIDENCE_MALFORMED', `TDX collateral: ${k}.nextUpdate is not a time`);
    times.push(t);
  }
  times.push(crlNextUpdate(Buffer.from(String(c.root_ca_crl), 'hex'), 'root_ca_crl'), crlNextUpdate(Buffer.from(String(c.pck_crl), 'hex'), 'pck_crl'));
  return new Date(Math.min(...times.map((t) => t.getTime())));
}
