/**
 * AWS KMS wrapping of sealed models (docs/KEYS.md "AWS KMS for Nitro Enclaves"), against a
 * loopback stand-in that speaks the KMS JSON protocol (X-Amz-Target TrentService.*, SigV4
 * Authorization) and answers Decrypt-with-Recipient with a real CMS EnvelopedData built for
 * the RSA key in the attestation document, as AWS documents it.
 */
import { constants, createCipheriv, createPublicKey, generateKeyPairSync, publicEncrypt, randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier } from '@peculiar/asn1-x509';
import { ContentInfo, EncryptedContent, EncryptedContentInfo, EnvelopedData, id_data, id_envelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo, RecipientInfos } from '@peculiar/asn1-cms';
import { id_mgf1, id_pSpecified, id_RSAES_OAEP, id_sha256, RsaEsOaepParams } from '@peculiar/asn1-rsa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { CloisterError } from '../../src/errors.js';
import { decodeCbor } from '../../src/core/cbor.js';
import { createSimulatedAttester } from '../../src/attester/simulated/index.js';
import type { SimulatedAttester } from '../../src/attester/simulated/index.js';
import { OnnxEngine } from '../../src/inference/onnx/engine.js';
import type { EngineRequest } from '../../src/inference/types.js';
import { sealModelDirectory } from '../../src/inference/sealed-model/seal.js';
import { openEnvelopedData, ID_AES256_CBC } from '../../src/keys/cms.js';
import { kmsDecryptForEnclave, kmsGenerateDataKey } from '../../src/keys/kms.js';
import { openSealedModels } from '../../src/server/sealed-models.js';
import { buildDemoModels } from '../../tools/demo-model/build.js';
import { until } from '../helpers/until.js';
import { makeTestCa } from '../helpers/test-ca.js';
import type { TestCa } from '../helpers/test-ca.js';
import { startEgressRelay } from '../../src/host/egress.js';

type Mode = 'ok' | 'deny' | 'tamper-key' | 'tamper-content' | 'wrong-recipient' | 'trailing' | 'aes128' | 'huge' | 'slow';
const KEY_ARN = 'arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';
const SIGV4 = /^AWS4-HMAC-SHA256 Credential=AKIDFAKEFAKE\/\d{8}\/us-east-1\/kms\/aws4_request, SignedHeaders=[a-z0-9;-]+, Signature=[0-9a-f]{64}$/;

let server: Server;
/** The same stand-in over TLS, its certificate (IP:127.0.0.1) from a CA made in this test. */
let tlsServer: HttpsServer;
let testCa: TestCa;
let endpoint: string;
let mode: Mode = 'ok';
/** The stand-in's key policy: kms:RecipientAttestation:PCR0 (hex); default the in-process attester's. */
let policyPcr0: string | undefined;
const seen: string[] = [];
const blobs = new Map<string, Buffer>();
let attester: SimulatedAttester;
let root: string;
let MODEL: string;

function oaepSha256(): AlgorithmIdentifier {
  const sha256 = new AlgorithmIdentifier({ algorithm: id_sha256 });
  const params = new RsaEsOaepParams({
    hashAlgorithm: sha256,
    maskGenAlgorithm: new AlgorithmIdentifier({ algorithm: id_mgf1, parameters: AsnConvert.serialize(sha256) }),
    pSourceAlgorithm: new AlgorithmIdentifier({ algorithm: id_pSpecified, parameters: AsnConvert.serialize(new OctetString(0)) }),
  });
  return new AlgorithmIdentifier({ algorithm: id_RSAES_OAEP, parameters: AsnConvert.serialize(params) });
}

