/**
 * AWS Nitro Enclaves Root G1, the anchor of every genuine Nitro attestation document.
 *
 * Source: https://aws-nitro-enclaves.amazonaws.com/AWS_NitroEnclaves_Root-G1.zip, published
 * in the AWS Nitro Enclaves user guide ("Verifying the root of trust"), which states the
 * SHA-256 of the DER below. The fingerprint is re-checked when this module loads, so an
 * edit to the constant cannot silently change what is trusted.
 */
import { createHash } from 'node:crypto';
import { pemToDerList } from '../x509/certificate.js';

export const AWS_NITRO_ROOT_G1_SHA256_HEX = '641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b';

export const AWS_NITRO_ROOT_G1_PEM = `
-----BEGIN CERTIFICATE-----
MIICETCCAZagAwIBAgIRAPkxdWgbkK/hHUbMtOTn+FYwCgYIKoZIzj0EAwMwSTEL
MAkGA1UEBhMCVVMxDzANBgNVBAoMBkFtYXpvbjEMMAoGA1UECwwDQVdTMRswGQYD
VQQDDBJhd3Mubml0cm8tZW5jbGF2ZXMwHhcNMTkxMDI4MTMyODA1WhcNNDkxMDI4
MTQyODA1WjBJMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGQW1hem9uMQwwCgYDVQQL
DANBV1MxGzAZBgNVBAMMEmF3cy5uaXRyby1lbmNsYXZlczB2MBAGByqGSM49AgEG
BSuBBAAiA2IABPwCVOumCMHzaHDimtqQvkY4MpJzbolL//Zy2YlES1BR5TSksfbb
48C8WBoyt7F2Bw7eEtaaP+ohG2bnUs990d0JX28TcPQXCEPZ3BABIeTPYwEoCWZE
h8l5YoQwTcU/9KNCMEAwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQUkCW1DdkF
R+eWw5b6cp3PmanfS5YwDgYDVR0PAQH/BAQDAgGGMAoGCCqGSM49BAMDA2kAMGYC
MQCjfy+Rocm9Xue4YnwWmNJVA44fA0P5W2OpYow9OYCVRaEevL8uO1XYru5xtMPW
rfMCMQCi85sWBbJwKKXdS6BptQFuZbT73o/gBh1qUxl/nNr12UO8Yfwr6wPLb+6N
IwLz3/Y=
-----END CERTIFICATE-----`.trim();

function loadRoot(): Uint8Array {
  const list = pemToDerList(AWS_NITRO_ROOT_G1_PEM);
  const der = list[0];
  if (list.length !== 1 || der === undefined) throw new Error('AWS Nitro root constant must hold exactly one certificate');
  const fingerprint = createHash('sha256').update(der).digest('hex');
  if (fingerprint !== AWS_NITRO_ROOT_G1_SHA256_HEX) {
    throw new Error(`AWS Nitro root constant has SHA-256 ${fingerprint}, expected ${AWS_NITRO_ROOT_G1_SHA256_HEX}`);
  }
  return der;
}

const AWS_ROOT_DER = loadRoot();

/** A fresh copy of the root's DER bytes (callers may not alias the module's copy). */
export function awsNitroRootDer(): Uint8Array {
  return Uint8Array.from(AWS_ROOT_DER);
}
