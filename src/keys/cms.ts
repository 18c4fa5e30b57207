/**
 * AWS KMS `CiphertextForRecipient` (docs/KEYS.md "AWS KMS"): a CMS EnvelopedData (RFC 5652
 * section 6) with one KeyTransRecipientInfo whose content-encryption key is wrapped to the
 * enclave's RSA key with RSAES-OAEP-SHA256 (RFC 8017; MGF1-SHA256, empty label), and whose
 * content is the plaintext encrypted with AES-256-CBC (PKCS#7 padding). Parsed with the
 * @peculiar ASN.1 schemas and opened with node:crypto. Strict: trailing bytes, any other
 * structure or algorithm, and wrong lengths are refused with CMS_INVALID; a key or content
 * that does not decrypt is CMS_DECRYPT_FAILED.
 */
import { constants, createDecipheriv, privateDecrypt } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';
import { ContentInfo, EnvelopedData, id_data, id_envelopedData, KeyTransRecipientInfo } from '@peculiar/asn1-cms';
import { id_mgf1, id_pSpecified, id_RSAES_OAEP, id_sha256, RsaEsOaepParams } from '@peculiar/asn1-rsa';
import { AsnConvert, AsnParser, OctetString } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier } from '@peculiar/asn1-x509';
import { CloisterError } from '../errors.js';

/** id-aes256-CBC (NIST): parameters are the 16-byte IV as an OCTET STRING. */
export const ID_AES256_CBC = '2.16.840.1.101.3.4.1.42';
/** A data key answer is small; anything near this is not one. */
export const MAX_CMS_BYTES = 16 * 1024;

const invalid = (msg: string, cause?: unknown): CloisterError => new CloisterError('CMS_INVALID', `CiphertextForRecipient: ${msg}`, cause === undefined ? {} : { cause });

/** The parameters must be absent or NULL (05 00). */
function noParams(alg: AlgorithmIdentifier): boolean {
  const p = alg.parameters;
  if (p === undefined || p === null) return true;
  const b = new Uint8Array(p);
  return b.byteLength === 2 && b[0] === 0x05 && b[1] === 0x00;
}

function checkOaepSha256(alg: AlgorithmIdentifier): void {
  if (alg.algorithm !== id_RSAES_OAEP) throw invalid(`key encryption algorithm ${alg.algorithm}, expected RSAES-OAEP (${id_RSAES_OAEP})`);
  if (alg.parameters === undefined || alg.parameters === null) throw invalid('RSAES-OAEP without parameters means SHA-1, expected SHA-256');
  let params: RsaEsOaepParams;
  try {
    params = AsnConvert.parse(alg.parameters, RsaEsOaepParams);
  } catch (cause) {
    throw invalid('RSAES-OAEP parameters do not parse', cause);
  }
  if (params.hashAlgorithm.algorithm !== id_sha256 || !noParams(params.hashAlgorithm)) throw invalid(`OAEP hash ${params.hashAlgorithm.algorithm}, expected SHA-256`);
  if (params.maskGenAlgorithm.algorithm !== id_mgf1 || params.maskGenAlgorithm.parameters === undefined || params.maskGenAlgorithm.parameters === null) throw invalid('OAEP mask generation is not MGF1');
  let mgfHash: AlgorithmIdentifier;
  try {
    mgfHash = AsnConvert.parse(params.maskGenAlgorithm.parameters, AlgorithmIdentifier);
  } catch (cause) {
    throw invalid('MGF1 parameters do not parse', cause);
  }
  if (mgfHash.algorithm !== id_sha256 || !noParams(mgfHash)) throw invalid(`MGF1 hash ${mgfHash.algorithm}, expected SHA-256`);
  const ps = params.pSourceAlgorithm;
  if (ps.algorithm !== id_pSpecified) throw invalid('OAEP label source is not pSpecified');
  if (ps.parameters !== undefined && ps.parameters !== null) {
    let label: OctetString;
    try {
      label = AsnConvert.parse(ps.parameters, OctetString);
    } catch (cause) {
      throw invalid('OAEP label does not parse', cause);
    }
    if (label.byteLength !== 0) throw invalid('OAEP label is not empty');
  }
}

export interface OpenCmsOptions {
  /** Exact plaintext length expected (a data key: 32). */
  readonly plaintextBytes: number;
  readonly maxBytes?: number;
}

