/**
 * `cloister gateway`: a local OpenAI-compatible HTTP API on the client's machine. It verifies
 * the server's attestation once at start (and again whenever the server rotates its key:
 * the SDK re-fetches and re-verifies on KEY_STALE), then seals every request it forwards.
 * Applications point their OpenAI base URL at it; nothing else changes.
 */
import { parseArgs } from 'node:util';
import { parsePolicy, policyWarnings } from '../../verifier/policy.js';
import { AuditDirectory, AuditWriter } from '../../client/audit-dir.js';
import type { ReceiptV2Record } from '../../protocol/response.js';
import type { ReceiptRecord } from '../../verifier/receipt.js';
import { CloisterError } from '../../errors.js';
import { connect, DEFAULT_RECONNECT } from '../../client/client.js';
import type { ClientEvent, CloisterClient } from '../../client/client.js';
import { DEFAULT_KEEPALIVE_INTERVAL_MS } from '../../client/transport.js';
import { DEFAULT_GATEWAY_MAX_REQUEST_BYTES, parseListen, startGateway } from '../../client/gateway/index.js';
import type { Gateway } from '../../client/gateway/index.js';
import { isLoopbackHost } from '../../core/loopback.js';
import { certificatesFromFile } from '../../verifier/x509/certificate.js';
import { readFileLimited, readTextLimited } from './read-file.js';

export const summary = 'local OpenAI-compatible gateway that verifies the server and seals every request';

const MAX_POLICY_FILE_BYTES = 1024 * 1024;

const HELP = `usage: cloister gateway --url <server> --policy <file> [options]

  --url <server>            the Cloister server (ws://, wss://, http:// or https://)
  --policy <file>           client policy JSON (from the image build); required
  --root <pem>              extra trusted root for simulated evidence (repeatable)
  --listen host:port        where applications connect (default 127.0.0.1:8080)
  --allow-non-loopback      allow --listen on a non-loopback interface (plaintext leaves this machine)
  --model <name>            send every request to this model, whatever the application names
  --api-key-file <file>     require "Authorization: Bearer <key>" from applications (the file's
                            first line; CLOISTER_GATEWAY_API_KEY sets the key directly);
                            optional on loopback, required with --allow-non-loopback
  --api-key-env <VAR>       as --api-key-file, the key read from environment variable VAR
  --server-api-key-file <file>  the client API key the Cloister server requires (serve --client-keys):
                            the file's first line, sent inside every sealed request
                            (CLOISTER_SERVER_API_KEY sets it directly); default: none
  --allow-origin <origin>   a browser origin allowed to call the gateway, e.g. http://localhost:3000
                            (repeatable); any other Origin, Sec-Fetch-Site: cross-site and
                            CORS preflights are refused with 403
  --max-request-bytes N     largest request body (default ${DEFAULT_GATEWAY_MAX_REQUEST_BYTES})
  --keepalive-ms N          WebSocket ping interval while connected, 0 = off (default ${DEFAULT_KEEPALIVE_INTERVAL_MS});
                            keep it below the server's idle timeout (120 s by default)
  --reconnect-attempts N    connection attempts when the server connection was lost, with
                            exponential backoff (default ${DEFAULT_RECONNECT.maxAttempts}); every reconnect fetches fresh
                            evidence and verifies it against --policy before anything is sent
  --audit-dir <dir>         keep an audit record of every answered request (receipts v2 with the
                            inclusion proof) and the evidence it names, for 'cloister audit export'
                            and 'cloister audit verify' (src/client/audit-dir.ts); content-free
                            (salted hashes and the salt), the directory mode 0700

Applications use base URL http://<listen>/v1, e.g.
  new OpenAI({ baseURL: 'http://127.0.0.1:8080/v1', apiKey: 'unused' })
The gateway never logs request or response content; it logs (to stderr) when the
connection to the server is lost, each reconnect and what verification said.`;