/** CiphertextForRecipient as KMS builds it: RSAES-OAEP-SHA256 key transport, AES-256-CBC content. */
function envelopedDataFor(recipient: KeyObject, plaintext: Uint8Array, m: Mode = 'ok'): Uint8Array {
  const cek = randomBytes(m === 'aes128' ? 16 : 32);
  const iv = randomBytes(16);
  const c = createCipheriv(m === 'aes128' ? 'aes-128-cbc' : 'aes-256-cbc', cek, iv);
  const content = Buffer.concat([c.update(plaintext), c.final()]);
  const encryptedKey = publicEncrypt({ key: recipient, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, cek);
  if (m === 'tamper-key') encryptedKey[10] = (encryptedKey[10] ?? 0) ^ 1;
  if (m === 'tamper-content') content[content.length - 1] = (content[content.length - 1] ?? 0) ^ 1;
  const ktri = new KeyTransRecipientInfo({
    version: 2,
    rid: new RecipientIdentifier({ subjectKeyIdentifier: new OctetString(randomBytes(20)) }),
    keyEncryptionAlgorithm: oaepSha256(),
    encryptedKey: new OctetString(encryptedKey),
  });
  const env = new EnvelopedData({
    version: 2,
    recipientInfos: new RecipientInfos([new RecipientInfo({ ktri })]),
    encryptedContentInfo: new EncryptedContentInfo({
      contentType: id_data,
      contentEncryptionAlgorithm: new AlgorithmIdentifier({ algorithm: m === 'aes128' ? '2.16.840.1.101.3.4.1.2' : ID_AES256_CBC, parameters: AsnConvert.serialize(new OctetString(iv)) }),
      encryptedContent: new EncryptedContent({ value: new OctetString(content) }),
    }),
  });
  const der = new Uint8Array(AsnConvert.serialize(new ContentInfo({ contentType: id_envelopedData, content: AsnConvert.serialize(env) })));
  return m === 'trailing' ? Uint8Array.from([...der, 0]) : der;
}

/** The public_key of a (simulated) Nitro attestation document; a stand-in for KMS's own parse. */
function recipientKey(document: Uint8Array): KeyObject {
  const cose = decodeCbor(document[0] === 0xd2 ? document.subarray(1) : document, { requireCanonical: false });
  if (!Array.isArray(cose) || !(cose[2] instanceof Uint8Array)) throw new Error('not COSE_Sign1');
  const payload = decodeCbor(cose[2], { requireCanonical: false });
  if (!(payload instanceof Map)) throw new Error('payload is not a map');
  const pcrs = payload.get('pcrs');
  // The key policy: kms:RecipientAttestation:PCR0 must be this enclave's.
  const want = policyPcr0 ?? Buffer.from(attester.pcrs.get(0) ?? []).toString('hex');
  if (!(pcrs instanceof Map) || !(pcrs.get(0) instanceof Uint8Array) || Buffer.from(pcrs.get(0) as Uint8Array).toString('hex') !== want) throw new Error('PCR0 mismatch');
  const pk = payload.get('public_key');
  if (!(pk instanceof Uint8Array)) throw new Error('no public_key');
  return createPublicKey({ key: Buffer.from(pk), format: 'der', type: 'spki' });
}

function kmsError(res: ServerResponse, status: number, type: string, message: string): void {
  res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-errortype': type });
  res.end(JSON.stringify({ __type: type, message }));
}

beforeAll(async () => {
  process.env['AWS_ACCESS_KEY_ID'] = 'AKIDFAKEFAKE';
  process.env['AWS_SECRET_ACCESS_KEY'] = 'fake-secret-for-the-loopback-stand-in';
  process.env['AWS_EC2_METADATA_DISABLED'] = 'true';
  root = await mkdtemp(join(tmpdir(), 'cloister-kms-'));
  MODEL = (await buildDemoModels({ outDir: join(root, 'models') })).classifierDir;
  attester = await createSimulatedAttester();
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const target = String(req.headers['x-amz-target'] ?? '');
      seen.push(target);
      if (req.method !== 'POST' || req.headers['content-type'] !== 'application/x-amz-json-1.1' || !SIGV4.test(String(req.headers['authorization'] ?? '')) || !/^\d{8}T\d{6}Z$/.test(String(req.headers['x-amz-date'] ?? ''))) {
        kmsError(res, 400, 'IncompleteSignatureException', 'bad request signature');
        return;
      }
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      if (mode === 'huge') {
        // A hostile endpoint: a valid-looking answer that never stops growing.
        res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' });
        res.end(`{"KeyId":"${'A'.repeat(4 * 1024 * 1024)}"}`);
        return;
      }
      if (mode === 'slow') {
        res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' });
        const drip = setInterval(() => (res.destroyed ? clearInterval(drip) : res.write(' ')), 20);
        res.on('close', () => clearInterval(drip));
        return;
      }
      if (mode === 'deny') return kmsError(res, 400, 'AccessDeniedException', 'not allowed by the key policy');
      if (target === 'TrentService.GenerateDataKey') {
        if (body['KeyId'] !== KEY_ARN || body['KeySpec'] !== 'AES_256') return kmsError(res, 400, 'ValidationException', 'bad GenerateDataKey');
        const key = randomBytes(32);
        const blob = randomBytes(64).toString('base64');
        blobs.set(blob, key);
        res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' });
        res.end(JSON.stringify({ KeyId: KEY_ARN, Plaintext: key.toString('base64'), CiphertextBlob: blob }));
        return;
      }
      if (target === 'TrentService.Decrypt') {
        const key = blobs.get(String(body['CiphertextBlob']));
        const r = body['Recipient'] as Record<string, unknown> | undefined;
        if (key === undefined) return kmsError(res, 400, 'InvalidCiphertextException', 'unknown blob');
        if (r?.['KeyEncryptionAlgorithm'] !== 'RSAES_OAEP_SHA_256' || typeof r['AttestationDocument'] !== 'string') return kmsError(res, 400, 'ValidationException', 'Recipient required');
        let recipient: KeyObject;
        try {
          recipient = recipientKey(Buffer.from(r['AttestationDocument'], 'base64'));
        } catch {
          return kmsError(res, 400, 'AccessDeniedException', 'attestation does not match the key policy');
        }
        if (mode === 'wrong-recipient') recipient = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
        const cms = envelopedDataFor(recipient, key, mode);
        res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' });
        res.end(JSON.stringify({ KeyId: KEY_ARN, CiphertextForRecipient: Buffer.from(cms).toString('base64'), EncryptionAlgorithm: 'SYMMETRIC_DEFAULT' }));
        return;
      }
      kmsError(res, 400, 'UnknownOperationException', target);
    });
  };
  server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  testCa = makeTestCa('kms stand-in CA');
  tlsServer = createHttpsServer(testCa.issue('IP:127.0.0.1'), handler);
  await new Promise<void>((r) => tlsServer.listen(0, '127.0.0.1', r));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((r) => server.close(() => r()));
  await new Promise<void>((r) => tlsServer.close(() => r()));
  await rm(root, { recursive: true, force: true });
});

