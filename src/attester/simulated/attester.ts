/**
 * The simulated platform: development and tests without TEE hardware.
 *
 * It emits attestation documents in the exact Nitro format (COSE_Sign1 / ES384, the same
 * CBOR fields, cabundle root first) signed through a root -> intermediate -> leaf P-384
 * chain generated at start-up, and they go through the same verifier as real Nitro
 * documents. No hardware stands behind them: a client accepts them only when it is told
 * to trust this run's root explicitly, and every result is labelled simulated.
 *
 * PCRs follow the NSM extend rule (PCR = SHA-384(PCR || measurement), starting from 48 zero
 * bytes) over meaningful inputs: PCR0 the server code digest, PCR1 the effective config
 * digest, PCR2 each served model digest in order. PCR3..15 stay zero, as on Nitro.
 */
import { createHash, createPublicKey, generateKeyPairSync, KeyObject, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { CloisterError } from '../../errors.js';
import type { AttestationRequest, Attester, EvidenceBundle } from '../../core/types.js';
import { nitroBindingFor } from '../../protocol/binding.js';
import { toHex } from '../../core/hex.js';
import { encodeCbor } from '../../core/cbor.js';
import type { CborKey, CborValue } from '../../core/cbor.js';
import { signEs384 } from '../../verifier/nitro/cose.js';
import { NITRO_PCR_BYTES } from '../../verifier/nitro/document.js';
import { KeyUsageFlags } from '../../verifier/x509/certificate.js';
import { derToPem, issueCertificate } from './issue-certificate.js';
import { storeSimulatedRoot } from './root-store.js';
import type { SimulatedRoot } from './root-store.js';

export interface SimulatedMeasurementInputs {
  /** Digest of the server code (e.g. SHA-256 of the built bundle). Extended into PCR0. */
  readonly codeDigest?: Uint8Array;
  /** Digest of the effective server config. Extended into PCR1. */
  readonly configDigest?: Uint8Array;
  /** Digest of each served model, in key-config order. Each is extended into PCR2. */
  readonly modelDigests?: readonly Uint8Array[];
}

export interface SimulatedAttesterOptions {
  readonly measurements?: SimulatedMeasurementInputs;
  /** Milliseconds since the epoch. Default Date.now. */
  readonly clock?: () => number;
  /** Root and intermediate lifetime. Default 365 days. */
  readonly caValidityMs?: number;
  /** Leaf lifetime; the leaf is re-issued when less than a quarter remains. Default 3 hours, as on Nitro. */
  readonly leafValidityMs?: number;
  /**
   * A root kept from an earlier run (./root-store.ts), so clients' pinned root still
   * verifies after a restart. Default: a fresh root.
   */
  readonly root?: SimulatedRoot;
}

export interface SimulatedAttester extends Attester {
  readonly platform: 'simulated';
  readonly simulated: true;
  /** This run's root: hand it to a client that should accept simulated evidence. */
  readonly rootPem: string;
  readonly rootDer: Uint8Array;
  readonly rootSha256Hex: string;
  /** The PCR values every document carries. */
  readonly pcrs: ReadonlyMap<number, Uint8Array>;
  /** A ready `platforms.simulated` policy section naming PCR0..2 and this root. */
  policySection(): { pcrs: Record<string, string>; rootSha256: string };
  /** Write the root PEM (public, not secret) for a developer to hand to clients. */
  writeRootPem(path: string): Promise<void>;
  /** Keep this root in `dir` for the next run (./root-store.ts). */
  storeRoot(dir: string): Promise<void>;
}

const NSM_REPORTED_PCRS = 16;
const DEFAULT_CA_VALIDITY_MS = 365 * 24 * 3600 * 1000;
const DEFAULT_LEAF_VALIDITY_MS = 3 * 3600 * 1000;
const BACKDATE_MS = 60 * 1000;

function extend(pcr: Uint8Array, measurement: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha384').update(pcr).update(measurement).digest());
}

/** PCR0..15 for the given inputs (absent inputs extend an empty measurement, never leave zeros). */
export function simulatedPcrs(inputs: SimulatedMeasurementInputs = {}): Map<number, Uint8Array> {
  const zero = new Uint8Array(NITRO_PCR_BYTES);
  const pcrs = new Map<number, Uint8Array>();
  for (let i = 0; i < NSM_REPORTED_PCRS; i++) pcrs.set(i, zero);
  pcrs.set(0, extend(zero, inputs.codeDigest ?? new Uint8Array(0)));
  pcrs.set(1, extend(zero, inputs.configDigest ?? new Uint8Array(0)));
  const models = inputs.modelDigests ?? [];
  let p2: Uint8Array = zero;
  for (const d of models.length > 0 ? models : [new Uint8Array(0)]) p2 = extend(p2, d);
  pcrs.set(2, p2);
  return pcrs;
}

/**
 * A P-384 pair whose public KeyObject is imported from the SPKI DER that the generation job
 * itself encoded. Exporting the freshly generated public KeyObject instead (as issuing a
 * certificate does) can deadlock in Node 20 when a GC finalizes the key generation job
 * during the export (see generateX25519Encoded in src/crypto/hpke/kem.ts); an imported key
 * has no job behind it.
 */
function ecKeyPair(): { publicKey: KeyObject; privateKey: KeyObject } {
  const { privateKey, publicKey } = generateEcEncoded('ec', { namedCurve: 'P-384', publicKeyEncoding: { type: 'spki', format: 'der' } });
  if (!(privateKey instanceof KeyObject) || !(publicKey instanceof Uint8Array)) {
    throw new CloisterError('ATTESTER_FAILED', 'simulated attester key generation returned an unexpected form');
  }
  return { privateKey, publicKey: createPublicKey({ key: Buffer.from(publicKey), format: 'der', type: 'spki' }) };
}

/** generateKeyPairSync with only the public half encoded, which @types/node does not declare. */
const generateEcEncoded = generateKeyPairSync as unknown as (
  type: 'ec',
  options: { readonly namedCurve: 'P-384'; readonly publicKeyEncoding: { readonly type: 'spki'; readonly format: 'der' } },
) => { readonly privateKey: unknown; readonly publicKey: unknown };

/** Seconds resolution: X.509 UTCTime cannot carry milliseconds. */
function seconds(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

/** Create a simulated attester with a fresh root -> intermediate -> leaf chain. */
export async function createSimulatedAttester(options: SimulatedAttesterOptions = {}): Promise<SimulatedAttester> {
  const clock = options.clock ?? Date.now;
  const caValidity = options.caValidityMs ?? DEFAULT_CA_VALIDITY_MS;
  const leafValidity = options.leafValidityMs ?? DEFAULT_LEAF_VALIDITY_MS;
  if (!Number.isSafeInteger(caValidity) || caValidity <= 0 || !Number.isSafeInteger(leafValidity) || leafValidity <= 4000) {
    throw new CloisterError('INVALID_ARGUMENT', 'certificate validity periods must be positive integers (ms)');
  }
  const instance = toHex(new Uint8Array(randomBytes(8)));
  const moduleId = `sim-${instance}-enc${toHex(new Uint8Array(randomBytes(8)))}`;
  const start = clock();

  const root = options.root === undefined ? ecKeyPair() : { privateKey: options.root.privateKey, publicKey: createPublicKey(options.root.privateKey) };
  const rootCn = options.root?.commonName ?? `simulated-root-${instance}.cloister`;
  const rootDer =
    options.root?.certDer ??
    issueCertificate({
      subjectCommonName: rootCn,
      publicKey: root.publicKey,
      signingKey: root.privateKey,
      notBefore: seconds(start - BACKDATE_MS),
      notAfter: seconds(start + caValidity),
      ca: true,
      keyUsage: KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign | KeyUsageFlags.digitalSignature,
    });
  const inter = ecKeyPair();
  const interCn = `simulated-intermediate-${instance}.cloister`;
  const interDer = issueCertificate({
    subjectCommonName: interCn,
    publicKey: inter.publicKey,
    signingKey: root.privateKey,
    issuerCommonName: rootCn,
    issuerPublicKey: root.publicKey,
    notBefore: seconds(start - BACKDATE_MS),
    notAfter: seconds(start + caValidity),
    ca: true,
    pathLen: 0,
    keyUsage: KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign | KeyUsageFlags.digitalSignature,
  });

  let leaf: { der: Uint8Array; privateKey: KeyObject; notAfter: number } | undefined;
  const currentLeaf = (now: number): { der: Uint8Array; privateKey: KeyObject } => {
    if (leaf === undefined || now > leaf.notAfter - leafValidity / 4) {
      const pair = ecKeyPair();
      const notAfter = seconds(now + leafValidity).getTime();
      leaf = {
        der: issueCertificate({
          subjectCommonName: `${moduleId}.simulated.cloister`,
          publicKey: pair.publicKey,
          signingKey: inter.privateKey,
          issuerCommonName: interCn,
          issuerPublicKey: inter.publicKey,
          // Backdated a little, as the NSM does (its leaves start ~3 s before first use).
          notBefore: seconds(now - BACKDATE_MS),
          notAfter: new Date(notAfter),
          ca: false,
          keyUsage: KeyUsageFlags.digitalSignature | KeyUsageFlags.nonRepudiation,
        }),
        privateKey: pair.privateKey,
        notAfter,
      };
    }
    return leaf;
  };

  const pcrs = simulatedPcrs(options.measurements);
  const pcrMap = new Map<CborKey, CborValue>([...pcrs].map(([i, v]) => [i, v]));
  const document = (publicKey: Uint8Array, userData: Uint8Array | null, nonce: Uint8Array | null): Uint8Array => {
    const now = clock();
    const signer = currentLeaf(now);
    // Field order and types as the NSM emits them (AWS attestation document specification).
    const payload = encodeCbor(
      new Map<CborKey, CborValue>([
        ['module_id', moduleId],
        ['digest', 'SHA384'],
        ['timestamp', Math.floor(now)],
        ['pcrs', pcrMap],
        ['certificate', signer.der],
        ['cabundle', [rootDer, interDer]],
        ['public_key', publicKey],
        ['user_data', userData],
        ['nonce', nonce],
      ]),
      { sortKeys: false },
    );
    return signEs384(payload, signer.privateKey);
  };
  const rootPem = derToPem(rootDer);
  const rootSha256Hex = createHash('sha256').update(rootDer).digest('hex');

  return {
    platform: 'simulated',
    simulated: true,
    rootPem,
    rootDer: Uint8Array.from(rootDer),
    rootSha256Hex,
    pcrs: new Map([...pcrs].map(([i, v]) => [i, Uint8Array.from(v)])),
    policySection() {
      const out: Record<string, string> = {};
      for (const i of [0, 1, 2]) out[String(i)] = toHex(pcrs.get(i) ?? new Uint8Array(0));
      return { pcrs: out, rootSha256: rootSha256Hex };
    },
    async writeRootPem(path: string): Promise<void> {
      await writeFile(path, rootPem, { mode: 0o644 });
    },
    async storeRoot(dir: string): Promise<void> {
      await storeSimulatedRoot(dir, { privateKey: root.privateKey, certPem: rootPem });
    },
    async attest(request: AttestationRequest): Promise<EvidenceBundle> {
      try {
        const binding = nitroBindingFor(request.keyConfig, request.hpkePublicKey, request.nonce);
        return { platform: 'simulated', evidence: document(binding.publicKey, binding.userData, binding.nonce), keyConfig: Uint8Array.from(request.keyConfig) };
      } catch (cause) {
        if (cause instanceof CloisterError && cause.code === 'INVALID_ARGUMENT') throw cause;
        throw new CloisterError('ATTESTER_FAILED', 'simulated attester failed', { cause });
      }
    },
    async attestPublicKey(publicKeyDer: Uint8Array): Promise<Uint8Array> {
      if (!(publicKeyDer instanceof Uint8Array) || publicKeyDer.byteLength === 0 || publicKeyDer.byteLength > 1024) {
        throw new CloisterError('INVALID_ARGUMENT', 'public key must be 1..1024 bytes (the NSM limit)');
      }
      try {
        return document(Uint8Array.from(publicKeyDer), null, null);
      } catch (cause) {
        throw new CloisterError('ATTESTER_FAILED', 'simulated attester failed', { cause });
      }
    },
  };
}
