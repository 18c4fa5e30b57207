/**
 * AWS KMS as the data-key wrapper of a sealed model (docs/KEYS.md "AWS KMS for Nitro Enclaves").
 * Sealing: GenerateDataKey (AES_256) under the model owner's KMS key; the manifest keeps the
 * CiphertextBlob. Serving, inside the enclave: a fresh RSA-2048 key pair generated in enclave
 * memory for this one call, an attestation document whose public_key is that key, and
 * Decrypt with `Recipient`: KMS checks the document against the key policy
 * (kms:RecipientAttestation:PCR0 ...) and answers CiphertextForRecipient, which only this
 * enclave can open (./cms.ts). KMS accepts a replayed attestation document, so the private
 * key is the secret: it never leaves this function.
 * Credentials come from the SDK's default provider chain (environment, profile, IMDS); in an
 * enclave the parent passes them in (docs/KEYS.md).
 */
import { generateKeyPairSync } from 'node:crypto';
import { DecryptCommand, GenerateDataKeyCommand, KMSClient, KMSServiceException } from '@aws-sdk/client-kms';
import { CloisterError } from '../errors.js';
import type { Attester } from '../core/types.js';
import { openEnvelopedData } from './cms.js';
import { cloisterCause, Outbound } from './outbound.js';
import type { OutboundOptions } from './outbound.js';

export const DEFAULT_KMS_TIMEOUT_MS = 15_000;
export const DATA_KEY_BYTES = 32;

/** KMS answers are a few KiB (a CiphertextForRecipient of 2048-bit RSA is under 1 KiB). */
export const MAX_KMS_RESPONSE_BYTES = 64 * 1024;

export interface KmsTarget {
  readonly region: string;
  /** e.g. a FIPS endpoint or a test stand-in. Default: the SDK's regional endpoint. */
  readonly endpoint?: string;
  readonly timeoutMs?: number;
  /**
   * How connections are made (src/keys/outbound.ts): through the parent's egress relay in a
   * Nitro Enclave (TLS end to end to the KMS host name), extra CAs; and the bound on one
   * answer, default MAX_KMS_RESPONSE_BYTES.
   */
  readonly outbound?: OutboundOptions;
}

function client(t: KmsTarget, outbound: Outbound): KMSClient {
  if (!/^[a-z]{2}(-[a-z]+)+-\d{1,2}$/.test(t.region)) throw new CloisterError('INVALID_ARGUMENT', `'${t.region}' is not an AWS region`);
  return new KMSClient({
    region: t.region,
    ...(t.endpoint === undefined ? {} : { endpoint: t.endpoint }),
    maxAttempts: 2,
    // NodeHttpHandler options: our agents bound every connection in size and time.
    requestHandler: { httpAgent: outbound.httpAgent, httpsAgent: outbound.httpsAgent, connectionTimeout: outbound.connectTimeoutMs, requestTimeout: outbound.timeoutMs },
  });
}

async function send<T>(t: KmsTarget, what: string, fn: (c: KMSClient, signal: AbortSignal) => Promise<T>): Promise<T> {
  const timeoutMs = t.timeoutMs ?? DEFAULT_KMS_TIMEOUT_MS;
  const outbound = new Outbound({ maxResponseBytes: MAX_KMS_RESPONSE_BYTES, timeoutMs, ...t.outbound });
  const c = client(t, outbound);
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    return await fn(c, signal);
  } catch (cause) {
    const where = t.endpoint ?? `the ${t.region} endpoint`;
    if (signal.aborted && outbound.tripped === undefined) {
      throw new CloisterError('TIMEOUT', `AWS KMS ${what} at ${where} did not finish within ${timeoutMs} ms`, { cause, detail: { endpoint: where, limitMs: timeoutMs } });
    }
    // A bound of ours cut the connection: say which, not the SDK's generic socket error.
    const limit = outbound.tripped ?? cloisterCause(cause);
    if (limit !== undefined) throw new CloisterError(limit.code, `AWS KMS ${what} at ${where}: ${limit.message}`, { cause, detail: { endpoint: where } });
    if (cause instanceof KMSServiceException) {
      throw new CloisterError('KMS_REFUSED', `AWS KMS ${what} at ${where} refused: ${cause.name} (HTTP ${cause.$metadata.httpStatusCode ?? '?'})`, { cause, detail: { endpoint: where, type: cause.name } });
    }
    if (cause instanceof Error && cause.name === 'CredentialsProviderError') {
      throw new CloisterError('CONFIG_INVALID', `AWS KMS ${what}: no AWS credentials (the SDK's default provider chain found none)`, { cause });
    }
    throw new CloisterError('CONNECTION_FAILED', `AWS KMS ${what} at ${where} failed within ${timeoutMs} ms`, { cause, detail: { endpoint: where } });
  } finally {
    c.destroy();
    outbound.destroy();
  }
}

/** `model seal --kms-key-id`: a fresh data key and its KMS ciphertext (the caller zeroes `plaintext`). */
export async function kmsGenerateDataKey(keyId: string, t: KmsTarget): Promise<{ plaintext: Uint8Array; ciphertextBlob: Uint8Array }> {
  const out = await send(t, 'GenerateDataKey', (c, abortSignal) => c.send(new GenerateDataKeyCommand({ KeyId: keyId, KeySpec: 'AES_256' }), { abortSignal }));
  const plaintext = out.Plaintext;
  const blob = out.CiphertextBlob;
  if (!(plaintext instanceof Uint8Array) || plaintext.byteLength !== DATA_KEY_BYTES || !(blob instanceof Uint8Array) || blob.byteLength === 0) {
    plaintext?.fill(0);
    throw new CloisterError('MALFORMED', `AWS KMS GenerateDataKey did not return a ${DATA_KEY_BYTES}-byte key and its ciphertext`);
  }
  return { plaintext, ciphertextBlob: blob };
}

/**
 * In the enclave: the data key behind `ciphertextBlob`, released by KMS only to an attestation
 * document that matches the KMS key policy. The caller zeroes the result.
 */
export async function kmsDecryptForEnclave(options: KmsTarget & { readonly keyId: string; readonly ciphertextBlob: Uint8Array; readonly attester: Attester }): Promise<Uint8Array> {
  const { attester } = options;
  if (attester.attestPublicKey === undefined) {
    throw new CloisterError('CONFIG_INVALID', `AWS KMS Recipient needs a Nitro attestation document; platform ${attester.platform} has none (use --key-broker)`);
  }
  // Per call, in memory only: a replayed document is useless without this private key.
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const spki = new Uint8Array(publicKey.export({ type: 'spki', format: 'der' }));
  const document = await attester.attestPublicKey.call(attester, spki);
  const out = await send(options, 'Decrypt', (c, abortSignal) =>
    c.send(
      new DecryptCommand({
        KeyId: options.keyId,
        CiphertextBlob: options.ciphertextBlob,
        EncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
        Recipient: { AttestationDocument: document, KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256' },
      }),
      { abortSignal },
    ),
  );
  if (out.Plaintext !== undefined && out.Plaintext.byteLength > 0) {
    out.Plaintext.fill(0);
    throw new CloisterError('MALFORMED', 'AWS KMS Decrypt returned the plaintext in the clear although a Recipient was given');
  }
  if (!(out.CiphertextForRecipient instanceof Uint8Array)) throw new CloisterError('MALFORMED', 'AWS KMS Decrypt returned no CiphertextForRecipient');
  return openEnvelopedData(out.CiphertextForRecipient, privateKey, { plaintextBytes: DATA_KEY_BYTES });
}