/** Open `der` with the recipient's RSA private key; returns the plaintext (the caller zeroes it). */
export function openEnvelopedData(der: Uint8Array, privateKey: KeyObject, options: OpenCmsOptions): Uint8Array {
  const maxBytes = options.maxBytes ?? MAX_CMS_BYTES;
  if (der.byteLength === 0 || der.byteLength > maxBytes) throw invalid(`${der.byteLength} bytes, allowed 1..${maxBytes}`);
  // BER is allowed (KMS may use indefinite lengths); what is decoded must be all of it.
  const ber = asn1js.fromBER(Uint8Array.from(der));
  if (ber.offset === -1 || ber.result.error !== '') throw invalid(`not BER: ${ber.result.error}`);
  if (ber.offset !== der.byteLength) throw invalid(`${der.byteLength - ber.offset} trailing bytes after the ContentInfo`);
  let env: EnvelopedData;
  try {
    const ci = AsnParser.fromASN(ber.result, ContentInfo);
    if (ci.contentType !== id_envelopedData) throw invalid(`content type ${ci.contentType}, expected envelopedData (${id_envelopedData})`);
    env = AsnConvert.parse(ci.content, EnvelopedData);
  } catch (cause) {
    if (cause instanceof CloisterError) throw cause;
    throw invalid('not a CMS EnvelopedData', cause);
  }
  if (env.recipientInfos.length !== 1) throw invalid(`${env.recipientInfos.length} recipients, expected 1`);
  const ktri = env.recipientInfos[0]?.ktri;
  if (!(ktri instanceof KeyTransRecipientInfo)) throw invalid('the recipient is not a KeyTransRecipientInfo');
  checkOaepSha256(ktri.keyEncryptionAlgorithm);
  const eci = env.encryptedContentInfo;
  if (eci.contentType !== id_data) throw invalid(`encrypted content type ${eci.contentType}, expected data`);
  const cea = eci.contentEncryptionAlgorithm;
  if (cea.algorithm !== ID_AES256_CBC) throw invalid(`content encryption ${cea.algorithm}, expected AES-256-CBC (${ID_AES256_CBC})`);
  if (cea.parameters === undefined || cea.parameters === null) throw invalid('AES-256-CBC without an IV');
  let iv: Uint8Array;
  try {
    iv = new Uint8Array(AsnConvert.parse(cea.parameters, OctetString).buffer);
  } catch (cause) {
    throw invalid('AES-256-CBC IV does not parse', cause);
  }
  if (iv.byteLength !== 16) throw invalid(`IV of ${iv.byteLength} bytes, expected 16`);
  const ec = eci.encryptedContent;
  const parts = ec?.value !== undefined ? [ec.value] : (ec?.constructedValue ?? []);
  if (parts.length === 0) throw invalid('no encrypted content');
  const content = Buffer.concat(parts.map((p) => new Uint8Array(p.buffer)));
  const expectedCipher = (Math.floor(options.plaintextBytes / 16) + 1) * 16;
  if (content.byteLength !== expectedCipher) throw invalid(`encrypted content of ${content.byteLength} bytes, expected ${expectedCipher} for ${options.plaintextBytes} plaintext bytes`);
  const wrapped = new Uint8Array(ktri.encryptedKey.buffer);
  const modulusBytes = (privateKey.asymmetricKeyDetails?.modulusLength ?? 0) / 8;
  if (wrapped.byteLength !== modulusBytes) throw invalid(`wrapped key of ${wrapped.byteLength} bytes, expected ${modulusBytes} (the RSA modulus)`);
  let cek: Buffer;
  try {
    cek = privateDecrypt({ key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, wrapped);
  } catch (cause) {
    throw new CloisterError('CMS_DECRYPT_FAILED', 'CiphertextForRecipient: the content key does not unwrap under this enclave\'s RSA key', { cause });
  }
  try {
    if (cek.byteLength !== 32) throw invalid(`content key of ${cek.byteLength} bytes, expected 32`);
    let plain: Buffer;
    try {
      const d = createDecipheriv('aes-256-cbc', cek, iv);
      plain = Buffer.concat([d.update(content), d.final()]);
    } catch (cause) {
      throw new CloisterError('CMS_DECRYPT_FAILED', 'CiphertextForRecipient: the content does not decrypt (bad padding)', { cause });
    }
    if (plain.byteLength !== options.plaintextBytes) {
      plain.fill(0);
      throw invalid(`plaintext of ${plain.byteLength} bytes, expected ${options.plaintextBytes}`);
    }
    const out = new Uint8Array(plain);
    plain.fill(0);
    return out;
  } finally {
    cek.fill(0);
  }
}
