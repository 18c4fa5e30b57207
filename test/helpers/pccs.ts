/**
 * TEST-ONLY stand-in for Intel PCS / a PCCS on loopback, speaking the PCS v4 API paths and
 * headers with the real bytes of a vendored collateral file (test/vectors/tdx/*_collateral.json):
 *
 *   GET /sgx/certification/v4/pckcrl?ca=...&encoding=der   DER body, SGX-PCK-CRL-Issuer-Chain
 *   GET /tdx/certification/v4/tcb?fmspc=...                {"tcbInfo":..,"signature":..}, TCB-Info-Issuer-Chain
 *   GET /tdx/certification/v4/qe/identity                   {"enclaveIdentity":..,"signature":..}, SGX-Enclave-Identity-Issuer-Chain
 *   GET /sgx/certification/v4/rootcacrl                     the root CA CRL in hex (as a PCCS answers)
 *
 * The signed JSON objects are served exactly as the collateral holds them (the bytes Intel
 * signed). An unknown FMSPC or path answers 404. Not a test file itself.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface StandinPccs {
  readonly url: string;
  /** Paths (with query) requested so far. */
  readonly requests: string[];
  /** Replace what the next responses carry (e.g. a newer collateral). */
  setCollateral(c: Record<string, string>): void;
  /** Answer every request with this status instead (0: normal). */
  failWith(status: number): void;
  close(): Promise<void>;
}

export async function startStandinPccs(collateral: Record<string, string>): Promise<StandinPccs> {
  let c = collateral;
  let failStatus = 0;
  const requests: string[] = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    requests.push(`${url.pathname}${url.search}`);
    if (failStatus !== 0) {
      res.writeHead(failStatus).end();
      return;
    }
    const fmspc = (JSON.parse(c['tcb_info'] ?? '{}') as { fmspc?: string }).fmspc?.toUpperCase();
    const send = (body: string | Buffer, headers: Record<string, string>): void => {
      res.writeHead(200, { 'content-length': String(Buffer.byteLength(body)), ...headers }).end(body);
    };
    switch (url.pathname) {
      case '/sgx/certification/v4/pckcrl':
        if (!['processor', 'platform'].includes(url.searchParams.get('ca') ?? '') || url.searchParams.get('encoding') !== 'der') break;
        send(Buffer.from(c['pck_crl'] ?? '', 'hex'), { 'content-type': 'application/pkix-crl', 'SGX-PCK-CRL-Issuer-Chain': encodeURIComponent(c['pck_crl_issuer_chain'] ?? '') });
        return;
      case '/tdx/certification/v4/tcb':
        if (url.searchParams.get('fmspc')?.toUpperCase() !== fmspc) break;
        send(`{"tcbInfo":${c['tcb_info'] ?? ''},"signature":"${c['tcb_info_signature'] ?? ''}"}`, {
          'content-type': 'application/json',
          'TCB-Info-Issuer-Chain': encodeURIComponent(c['tcb_info_issuer_chain'] ?? ''),
        });
        return;
      case '/tdx/certification/v4/qe/identity':
        send(`{"enclaveIdentity":${c['qe_identity'] ?? ''},"signature":"${c['qe_identity_signature'] ?? ''}"}`, {
          'content-type': 'application/json',
          'SGX-Enclave-Identity-Issuer-Chain': encodeURIComponent(c['qe_identity_issuer_chain'] ?? ''),
        });
        return;
      case '/sgx/certification/v4/rootcacrl':
        send(c['root_ca_crl'] ?? '', { 'content-type': 'text/plain' });
        return;
      default:
        break;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    setCollateral: (next) => {
      c = next;
    },
    failWith: (status) => {
      failStatus = status;
    },
    close: () =>
      new Promise<void>((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}