async function codeOf(p: Promise<unknown>): Promise<CloisterError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(CloisterError);
  return err as CloisterError;
}

async function classify(e: OnnxEngine, text: string): Promise<unknown> {
  const request: EngineRequest = { op: 'classify', model: 'c', input: text, params: {}, stream: false };
  const out: unknown[] = [];
  for await (const c of e.run(request, { signal: new AbortController().signal })) out.push(c);
  return out[0];
}

async function sealWithKms(name: string): Promise<string> {
  mode = 'ok';
  const { plaintext, ciphertextBlob } = await kmsGenerateDataKey(KEY_ARN, { region: 'us-east-1', endpoint });
  const out = join(root, name);
  await sealModelDirectory({ modelDir: MODEL, outDir: out, dataKey: plaintext, wrapping: { kind: 'aws-kms', keyId: KEY_ARN, ciphertextBlob: Buffer.from(ciphertextBlob).toString('base64') } });
  plaintext.fill(0);
  return out;
}

describe('AWS KMS sealed models', () => {
  it('seal with GenerateDataKey, open with Decrypt + Recipient: the model answers like the plaintext one', async () => {
    const dir = await sealWithKms('sealed-ok');
    seen.length = 0;
    const opened = await openSealedModels([{ name: 'c', dir }], { kms: { region: 'us-east-1', endpoint }, attester: () => Promise.resolve(attester) });
    expect(seen).toEqual(['TrentService.Decrypt']);
    expect(opened.sealed).toEqual(['c']);
    const mem = new OnnxEngine({ models: opened.models });
    const disk = new OnnxEngine({ models: [{ name: 'c', dir: MODEL }] });
    await mem.start();
    await disk.start();
    try {
      opened.wipe();
      for (const text of ['chest pain radiating to the left arm', 'itchy rash on both forearms']) expect(await classify(mem, text)).toEqual(await classify(disk, text));
    } finally {
      await mem.close();
      await disk.close();
    }
  });

  it('each failure is coded: refusal, tampered CMS, wrong recipient key, trailing bytes, other algorithm, no --kms-region', async () => {
    const dir = await sealWithKms('sealed-bad');
    const open = (): Promise<unknown> => openSealedModels([{ name: 'c', dir }], { kms: { region: 'us-east-1', endpoint }, attester: () => Promise.resolve(attester) });
    const cases: [Mode, string, RegExp][] = [
      ['deny', 'KMS_REFUSED', /AccessDeniedException/],
      ['tamper-key', 'CMS_DECRYPT_FAILED', /content key does not unwrap/],
      ['tamper-content', 'CMS_DECRYPT_FAILED', /content does not decrypt/],
      ['wrong-recipient', 'CMS_DECRYPT_FAILED', /content key does not unwrap/],
      ['trailing', 'CMS_INVALID', /1 trailing bytes/],
      ['aes128', 'CMS_INVALID', /expected AES-256-CBC/],
    ];
    for (const [m, code, msg] of cases) {
      mode = m;
      const err = await codeOf(open());
      expect([m, err.code]).toEqual([m, code]);
      expect(err.message).toMatch(msg);
    }
    mode = 'ok';
    expect((await codeOf(openSealedModels([{ name: 'c', dir }], { attester: () => Promise.resolve(attester) }))).code).toBe('CONFIG_INVALID');
  });

  it('a closed endpoint is CONNECTION_FAILED naming it; a platform without Nitro documents is refused', async () => {
    const s = createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const closed = `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
    await new Promise<void>((r) => s.close(() => r()));
    const err = await codeOf(kmsDecryptForEnclave({ region: 'us-east-1', endpoint: closed, keyId: KEY_ARN, ciphertextBlob: new Uint8Array(8), attester, timeoutMs: 3000 }));
    expect(err.code).toBe('CONNECTION_FAILED');
    expect(err.message).toContain(closed);
    const snp = { platform: 'sev-snp' as const, simulated: false, attest: () => Promise.reject(new Error('unused')) };
    expect((await codeOf(kmsDecryptForEnclave({ region: 'us-east-1', endpoint, keyId: KEY_ARN, ciphertextBlob: new Uint8Array(8), attester: snp }))).code).toBe('CONFIG_INVALID');
  });

  it('Decrypt through the relay egress: TLS to the stand-in verified end to end (test CA), refusals coded', async () => {
    const dir = await sealWithKms('sealed-egress');
    const port = (tlsServer.address() as AddressInfo).port;
    const path = join(root, 'egress.sock');
    const events: unknown[] = [];
    const relay = await startEgressRelay({ listen: { path }, allow: [`127.0.0.1:${port}`], onEvent: (e) => events.push(e) });
    try {
      seen.length = 0;
      const kms = { region: 'us-east-1', endpoint: `https://127.0.0.1:${port}` };
      const opened = await openSealedModels([{ name: 'c', dir }], { kms, attester: () => Promise.resolve(attester), outbound: { egress: { path }, ca: testCa.caCert } });
      opened.wipe();
      expect(seen).toEqual(['TrentService.Decrypt']);
      expect(relay.stats().opened).toBe(1);
      expect(relay.stats().bytesIn).toBeGreaterThan(500);
      // Without the stand-in's CA the TEE side refuses the certificate: nothing is sent.
      seen.length = 0;
      const err = await codeOf(openSealedModels([{ name: 'c', dir }], { kms, attester: () => Promise.resolve(attester), outbound: { egress: { path } } }));
      expect(err.code).toBe('CONNECTION_FAILED');
      expect(seen).toEqual([]);
      // Not on the allow-list: the relay's coded refusal reaches the caller.
      const denied = await codeOf(openSealedModels([{ name: 'c', dir }], { kms: { region: 'us-east-1', endpoint: `https://127.0.0.1:${(server.address() as AddressInfo).port}` }, attester: () => Promise.resolve(attester), outbound: { egress: { path } } }));
      expect(denied.code).toBe('EGRESS_DENIED');
    } finally {
      await relay.close();
    }
  });

  it('a huge answer is cut at the size bound (LIMIT_EXCEEDED), a trickling one at the time bound (TIMEOUT)', async () => {
    const dir = await sealWithKms('sealed-hostile');
    const open = (timeoutMs?: number): Promise<unknown> =>
      openSealedModels([{ name: 'c', dir }], { kms: { region: 'us-east-1', endpoint, ...(timeoutMs === undefined ? {} : { timeoutMs }) }, attester: () => Promise.resolve(attester) });
    mode = 'huge';
    const big = await codeOf(open());
    expect(big.code).toBe('LIMIT_EXCEEDED');
    expect(big.message).toContain('65536 bytes');
    mode = 'slow';
    const slow = await codeOf(open(400));
    expect(slow.code).toBe('TIMEOUT');
    expect(slow.message).toContain('400 ms');
    mode = 'ok';
  });

  it('the CMS parser refuses an oversized input and a non-CMS input', () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    expect(() => openEnvelopedData(new Uint8Array(16 * 1024 + 1), privateKey, { plaintextBytes: 32 })).toThrow(/allowed 1\.\.16384/);
    expect(() => openEnvelopedData(Uint8Array.from([0x30, 0x03, 0x02, 0x01, 0x00]), privateKey, { plaintextBytes: 32 })).toThrow(CloisterError);
  });
});

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const cli = resolve(repoRoot, 'dist', 'cli', 'main.js');
const haveDist = existsSync(cli);
if (!haveDist) console.warn('test/keys/kms.test.ts CLI part skipped: dist/cli/main.js missing (run `npm run build`)');
const CLI_ENV = { ...process.env, AWS_ACCESS_KEY_ID: 'AKIDFAKEFAKE', AWS_SECRET_ACCESS_KEY: 'fake-secret-for-the-loopback-stand-in', AWS_EC2_METADATA_DISABLED: 'true' };

