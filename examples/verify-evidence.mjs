// @ts-check
/**
 * Verify attestation evidence offline, as an auditor does: here a real AWS Nitro Enclave
 * attestation document, checked against the AWS Nitro root bundled with Cloister, at the time
 * it was made (evidence is only fresh for minutes).
 *
 *   node examples/verify-evidence.mjs [document.cbor] [ISO time]
 *
 * The default file is the public vector in ../shared/vectors (test/vectors in a fresh clone,
 * when present). `cloister verify FILE --platform nitro --at TIME` does the same on the command
 * line, and `cloister attest --url U --out ev.cbor` saves a live server's evidence.
 */
import { existsSync, readFileSync } from 'node:fs';
import { verifyNitroDocument } from 'cloister';

const candidates = ['../shared/vectors/nitro/nitro_base_nov2024.cbor', 'test/vectors/nitro/nitro_base_nov2024.cbor'];
const file = process.argv[2] ?? candidates.find((f) => existsSync(f));
if (file === undefined) {
  console.error('usage: node examples/verify-evidence.mjs <nitro-document.cbor> [ISO time]');
  process.exit(2);
}
const at = new Date(process.argv[3] ?? '2024-11-30T16:22:48Z');
const report = verifyNitroDocument(new Uint8Array(readFileSync(file)), { at });
for (const step of report.steps) console.log(`${step.ok ? 'ok  ' : 'FAIL'} ${step.step}${step.detail === undefined ? '' : `: ${step.detail}`}`);
console.log(report.ok ? 'verified' : 'NOT verified');
process.exitCode = report.ok ? 0 : 1;
