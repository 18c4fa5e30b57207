/**
 * Nitro attestation documents captured on real hardware (test/vectors/nitro): each
 * verifies at its own timestamp with the bundled AWS root, and every kind of tampering,
 * a wrong time, a wrong root and a wrong PCR policy are rejected.
 */
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { AWS_NITRO_ROOT_G1_PEM, AWS_NITRO_ROOT_G1_SHA256_HEX, awsNitroRootDer } from '../../src/verifier/nitro/aws-root.js';
import { decodeCbor } from '../../src/core/cbor.js';
import { decodeCoseSign1, sigStructure } from '../../src/verifier/nitro/cose.js';
import { parseNitroDocument } from '../../src/verifier/nitro/document.js';
import { verifyNitroDocument } from '../../src/verifier/nitro/verify.js';
import type { VerificationReport } from '../../src/core/types.js';
import { createSimulatedAttester } from '../../src/attester/simulated/attester.js';
import { hex } from '../helpers/bytes.js';
import { describeWithVectors, hasVectors, readVector, readVectorJson, readVectorText, vectorPath } from '../helpers/vectors.js';

const haveVectors = hasVectors('nitro');

interface Sidecar {
  readonly file: string;
  readonly timestamp_ms: number;
  readonly module_id: string;
  readonly debug_mode_pcr0_2_zero: boolean;
  readonly pcrs_decoded: Readonly<Record<string, string>>;
  readonly leaf_not_after: string;
}

function loadVectors(): { name: string; bytes: Uint8Array; meta: Sidecar }[] {
  if (!haveVectors) return [];
  return readdirSync(vectorPath('nitro'))
    .filter((f) => f.endsWith('.cbor'))
    .sort()
    .map((f) => {
      const meta = readVectorJson<Sidecar>(`nitro/${f.replace(/\.cbor$/, '.json')}`);
      return { name: f, bytes: readVector(`nitro/${f}`), meta };
    });
}

const vectors = loadVectors();

function failedStep(report: VerificationReport): { step: string; code: string | undefined } | undefined {
  const s = report.steps.find((x) => !x.ok);
  return s === undefined ? undefined : { step: s.step, code: s.code };
}

function pcrMap(meta: Sidecar, indices: readonly number[]): Map<number, Uint8Array> {
  return new Map(indices.map((i) => [i, hex(meta.pcrs_decoded[String(i)] ?? '')]));
}

describe('AWS Nitro root constant', () => {
  it('has the published DER SHA-256 and matches the vector file', () => {
    expect(createHash('sha256').update(awsNitroRootDer()).digest('hex')).toBe(AWS_NITRO_ROOT_G1_SHA256_HEX);
    if (haveVectors) {
      expect(readVectorText('nitro/aws_nitro_root_g1.pem').trim()).toBe(AWS_NITRO_ROOT_G1_PEM);
    }
  });
});

