/**
 * `cloister model seal <model-dir> --out <sealed-dir> --key-broker URL ...`: encrypt a model
 * directory under a fresh data key (src/inference/sealed-model) and hand that key to the key
 * broker with its release policy (a new key, or a new version of an existing one). The data
 * key exists only in this process and, sealed under the admin secret, on its way to the broker.
 */
import { randomBytes } from 'node:crypto';
import { basename, resolve } from 'node:path';
import { CloisterError } from '../../errors.js';
import { readSecretFile } from '../../keys/admin-auth.js';
import { BrokerAdminClient } from '../../keys/client.js';
import { kmsGenerateDataKey } from '../../keys/kms.js';
import { KEY_NAME_PATTERN } from '../../keys/release.js';
import { sealModelDirectory } from '../../inference/sealed-model/seal.js';
import { DATA_DIR, DEFAULT_CHUNK_BYTES, MANIFEST_FILE } from '../../inference/sealed-model/format.js';
import { one, parseArgs, UsageError } from './args.js';
import { MAX_CLI_FILE_BYTES, readTextLimited } from './read-file.js';

export const summary = 'seal a model directory for confidential serving: cloister model seal DIR --out DIR --key-broker URL';

const HELP = `usage: cloister model seal <model-dir> --out <sealed-dir> --key-broker URL --admin-key-file F [options]

  --out DIR             where the sealed model goes (created; must be empty)
  --key-broker URL      the key broker that will hold the data key (cloister keys serve)
  --admin-key-file F    the broker's admin secret (never sent; requests are HMAC-signed)
  --key-name NAME       the broker key (default: the model directory's name). A new name needs
  --policy FILE         its release policy (the client policy format; cloister keys dev-policy
                        prints one for the simulated platform). An existing name gets a new version.
  --chunk-kib N         plaintext per AEAD chunk (default ${DEFAULT_CHUNK_BYTES / 1024})

   or: cloister model seal <model-dir> --out <sealed-dir> --kms-key-id ARN --kms-region R [--kms-endpoint URL]
  --kms-key-id ARN      wrap the data key with AWS KMS (GenerateDataKey); serve with --kms-region,
                        and KMS releases it only to an enclave its key policy names (docs/KEYS.md)

Every file is encrypted (AES-256-GCM, chunked, streaming) under a fresh data key. What stays
visible: file names and sizes, the plaintext model digest, the broker key name (docs/KEYS.md).`;