export interface GatewayHandle {
  readonly gateway: Gateway;
  readonly client: CloisterClient;
  close(): Promise<void>;
}

/** The key in an API key file: its first line, without the line end or surrounding blanks. */
function firstLine(text: string): string {
  return (text.split(/\r?\n/, 1)[0] ?? '').trim();
}

function integerArg(name: string, text: string | undefined, min: number): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d{1,9}$/.test(text) || Number(text) < min) throw new CloisterError('CONFIG_INVALID', `--${name} must be an integer of at least ${min}`);
  return Number(text);
}

/** A short, content-free summary of verified measurements: each non-zero register's first 16 hex digits. */
function measurementSummary(m: Readonly<Record<string, string>>): string {
  const parts = Object.entries(m)
    .filter(([, v]) => /[1-9a-f]/i.test(v))
    .slice(0, 6)
    .map(([k, v]) => `${k}=${v.slice(0, 16)}${v.length > 16 ? '..' : ''}`);
  return parts.length === 0 ? 'no measurements' : parts.join(' ');
}

/** One log line per connection event: codes, counts, timing, key id, measurements; never content. */
export function describeEvent(e: ClientEvent): string {
  switch (e.type) {
    case 'disconnected':
      return `connection to ${e.target} lost (${e.code}: ${e.reason}); the next request reconnects and re-verifies`;
    case 'reconnecting':
      return `reconnecting to ${e.target}: attempt ${e.attempt} in ${e.delayMs} ms`;
    case 'reconnected':
      return (
        `reconnected to ${e.target} after ${e.attempts} attempt(s) in ${e.durationMs} ms; fresh evidence verified against the policy: ` +
        `${e.platform}, key id ${e.keyId}${e.keyChanged ? ' (new key)' : ' (same key)'}, ${measurementSummary(e.measurements)}`
      );
    case 'reconnect-failed':
      return `reconnect to ${e.target} refused after ${e.attempts} attempt(s): ${e.code}: ${e.reason}; nothing was sent`;
    case 'session-opened':
      return `session opened with ${e.target} (protocol v2, key id ${e.keyId})`;
  }
}