describeWithVectors('nitro', 'real Nitro documents', () => {
  it('finds the five captured documents', () => {
    expect(vectors.length).toBe(5);
  });

  for (const { name, bytes, meta } of vectors) {
    describe(name, () => {
      const at = new Date(meta.timestamp_ms);

      // A debug-mode document (PCR0..2 zero) passes every cryptographic stage and is then
      // refused at the policy stage, with or without a PCR policy (DEBUG_MODE).
      const passed = (report: VerificationReport): boolean => {
        if (!meta.debug_mode_pcr0_2_zero) return report.ok;
        const failed = report.steps.filter((s) => !s.ok);
        return !report.ok && failed.length === 1 && failed[0]?.step === 'policy' && failed[0].code === 'DEBUG_MODE';
      };

      it('verifies at its own timestamp with the bundled AWS root (a debug document: refused as DEBUG_MODE without any policy)', () => {
        const report = verifyNitroDocument(bytes, { at });
        expect(passed(report)).toBe(true);
        expect(report.platform).toBe('nitro');
        expect(report.simulated).toBe(false);
        expect(report.steps.map((s) => s.step)).toEqual(
          meta.debug_mode_pcr0_2_zero ? ['decode', 'cose', 'certificate-chain', 'signature', 'freshness', 'policy'] : ['decode', 'cose', 'certificate-chain', 'signature', 'freshness', 'policy', 'binding'],
        );
        const claims = report.claims;
        expect(claims?.details['moduleId']).toBe(meta.module_id);
        expect(claims?.timestamp?.getTime()).toBe(meta.timestamp_ms);
        for (const [i, hex] of Object.entries(meta.pcrs_decoded)) expect(claims?.measurements[`PCR${i}`]).toBe(hex);
        expect(claims?.details['debugMode']).toBe(meta.debug_mode_pcr0_2_zero);
      });

      it('verifies with the AWS root given explicitly as PEM', () => {
        expect(passed(verifyNitroDocument(bytes, { at, trustedRoots: [AWS_NITRO_ROOT_G1_PEM] }))).toBe(true);
      });

      it('is rejected at the current time', () => {
        const report = verifyNitroDocument(bytes);
        expect(report.ok).toBe(false);
        expect(failedStep(report)).toEqual({ step: 'certificate-chain', code: 'CERT_EXPIRED' });
      });

      it('is rejected when older than maxAgeMs although the chain is still valid', () => {
        const later = new Date(meta.timestamp_ms + 10 * 60 * 1000);
        expect(failedStep(verifyNitroDocument(bytes, { at: later }))).toEqual({ step: 'freshness', code: 'EVIDENCE_STALE' });
        expect(passed(verifyNitroDocument(bytes, { at: later, maxAgeMs: 11 * 60 * 1000 }))).toBe(true);
      });

      it('is rejected when from the future beyond the clock skew', () => {
        // 50 ms early: still inside every certificate's validity (leaves start on a whole second).
        const earlier = new Date(meta.timestamp_ms - 50);
        expect(passed(verifyNitroDocument(bytes, { at: earlier, maxClockSkewMs: 50 }))).toBe(true);
        const r = verifyNitroDocument(bytes, { at: earlier, maxClockSkewMs: 49 });
        expect(failedStep(r)).toEqual({ step: 'freshness', code: 'EVIDENCE_STALE' });
      });

      it('is rejected with another root', async () => {
        const sim = await createSimulatedAttester();
        const report = verifyNitroDocument(bytes, { at, trustedRoots: [sim.rootPem] });
        expect(failedStep(report)).toEqual({ step: 'certificate-chain', code: 'ROOT_UNTRUSTED' });
      });

      it('is rejected under a PCR policy it does not meet', () => {
        const pcrs = pcrMap(meta, [0, 1, 2, 8]);
        const wrong = pcrs.get(8) ?? new Uint8Array(48);
        wrong[47] = (wrong[47] ?? 0) ^ 1;
        const report = verifyNitroDocument(bytes, { at, pcrs });
        expect(report.ok).toBe(false);
        expect(failedStep(report)?.step).toBe('policy');
        // Claims are still reported: the cryptographic stages passed.
        expect(report.claims?.measurements['PCR0']).toBe(meta.pcrs_decoded['0']);
      });

      it('rejects a policy naming a PCR the document lacks', () => {
        const report = verifyNitroDocument(bytes, { at, pcrs: new Map([[31, new Uint8Array(48).fill(7)]]) });
        expect(failedStep(report)?.step).toBe('policy');
      });

      if (meta.debug_mode_pcr0_2_zero) {
        it('debug document fails every PCR policy, even one it literally meets', () => {
          for (const indices of [[0], [0, 1, 2], [4], [4, 8]]) {
            const report = verifyNitroDocument(bytes, { at, pcrs: pcrMap(meta, indices) });
            expect(failedStep(report)).toEqual({ step: 'policy', code: 'DEBUG_MODE' });
          }
        });
      } else {
        it('production document meets a policy with its own PCR0/1/2/8', () => {
          const report = verifyNitroDocument(bytes, { at, pcrs: pcrMap(meta, [0, 1, 2, 8]) });
          expect(report.ok).toBe(true);
          expect(report.steps.find((s) => s.step === 'policy')?.detail).toBe('4 PCRs match');
        });
      }

      it('rejects trailing bytes and truncation', () => {
        const longer = new Uint8Array(bytes.byteLength + 1);
        longer.set(bytes);
        expect(failedStep(verifyNitroDocument(longer, { at }))?.code).toBe('EVIDENCE_MALFORMED');
        expect(failedStep(verifyNitroDocument(bytes.subarray(0, bytes.byteLength - 1), { at }))?.code).toBe('EVIDENCE_MALFORMED');
      });

      it('accepts the same document wrapped in COSE tag 18', () => {
        const tagged = new Uint8Array(bytes.byteLength + 1);
        tagged[0] = 0xd2;
        tagged.set(bytes, 1);
        expect(passed(verifyNitroDocument(tagged, { at }))).toBe(true);
        const wrongTag = Uint8Array.from(tagged);
        wrongTag[0] = 0xd1; // tag 17 (COSE_Mac0)
        expect(failedStep(verifyNitroDocument(wrongTag, { at }))?.code).toBe('EVIDENCE_MALFORMED');
      });

      it('its envelope is the deterministic form, and any other framing of the same signed bytes is refused', () => {
        // What every real document here is: untagged, 84 44 a1 01 38 22 a0 59 <len16> ... 58 60 <sig>.
        expect(Buffer.from(bytes.subarray(0, 8)).toString('hex')).toBe('8444a1013822a059');
        expect(Buffer.from(bytes.subarray(bytes.byteLength - 98, bytes.byteLength - 96)).toString('hex')).toBe('5860');
        const reframed: [string, Uint8Array][] = [
          ['indefinite outer array', Uint8Array.from([0x9f, ...bytes.subarray(1), 0xff])],
          ['non-shortest outer array head', Uint8Array.from([0x98, 0x04, ...bytes.subarray(1)])],
          ['non-shortest signature head', Uint8Array.from([...bytes.subarray(0, bytes.byteLength - 98), 0x59, 0x00, 0x60, ...bytes.subarray(bytes.byteLength - 96)])],
        ];
        for (const [name, b] of reframed) expect(failedStep(verifyNitroDocument(b, { at })), name).toEqual({ step: 'decode', code: 'EVIDENCE_MALFORMED' });
      });

      it('rejects a single flipped bit in every region (sampled across the bytes of each)', () => {
        const cose = decodeCoseSign1(bytes);
        const doc = parseNitroDocument(cose.payload);
        const regions: { name: string; start: number; length: number }[] = [];
        const find = (needle: Uint8Array, nameOf: string): void => {
          const at0 = Buffer.from(bytes).indexOf(Buffer.from(needle));
          expect(at0, nameOf).toBeGreaterThanOrEqual(0);
          regions.push({ name: nameOf, start: at0, length: needle.byteLength });
        };
        find(cose.protectedBytes, 'protected header');
        find(cose.signature, 'signature');
        find(doc.certificate, 'certificate');
        doc.cabundle.forEach((c, i) => find(c, `cabundle[${i}]`));
        // The payload as a whole (covers module_id, timestamp, PCRs, keys ...).
        find(cose.payload, 'payload');
        let tried = 0;
        for (const region of regions) {
          // Sample ~24 positions evenly over the region, plus its first and last byte, with
          // a different bit each time; each flip must be rejected.
          const positions = new Set<number>([0, region.length - 1]);
          for (let k = 0; k < 24; k++) positions.add(Math.floor((k * region.length) / 24));
          let bit = 0;
          for (const p of positions) {
            const tampered = Uint8Array.from(bytes);
            const idx = region.start + p;
            tampered[idx] = (tampered[idx] ?? 0) ^ (1 << (bit++ % 8));
            const report = verifyNitroDocument(tampered, { at });
            expect(report.ok, `${region.name} byte ${p}`).toBe(false);
            tried++;
          }
        }
        expect(tried).toBeGreaterThan(100);
      });

      it('never re-encodes: the signed Sig_structure embeds the payload bytes verbatim', () => {
        const cose = decodeCoseSign1(bytes);
        const sig = sigStructure(cose.protectedBytes, cose.payload);
        expect(Buffer.from(sig).indexOf(Buffer.from(cose.payload))).toBe(sig.byteLength - cose.payload.byteLength);
        expect(decodeCbor(sig)).toBeInstanceOf(Array);
      });
    });
  }

  it('does not mutate or alias the caller buffer', () => {
    const first = vectors[0];
    if (first === undefined) return;
    const copy = Uint8Array.from(first.bytes);
    const report = verifyNitroDocument(copy, { at: new Date(first.meta.timestamp_ms) });
    expect(Buffer.from(copy).equals(Buffer.from(first.bytes))).toBe(true);
    copy.fill(0);
    expect(report.claims?.details['moduleId']).toBe(first.meta.module_id);
  });
});