export async function run(argv: string[]): Promise<number> {
  const [sub, dir, ...rest] = argv;
  if (sub === '--help' || sub === 'help' || (sub === 'seal' && dir === '--help')) {
    console.log(HELP);
    return 0;
  }
  if (sub?.startsWith('--') === true) throw new UsageError(`unknown option ${sub}: give a subcommand first\n\n${HELP}`);
  if (sub !== 'seal') throw new UsageError(`unknown subcommand '${sub ?? ''}'\n\n${HELP}`);
  if (dir === undefined || dir.startsWith('--')) throw new UsageError('give the model directory');
  const args = parseArgs(rest, { values: ['out', 'key-broker', 'admin-key-file', 'key-name', 'policy', 'chunk-kib', 'kms-key-id', 'kms-region', 'kms-endpoint'] });
  const modelDir = resolve(dir);
  const out = one(args, 'out');
  const kmsKeyId = one(args, 'kms-key-id');
  if (kmsKeyId !== undefined) return sealWithKms(modelDir, out, kmsKeyId, args);
  const broker = one(args, 'key-broker');
  const adminKeyFile = one(args, 'admin-key-file');
  if (out === undefined || broker === undefined || adminKeyFile === undefined) throw new UsageError('give --out, --key-broker and --admin-key-file');
  const name = one(args, 'key-name') ?? basename(modelDir);
  if (!KEY_NAME_PATTERN.test(name)) throw new UsageError(`bad key name '${name}' (use --key-name)`);
  const chunkText = one(args, 'chunk-kib');
  if (chunkText !== undefined && !/^\d{1,5}$/.test(chunkText)) throw new UsageError('--chunk-kib must be an integer');
  const chunkBytes = chunkText === undefined ? DEFAULT_CHUNK_BYTES : Number(chunkText) * 1024;

  const admin = new BrokerAdminClient(broker, await readSecretFile(resolve(adminKeyFile), 'admin secret'));
  const listed = (await admin.list()) as { keys?: { name: string; kind: string; revoked: boolean; versions: number[] }[] };
  const existing = listed.keys?.find((k) => k.name === name);
  if (existing !== undefined && (existing.kind !== 'data' || existing.revoked)) throw new CloisterError('CONFIG_INVALID', `broker key ${name} is a ${existing.kind} key${existing.revoked ? ' and revoked' : ''}; choose another --key-name`);
  const policyPath = one(args, 'policy');
  if (existing === undefined && policyPath === undefined) throw new UsageError(`broker key ${name} is new: give its release --policy FILE`);
  if (existing !== undefined && policyPath !== undefined) throw new UsageError(`broker key ${name} exists with its policy; leave out --policy (a new version is added)`);
  const version = existing === undefined ? 1 : Math.max(...existing.versions) + 1;
  let policy: unknown;
  if (policyPath !== undefined) {
    try {
      policy = JSON.parse(await readTextLimited(resolve(policyPath), MAX_CLI_FILE_BYTES, 'release policy'));
    } catch (cause) {
      throw new CloisterError('CONFIG_INVALID', `cannot read release policy '${policyPath}' as JSON`, { cause });
    }
  }

  const dataKey = new Uint8Array(randomBytes(32));
  try {
    const result = await sealModelDirectory({ modelDir, outDir: resolve(out), dataKey, wrapping: { kind: 'key-broker', key: name, version }, chunkBytes });
    // The broker gets the key only once the sealed copy is complete.
    if (existing === undefined) await admin.register(name, 'data', policy, dataKey);
    else await admin.rotate(name, { bytes: dataKey, version });
    console.log(
      [
        `sealed:       ${resolve(out)} (${MANIFEST_FILE}, ${DATA_DIR}/: ${result.manifest.files.length} files)`,
        `model digest: ${result.modelDigestHex}`,
        `data key:     broker key ${name} version ${version} at ${broker}`,
        '',
        'serve it:',
        `  npx cloister serve --model ${basename(modelDir)}=${resolve(out)} --key-broker ${broker}`,
      ].join('\n'),
    );
  } finally {
    dataKey.fill(0);
  }
  return 0;
}

/** `--kms-key-id`: the data key comes from KMS GenerateDataKey; its CiphertextBlob goes into the manifest. */
async function sealWithKms(modelDir: string, out: string | undefined, keyId: string, args: ReturnType<typeof parseArgs>): Promise<number> {
  const region = one(args, 'kms-region');
  const endpoint = one(args, 'kms-endpoint');
  if (out === undefined || region === undefined) throw new UsageError('give --out and --kms-region with --kms-key-id');
  for (const f of ['key-broker', 'admin-key-file', 'key-name', 'policy']) if (one(args, f) !== undefined) throw new UsageError(`--${f} does not go with --kms-key-id (the KMS key policy decides the release)`);
  if (keyId.length === 0 || keyId.length > 2048) throw new UsageError('--kms-key-id must be a KMS key ARN, id or alias');
  if (endpoint !== undefined && !/^https?:\/\/[^\s]+$/.test(endpoint)) throw new UsageError('--kms-endpoint must be an http:// or https:// URL');
  const chunkText = one(args, 'chunk-kib');
  if (chunkText !== undefined && !/^\d{1,5}$/.test(chunkText)) throw new UsageError('--chunk-kib must be an integer');
  const chunkBytes = chunkText === undefined ? DEFAULT_CHUNK_BYTES : Number(chunkText) * 1024;
  const { plaintext, ciphertextBlob } = await kmsGenerateDataKey(keyId, { region, ...(endpoint === undefined ? {} : { endpoint }) });
  try {
    const result = await sealModelDirectory({ modelDir, outDir: resolve(out), dataKey: plaintext, wrapping: { kind: 'aws-kms', keyId, ciphertextBlob: Buffer.from(ciphertextBlob).toString('base64') }, chunkBytes });
    console.log(
      [
        `sealed:       ${resolve(out)} (${MANIFEST_FILE}, ${DATA_DIR}/: ${result.manifest.files.length} files)`,
        `model digest: ${result.modelDigestHex}`,
        `data key:     wrapped by AWS KMS key ${keyId}`,
        '',
        'serve it (in a Nitro Enclave whose measurements the KMS key policy names):',
        `  npx cloister serve --model ${basename(modelDir)}=${resolve(out)} --kms-region ${region}`,
      ].join('\n'),
    );
  } finally {
    plaintext.fill(0);
  }
  return 0;
}
