/**
 * Test-only: a throwaway certificate authority and server certificates, made with the
 * openssl CLI at test time (P-256, one day), so TLS tests verify a real chain and host name.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestCa {
  readonly caCert: string;
  /** A server certificate and key signed by this CA for `san` (e.g. "IP:127.0.0.1" or "DNS:kms.test"). */
  issue(san: string): { cert: string; key: string };
}

export function makeTestCa(name = 'cloister test CA'): TestCa {
  const dir = mkdtempSync(join(tmpdir(), 'cloister-ca-'));
  const run = (args: string[]): void => void execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    run(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.pem'), '-days', '1', '-subj', `/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
    const caCert = readFileSync(join(dir, 'ca.pem'), 'utf8');
    const caKey = readFileSync(join(dir, 'ca.key'), 'utf8');
    let n = 0;
    return {
      caCert,
      issue(san: string) {
        const d = mkdtempSync(join(tmpdir(), 'cloister-leaf-'));
        try {
          writeFileSync(join(d, 'ca.pem'), caCert);
          writeFileSync(join(d, 'ca.key'), caKey);
          writeFileSync(join(d, 'ext.cnf'), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
          run(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(d, 'leaf.key'), '-out', join(d, 'leaf.csr'), '-subj', `/CN=leaf-${++n}`]);
          run(['x509', '-req', '-in', join(d, 'leaf.csr'), '-CA', join(d, 'ca.pem'), '-CAkey', join(d, 'ca.key'), '-CAcreateserial', '-out', join(d, 'leaf.pem'), '-days', '1', '-extfile', join(d, 'ext.cnf')]);
          return { cert: readFileSync(join(d, 'leaf.pem'), 'utf8'), key: readFileSync(join(d, 'leaf.key'), 'utf8') };
        } finally {
          rmSync(d, { recursive: true, force: true });
        }
      },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
