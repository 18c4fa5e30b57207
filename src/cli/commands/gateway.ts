/**
 * `cloister gateway`: a local OpenAI-compatible HTTP API on the client's machine. It verifies
 * the server's attestation once at start (and again whenever the server rotates its key:
 * the SDK re-fetches and re-verifies on KEY_STALE), then seals every request it forwards.
 * Applications point their OpenAI base URL at it; nothing else changes.
 */
import { readFile, stat } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { CloisterError } from '../../errors.js';
import { connect } from '../../client/client.js';
import type { CloisterClient } from '../../client/client.js';
import { DEFAULT_GATEWAY_MAX_REQUEST_BYTES, parseListen, startGateway } from '../../client/gateway/index.js';
import type { Gateway } from '../../client/gateway/index.js';
import { isLoopbackHost } from '../../inference/upstream/target.js';
import { certificatesFromFile } from '../../attestation/x509/certificate.js';

export const summary = 'local OpenAI-compatible gateway that verifies the server and seals every request';

const MAX_POLICY_FILE_BYTES = 1024 * 1024;

const HELP = `usage: cloister gateway --url <server> --policy <file> [options]

  --url <server>            the Cloister server (ws://, wss://, http:// or https://)
  --policy <file>           client policy JSON (from the image build); required
  --root <pem>              extra trusted root for simulated evidence (repeatable)
  --listen host:port        where applications connect (default 127.0.0.1:8080)
  --allow-non-loopback      allow --listen on a non-loopback interface (plaintext leaves this machine)
  --model <name>            send every request to this model, whatever the application names
  --api-key-env <VAR>       require "Authorization: Bearer $VAR" from applications
  --max-request-bytes N     largest request body (default ${DEFAULT_GATEWAY_MAX_REQUEST_BYTES})

Applications use base URL http://<listen>/v1, e.g.
  new OpenAI({ baseURL: 'http://127.0.0.1:8080/v1', apiKey: 'unused' })
The gateway never logs request or response content.`;

export interface GatewayHandle {
  readonly gateway: Gateway;
  readonly client: CloisterClient;
  close(): Promise<void>;
}

async function readLimited(path: string, what: string): Promise<string> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (cause) {
    throw new CloisterError('NOT_FOUND', `${what} ${path} cannot be read`, { cause });
  }
  if (size > MAX_POLICY_FILE_BYTES) throw new CloisterError('LIMIT_EXCEEDED', `${what} ${path} is larger than ${MAX_POLICY_FILE_BYTES} bytes`);
  return readFile(path, 'utf8');
}

/** Parse the arguments, verify the server, start listening. */
export async function startFromArgs(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<GatewayHandle> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      url: { type: 'string' },
      policy: { type: 'string' },
      root: { type: 'string', multiple: true },
      listen: { type: 'string' },
      'allow-non-loopback': { type: 'boolean' },
      model: { type: 'string' },
      'api-key-env': { type: 'string' },
      'max-request-bytes': { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.url === undefined) throw new CloisterError('CONFIG_INVALID', '--url is required');
  if (values.policy === undefined) throw new CloisterError('CONFIG_INVALID', '--policy is required: there is no default trust');
  const listen = parseListen(values.listen ?? '127.0.0.1:8080');
  let maxRequestBytes: number | undefined;
  if (values['max-request-bytes'] !== undefined) {
    if (!/^\d+$/.test(values['max-request-bytes'])) throw new CloisterError('CONFIG_INVALID', '--max-request-bytes must be a positive integer');
    maxRequestBytes = Number(values['max-request-bytes']);
  }
  let apiKey: string | undefined;
  if (values['api-key-env'] !== undefined) {
    apiKey = env[values['api-key-env']];
    if (apiKey === undefined || apiKey === '') throw new CloisterError('CONFIG_INVALID', `environment variable ${values['api-key-env']} is not set`);
  }
  // Check the bind address before contacting the server.
  if (values['allow-non-loopback'] !== true) {
    if (!isLoopbackHost(listen.host)) {
      throw new CloisterError('CONFIG_INVALID', '--listen must be a loopback address; pass --allow-non-loopback to bind another interface');
    }
  }
  const policy = await readLimited(values.policy, 'policy file');
  const roots: Uint8Array[] = [];
  // PEM or DER, every certificate in each file.
  for (const path of values.root ?? []) {
    await readLimited(path, 'root file'); // exists, within the size bound
    roots.push(...certificatesFromFile(new Uint8Array(await readFile(path)), path, 'root file'));
  }

  // Fail closed: nothing listens until the attestation verified.
  const client = await connect(values.url, { policy, ...(roots.length === 0 ? {} : { trustedRoots: { simulated: roots } }) });
  try {
    const gateway = await startGateway({
      client,
      host: listen.host,
      port: listen.port,
      allowNonLoopback: values['allow-non-loopback'] === true,
      ...(values.model === undefined ? {} : { model: values.model }),
      ...(apiKey === undefined ? {} : { apiKey }),
      ...(maxRequestBytes === undefined ? {} : { maxRequestBytes }),
    });
    return {
      gateway,
      client,
      close: async () => {
        await gateway.close();
        await client.close();
      },
    };
  } catch (err) {
    await client.close().catch(() => undefined);
    throw err;
  }
}

export async function run(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(HELP);
    return 0;
  }
  let handle: GatewayHandle;
  try {
    handle = await startFromArgs(argv);
  } catch (err) {
    if (err instanceof CloisterError) throw err;
    // node:util parseArgs errors are usage errors.
    console.error(`cloister gateway: ${err instanceof Error ? err.message : String(err)}\n\n${HELP}`);
    return 2;
  }
  const { client, gateway } = handle;
  const kc = client.keyConfig;
  console.log(
    `cloister gateway: verified ${kc.platform} server; models ${kc.models.map((m) => m.name).join(', ')}` +
      `${kc.engine === undefined ? '' : `; engine ${kc.engine.kind} ${kc.engine.model}`}`,
  );
  console.log(`cloister gateway: listening on ${gateway.url}/v1`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await handle.close();
  return 0;
}