function runCli(args: string[], timeoutMs = 60_000): Promise<{ code: number; out: string; err: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [cli, ...args], { cwd: repoRoot, env: CLI_ENV });
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => {
      clearTimeout(timer);
      done({ code: code ?? 1, out, err });
    });
  });
}

describe.skipIf(!haveDist)('AWS KMS sealed models through the CLI (child processes)', () => {
  it('model seal --kms-key-id, serve --kms-region answers as the plaintext model; a policy pinning another PCR0 stops serve with KMS_REFUSED', async () => {
    const state = join(root, 'cli-state');
    const pol = await runCli(['keys', 'dev-policy', '--state-dir', state]);
    expect(pol.code).toBe(0);
    const pcr0 = /"0": "([0-9a-f]{96})"/.exec(pol.out)?.[1];
    expect(pcr0).toBeDefined();
    mode = 'ok';
    const out = join(root, 'cli-sealed');
    const seal = await runCli(['model', 'seal', MODEL, '--out', out, '--kms-key-id', KEY_ARN, '--kms-region', 'us-east-1', '--kms-endpoint', endpoint]);
    expect(seal.code).toBe(0);
    expect(seal.out).toContain('wrapped by AWS KMS key');
    expect(JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')).wrapping.kind).toBe('aws-kms');

    policyPcr0 = pcr0;
    const child = spawn(process.execPath, [cli, 'serve', '--model', `classifier=${out}`, '--kms-region', 'us-east-1', '--kms-endpoint', endpoint, '--platform', 'simulated', '--state-dir', state, '--listen', '127.0.0.1:0'], { cwd: repoRoot, env: CLI_ENV });
    let log = '';
    child.stdout.on('data', (d: Buffer) => (log += d.toString()));
    child.stderr.on('data', (d: Buffer) => (log += d.toString()));
    try {
      await until(() => /http:\s+(http:\/\/\S+)/.test(log) || child.exitCode !== null, 8000);
      expect(log).toContain('sealed: unsealed in memory');
      const url = /http:\s+(http:\/\/\S+)/.exec(log)?.[1] ?? '';
      const sealedAnswer = await runCli(['infer', '--url', url, '--policy', join(state, 'policy.json'), '--text', 'chest pain radiating to the left arm']);
      expect(sealedAnswer.code).toBe(0);
      const label = sealedAnswer.out.split('\n')[0]?.split('\t')[0] ?? '';
      expect(label).not.toBe('');
      const disk = new OnnxEngine({ models: [{ name: 'c', dir: MODEL }] });
      await disk.start();
      try {
        expect(JSON.stringify(await classify(disk, 'chest pain radiating to the left arm'))).toContain(label);
      } finally {
        await disk.close();
      }
    } finally {
      const exited = new Promise((r) => child.once('exit', r));
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    }

    policyPcr0 = pcr0?.replace(/^./, (c) => (c === '0' ? '1' : '0'));
    const refused = await runCli(['serve', '--model', `classifier=${out}`, '--kms-region', 'us-east-1', '--kms-endpoint', endpoint, '--platform', 'simulated', '--state-dir', state, '--listen', '127.0.0.1:0']);
    policyPcr0 = undefined;
    expect(refused.code).toBe(1);
    expect(refused.err).toContain('KMS_REFUSED');
    expect(refused.err).toContain('AccessDeniedException');
    expect(refused.out).not.toContain('http:');
  });
});
