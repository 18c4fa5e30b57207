/**
 * Development policies for the SIMULATED platform only.
 *
 * A policy is what makes a client trust a server, so for real platforms it must come from the
 * image build (the measured PCRs / launch digest), never from the server being checked. The
 * simulated platform has no hardware behind it anyway; these helpers write the policy that
 * matches a running simulated server, so developers can try the full verify-then-seal flow.
 * They refuse any other platform.
 */
import { createHash } from 'node:crypto';
import { CloisterError } from '../errors.js';
import type { EvidenceBundle } from '../core/types.js';
import { decodeCoseSign1 } from '../verifier/nitro/cose.js';
import { parseNitroDocument } from '../verifier/nitro/document.js';
import { decodeKeyConfig } from '../protocol/key-config.js';
import { toHex } from '../core/hex.js';

/** Evidence age a development policy accepts. */
export const DEV_POLICY_MAX_AGE_SECONDS = 300;

export interface DevelopmentPolicyInput {
  /** PCR index -> 48-byte value (PCR0..2 for the simulated platform). */
  readonly pcrs: ReadonlyMap<number, Uint8Array> | Readonly<Record<string, string>>;
  /** SHA-256 of the simulated root DER, hex. */
  readonly rootSha256Hex: string;
  readonly models: readonly { readonly name: string; readonly digest: Uint8Array }[];
}

/** The policy JSON object (see src/verifier/policy.ts) for a simulated server. */
export function developmentPolicy(input: DevelopmentPolicyInput): Record<string, unknown> {
  const pcrs: Record<string, string> = {};
  if (input.pcrs instanceof Map) {
    for (const i of [0, 1, 2]) {
      const v = input.pcrs.get(i);
      if (v === undefined) throw new CloisterError('EVIDENCE_MALFORMED', `simulated evidence lacks PCR${i}`);
      pcrs[String(i)] = toHex(v);
    }
  } else {
    Object.assign(pcrs, input.pcrs);
  }
  return {
    version: 1,
    platforms: { simulated: { pcrs, rootSha256: input.rootSha256Hex, maxAgeSeconds: DEV_POLICY_MAX_AGE_SECONDS } },
    models: Object.fromEntries(input.models.map((m) => [m.name, toHex(m.digest)])),
    nonceRequired: false,
  };
}

/**
 * The development policy matching the server that produced `bundle`. Reads the evidence
 * WITHOUT verifying it (that is the point: it writes down what the server reports), so it
 * refuses anything but the simulated platform.
 */
export function developmentPolicyFromEvidence(bundle: EvidenceBundle): Record<string, unknown> {
  if (bundle.platform !== 'simulated') {
    throw new CloisterError('POLICY_INVALID', `refusing to derive a policy from ${bundle.platform} evidence: take it from the image build`);
  }
  const doc = parseNitroDocument(decodeCoseSign1(bundle.evidence).payload);
  const root = doc.cabundle[0];
  if (root === undefined) throw new CloisterError('EVIDENCE_MALFORMED', 'simulated evidence has no root certificate');
  const kc = decodeKeyConfig(bundle.keyConfig);
  if (kc.platform !== 'simulated') throw new CloisterError('POLICY_INVALID', 'key config is not from a simulated server');
  return developmentPolicy({
    pcrs: doc.pcrs,
    rootSha256Hex: createHash('sha256').update(root).digest('hex'),
    models: kc.models,
  });
}