/** Parse the arguments, verify the server, start listening. `log` gets the connection events (default stderr). */
export async function startFromArgs(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
  log: (line: string) => void = (line) => console.error(`cloister gateway: ${line}`),
): Promise<GatewayHandle> {
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
      'api-key-file': { type: 'string' },
      'server-api-key-file': { type: 'string' },
      'allow-origin': { type: 'string', multiple: true },
      'max-request-bytes': { type: 'string' },
      'keepalive-ms': { type: 'string' },
      'reconnect-attempts': { type: 'string' },
      'audit-dir': { type: 'string' },
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
  if (values['api-key-env'] !== undefined && values['api-key-file'] !== undefined) {
    throw new CloisterError('CONFIG_INVALID', '--api-key-env and --api-key-file are exclusive: give one');
  }
  if (values['api-key-env'] !== undefined) {
    apiKey = env[values['api-key-env']];
    if (apiKey === undefined || apiKey === '') throw new CloisterError('CONFIG_INVALID', `environment variable ${values['api-key-env']} is not set`);
  } else if (values['api-key-file'] !== undefined) {
    apiKey = firstLine(await readTextLimited(values['api-key-file'], MAX_POLICY_FILE_BYTES, 'API key file'));
    if (apiKey === '') throw new CloisterError('CONFIG_INVALID', `API key file ${values['api-key-file']} is empty`);
  } else if (env['CLOISTER_GATEWAY_API_KEY'] !== undefined) {
    apiKey = env['CLOISTER_GATEWAY_API_KEY'];
    if (apiKey === '') throw new CloisterError('CONFIG_INVALID', 'CLOISTER_GATEWAY_API_KEY is set but empty');
  }
  if (values['allow-non-loopback'] === true && !isLoopbackHost(listen.host) && apiKey === undefined) {
    throw new CloisterError('CONFIG_INVALID', `--listen ${listen.host} is not loopback: the gateway needs an API key there (--api-key-file or CLOISTER_GATEWAY_API_KEY)`);
  }
  let serverApiKey: string | undefined;
  if (values['server-api-key-file'] !== undefined) {
    serverApiKey = firstLine(await readTextLimited(values['server-api-key-file'], MAX_POLICY_FILE_BYTES, 'server API key file'));
    if (serverApiKey === '') throw new CloisterError('CONFIG_INVALID', `server API key file ${values['server-api-key-file']} is empty`);
  } else if (env['CLOISTER_SERVER_API_KEY'] !== undefined) {
    serverApiKey = env['CLOISTER_SERVER_API_KEY'];
    if (serverApiKey === '') throw new CloisterError('CONFIG_INVALID', 'CLOISTER_SERVER_API_KEY is set but empty');
  }
  // Check the bind address before contacting the server.
  if (values['allow-non-loopback'] !== true) {
    if (!isLoopbackHost(listen.host)) {
      throw new CloisterError('CONFIG_INVALID', '--listen must be a loopback address; pass --allow-non-loopback to bind another interface');
    }
  }
  const policy = parsePolicy(await readTextLimited(values.policy, MAX_POLICY_FILE_BYTES, 'policy file'), { source: values.policy });
  for (const w of policyWarnings(policy)) log(w);
  const roots: Uint8Array[] = [];
  // PEM or DER, every certificate in each file.
  for (const path of values.root ?? []) {
    roots.push(...certificatesFromFile(await readFileLimited(path, MAX_POLICY_FILE_BYTES, 'root file'), path, 'root file'));
  }

  const keepAliveIntervalMs = integerArg('keepalive-ms', values['keepalive-ms'], 0);
  const maxAttempts = integerArg('reconnect-attempts', values['reconnect-attempts'], 1);

  const audit = values['audit-dir'] === undefined ? undefined : new AuditWriter(await AuditDirectory.open(values['audit-dir']), log);
  // Fail closed: nothing listens until the attestation verified.
  const client: CloisterClient = await connect(values.url, {
    policy,
    ...(roots.length === 0 ? {} : { trustedRoots: { simulated: roots } }),
    ...(keepAliveIntervalMs === undefined ? {} : { transport: { keepAliveIntervalMs } }),
    ...(maxAttempts === undefined ? {} : { reconnect: { maxAttempts } }),
    onEvent: (e) => log(describeEvent(e)),
    ...(serverApiKey === undefined ? {} : { apiKey: serverApiKey }),
    // Receipts v2 where the server offers them, else (a fleet, an older server) v1 receipts.
    ...(audit === undefined ? {} : { receiptProofs: true, onReceiptV2: (r: ReceiptV2Record) => audit.add(r, client.evidenceFile()), onReceipt: (r: ReceiptRecord) => audit.add(r, client.evidenceFile()) }),
  });
  try {
    if (values.model !== undefined && !client.keyConfig.models.some((m) => m.name === values.model)) {
      throw new CloisterError(
        'UNKNOWN_MODEL',
        `--model ${values.model}: the verified server does not serve it; it serves ${client.keyConfig.models.map((m) => `${m.name} (${m.task})`).join(', ') || 'no models'}`,
      );
    }
    const gateway = await startGateway({
      client,
      host: listen.host,
      port: listen.port,
      allowNonLoopback: values['allow-non-loopback'] === true,
      ...(values.model === undefined ? {} : { model: values.model }),
      ...(apiKey === undefined ? {} : { apiKey }),
      ...(values['allow-origin'] === undefined ? {} : { allowOrigins: values['allow-origin'] }),
      ...(maxRequestBytes === undefined ? {} : { maxRequestBytes }),
    });
    return {
      gateway,
      client,
      close: async () => {
        await gateway.close();
        await client.close();
        await audit?.idle();
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
