/**
 * `cloister serve`: run the server with ONNX models on TCP or a Unix socket.
 *
 *   cloister serve --model [name=]dir [--model ...] [--embedder [name=]dir]
 *                  [--generator [name=]dir ...] [--generator-dtype fp32|q8|q4]
 *                  [--listen host:port | --socket path]
 *                  [--platform auto|simulated|nitro|sev-snp|tdx] [--state-dir dir]
 *                  [--key-rotation-minutes n] [--request-timeout-s n] [--max-input-chars n]
 *                  [--log-level debug|info|warn|error]
 *
 * Platform selection is src/server/platform.ts (shared TEE detection; auto falls back to
 * SIMULATED only when no TEE interface is there at all). On the simulated platform PCR0
 * measures this package's code (dist/*.js + package-lock.json, src/server/code-digest.ts),
 * and serve writes the run's root certificate and a development policy matching this server
 * (which pins that root's SHA-256, so clients need no --root) into the state dir, and says
 * loudly that nothing is attested.
 */
import { untilStopSignal } from '../stop-signal.js';
import { mkdir, writeFile } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { CloisterError } from '../../errors.js';
import type { OnnxModelConfig } from '../../inference/onnx/engine.js';
import type { GenerationEngineOptions } from '../../inference/generation/engine.js';
import { developmentPolicy } from '../../client/dev-policy.js';
import { createLogger } from '../../server/log.js';
import type { LogLevel } from '../../server/log.js';
import { isPlatformChoice, preparePlatform, selectPlatform } from '../../server/platform.js';
import type { PlatformChoice } from '../../server/platform.js';
import { CloisterServer } from '../../server/server.js';
import type { ListenTarget } from '../../server/server.js';
import { one, parseArgs, UsageError, withEnv } from './args.js';
import { MAX_CLI_FILE_BYTES, readFileLimited } from './read-file.js';
import type { Engine } from '../../inference/types.js';
import type { Attester } from '../../core/types.js';
import type { GuardPolicy } from '../../guard/policy.js';
import { UPSTREAM_SERVE_FLAGS, UPSTREAM_SERVE_USAGE, upstreamFromArgs } from '../../inference/upstream/index.js';
import { ClientKeyTable, DEFAULT_CLIENT_KEY_REQUESTS_PER_MINUTE, MAX_CLIENT_KEY_REQUESTS_PER_MINUTE } from '../../server/client-keys.js';
import { parseEgressRoute } from '../../keys/outbound.js';
import type { EgressRoute } from '../../keys/outbound.js';
import { TDX_COLLATERAL_FLAGS, tdxCollateralFromArgs } from './tdx-collateral-args.js';
import { checkCollectionsArgs, COLLECTIONS_SERVE_FLAGS, COLLECTIONS_SERVE_USAGE, collectionsFromArgs, guardPolicyArg, storageKeyWarning } from '../../collections/serve-args.js';

export const summary = 'run the Cloister server (sealed, attested inference)';

const USAGE = `usage: cloister serve --model [name=]dir [--model ...] [--embedder [name=]dir]
                      [--listen host:port | --socket path]
                      [--platform auto|simulated|nitro|sev-snp|tdx] [--state-dir dir]
                      [--key-rotation-minutes n] [--request-timeout-s n] [--max-input-chars n]
                      [--log-level debug|info|warn|error] [--tls-cert pem --tls-key pem] [--drain-timeout-s n]
                      [--pad-responses on|off]
                      [--generator [name=]dir ...] [--generator-dtype fp32|q8|q4] [--max-generations n]
                      [--max-generation-queue n] [--max-kv-tokens n] [--max-new-tokens n]

  --model      a Hugging Face-layout ONNX model directory (task from its config.json)
  --embedder   a feature-extraction model directory
  --generator  a decoder-only generative model directory (HF/Optimum ONNX layout with past key
               values): served for chat and completion on the CPU (docs/GENERATION.md)
  --generator-dtype  which ONNX file: fp32 onnx/model.onnx (default), q8 onnx/model_quantized.onnx,
               q4 onnx/model_q4.onnx
  --max-generations n  generations running at once, taking turns step by step (default 4)
  --max-generation-queue n  generations waiting beyond those; OVERLOADED beyond (default 64)
  --max-kv-tokens n  most tokens (prompt + answer) in one generation's KV cache (default 4096)
  --max-new-tokens n  largest max_tokens a request may ask for (default 2048)
  --listen     TCP address (default 127.0.0.1:8443)
  --socket     Unix socket path instead of TCP (e.g. bridged to vsock in an enclave)
  --platform   TEE to attest with (default auto: detect, else SIMULATED with a warning)
  --state-dir  where the simulated root and development policy are written (default .cloister)
  --request-timeout-s  deadline of one request, streaming included (default 60; raise it for long generations)
  --key-rotation-minutes  how long one key generation is current (default 60)
  --log-level  debug | info | warn | error (default info); JSON lines on stderr, never content
  --tls-cert, --tls-key  PEM certificate chain and key: serve https:// and wss:// on --listen
  --drain-timeout-s  on SIGTERM/SIGINT, how long requests in flight may finish (default 30; 0: stop at once)
  --pad-responses on|off  pad response chunks to size buckets for clients that ask (default on;
                       docs/PROTOCOL.md section 4, Padding); off is measured into the config digest
  --max-input-chars n  longest input text an ONNX model accepts, in UTF-16 code units
                       (default 16384); longer texts get LIMIT_EXCEEDED naming this limit
  --client-keys FILE   require a client API key in every sealed request: one id:sha256hex[:per-minute]
                       per line (the SHA-256 of each key; printf %s KEY | sha256sum); default: none required
  --client-key-requests-per-minute n  quota of a key whose line names none (default 600)
  --key-broker URL     where the data keys of sealed --model directories (cloister model seal) are
                       released to this TEE's evidence; each is decrypted in memory, its digest
                       checked, before anything is served (docs/KEYS.md)
  --fleet-key NAME     serve the key broker's fleet key NAME (with --key-broker): every replica
                       publishes the same key config, so a client that verified one can use all
  --fleet-refresh-minutes n  re-fetch the fleet key from the broker this often (default 10), so a
                       rotation at the broker reaches this replica; the old version stays usable until it expires
  --kms-region R       models sealed with --kms-key-id: KMS Decrypt with a Recipient (Nitro attestation
                       document binding a per-boot RSA key); credentials from the AWS SDK chain
  --kms-endpoint URL   the KMS endpoint (default the region's)
  --egress unix:PATH   reach the key broker and KMS through the parent's \`cloister relay --egress\`
                       over this Unix socket (in a Nitro Enclave the image's vsock bridge; TLS stays
                       end to end to the real host name; docs/KEYS.md)

TDX collateral (attached to the evidence so clients can verify offline; docs/DEPLOY.md):
  --tdx-collateral FILE|none          read it from FILE (re-read at each refresh), or attach none
                                      (clients then fetch it: verify --pccs / SDK tdx.pcs)
  --tdx-pccs-url URL                  else fetch from Intel PCS or this PCCS
                                      (default https://api.trustedservices.intel.com)
  --tdx-collateral-refresh-minutes N  refresh at least this often (default 60; also 24 h before it expires)
  --tdx-pcs-timeout-s N               per PCS request (default 15)

${UPSTREAM_SERVE_USAGE}

${COLLECTIONS_SERVE_USAGE}

Every option can also be set as an environment variable: CLOISTER_ and the option name in
upper case with '_' for '-' (--state-dir: CLOISTER_STATE_DIR; --model and --embedder take a
comma-separated list). A flag overrides its variable. See docs/CONFIG.md.
The same listener answers GET /healthz, /readyz and /metrics (docs/DEPLOY.md).`;

function modelArg(arg: string, task?: OnnxModelConfig['task']): OnnxModelConfig {
  const eq = arg.indexOf('=');
  const dir = resolve(eq === -1 ? arg : arg.slice(eq + 1));
  const name = eq === -1 ? basename(dir) : arg.slice(0, eq);
  if (name === '' || !/^[A-Za-z0-9._-]{1,64}$/.test(name)) throw new UsageError(`bad model name '${name}'`);
  return task === undefined ? { name, dir } : { name, dir, task };
}

function listenArg(listen: string | undefined, socket: string | undefined): ListenTarget {
  if (listen !== undefined && socket !== undefined) throw new UsageError('give --listen or --socket, not both');
  if (socket !== undefined) return { path: resolve(socket) };
  const text = listen ?? '127.0.0.1:8443';
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(text);
  const port = Number(m?.[2]);
  if (m === null || m[1] === undefined || !(port >= 0 && port <= 65535)) throw new UsageError('--listen must be host:port');
  return { host: m[1].replace(/^\[|\]$/g, ''), port };
}

const BAR = '='.repeat(78);

/** Value options of `cloister serve`; each can also come from CLOISTER_<NAME> (args.ts envNameOf). */
export const SERVE_OPTIONS: readonly string[] = [
  'model', 'embedder', 'generator', 'generator-dtype', 'max-generations', 'max-generation-queue', 'max-kv-tokens', 'max-new-tokens', 'listen', 'socket', 'platform', 'state-dir', 'key-rotation-minutes', 'request-timeout-s', 'log-level',
  'max-input-chars', 'tls-cert', 'tls-key', 'drain-timeout-s', 'pad-responses', 'client-keys', 'client-key-requests-per-minute', 'key-broker', 'fleet-key', 'fleet-refresh-minutes', 'kms-region', 'kms-endpoint', 'egress', ...UPSTREAM_SERVE_FLAGS, ...TDX_COLLATERAL_FLAGS, ...COLLECTIONS_SERVE_FLAGS,
];
const SERVE_SPEC = { values: SERVE_OPTIONS, multi: ['model', 'embedder', 'generator'] } as const;

/** Default of --drain-timeout-s: how long SIGTERM waits for requests in flight. */
export const DEFAULT_DRAIN_TIMEOUT_S = 30;

export interface ServeConfig {
  readonly models: readonly OnnxModelConfig[];
  readonly upstream: Engine | undefined;
  /** --generator and its options: the CPU generation engine (GenerationEngineOptions). */
  readonly generation: GenerationEngineOptions | undefined;
  readonly platform: PlatformChoice;
  readonly target: ListenTarget;
  readonly stateDir: string;
  readonly rotationMinutes: number | undefined;
  readonly timeoutSeconds: number | undefined;
  /** --max-input-chars: longest ONNX input text (OnnxEngine maxInputChars). */
  readonly maxInputChars: number | undefined;
  readonly level: LogLevel;
  readonly tls: { readonly certPath: string; readonly keyPath: string } | undefined;
  readonly drainTimeoutSeconds: number;
  /** --pad-responses: pad response chunks for clients that declare `pad` (default true). */
  readonly padResponses: boolean;
  /** --client-keys: the keys file (read at start), and the default per-key quota. */
  readonly clientKeys: { readonly path: string; readonly perMinute: number } | undefined;
  /** The TDX collateral options (tdx-collateral-args.ts), read when the platform is TDX. */
  readonly tdxArg: (name: string) => string | undefined;
  /** --key-broker: the key broker for sealed models and fleet keys. */
  readonly keyBroker?: string;
  /** --fleet-key: the broker's fleet key to serve. */
  readonly fleetKey?: string;
  /** --fleet-refresh-minutes: how often the fleet key is re-fetched (default 10). */
  readonly fleetRefreshMinutes?: number;
  /** --guard-policy: the output guard's policy (src/guard/). */
  readonly guardPolicy: GuardPolicy;
  /** --guard-tagger: a token-classification model for the guard (src/guard/tagger.ts). */
  readonly guardTagger?: string;
  /** --collections and its options (src/collections/serve-args.ts), read at start. */
  readonly collectionsArg: (name: string) => string | undefined;
  /** --kms-region / --kms-endpoint: AWS KMS for models sealed with --kms-key-id. */
  readonly kms?: { readonly region: string; readonly endpoint?: string };
  /** --egress unix:PATH: the broker and KMS through the parent's egress relay. */
  readonly egress?: EgressRoute;
}

function positiveInt(text: string | undefined, name: string, max: number): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < 1 || n > max) throw new UsageError(`--${name} must be an integer from 1 to ${max}`);
  return n;
}

/**
 * Flags, then CLOISTER_* environment variables (flags win). Every invalid value is a
 * UsageError naming the flag or, when the value came from the environment, the variable.
 */
export function parseServeConfig(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): ServeConfig | 'help' {
  const parsed = parseArgs(argv, SERVE_SPEC);
  if (parsed.flags.has('help')) return 'help';
  const args = withEnv(parsed, SERVE_SPEC, env, [['listen', 'socket']]);
  try {
    const models = [...(args.values.get('model') ?? []).map((m) => modelArg(m)), ...(args.values.get('embedder') ?? []).map((m) => modelArg(m, 'feature-extraction'))];
    const upstream = upstreamFromArgs((name) => one(args, name));
    const generation = generationArgs(args);
    if (models.length === 0 && upstream === undefined && generation === undefined) throw new UsageError(`give at least one --model, --embedder, --generator or --upstream\n\n${USAGE}`);
    const platform = one(args, 'platform') ?? 'auto';
    if (!isPlatformChoice(platform)) throw new UsageError('--platform must be auto, simulated, nitro, sev-snp or tdx');
    const target = listenArg(one(args, 'listen'), one(args, 'socket'));
    const rotationText = one(args, 'key-rotation-minutes');
    const rotationMinutes = rotationText === undefined ? undefined : Number(rotationText);
    if (rotationMinutes !== undefined && !(/^\d+$/.test(rotationText ?? '') && Number.isSafeInteger(rotationMinutes) && rotationMinutes >= 1)) {
      throw new UsageError('--key-rotation-minutes must be a positive integer');
    }
    const timeoutSeconds = positiveInt(one(args, 'request-timeout-s'), 'request-timeout-s', 86_400);
    const maxInputChars = positiveInt(one(args, 'max-input-chars'), 'max-input-chars', 999_999_999);
    const level = one(args, 'log-level') ?? 'info';
    if (!isLogLevel(level)) throw new UsageError('--log-level must be debug, info, warn or error');
    const certPath = one(args, 'tls-cert');
    const keyPath = one(args, 'tls-key');
    if ((certPath === undefined) !== (keyPath === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
    if (certPath !== undefined && 'path' in target) throw new UsageError('--tls-cert applies to --listen (TCP), not --socket');
    const drainText = one(args, 'drain-timeout-s');
    let drainTimeoutSeconds = DEFAULT_DRAIN_TIMEOUT_S;
    if (drainText !== undefined) {
      drainTimeoutSeconds = Number(drainText);
      if (!/^\d+$/.test(drainText) || drainTimeoutSeconds > 3600) throw new UsageError('--drain-timeout-s must be an integer from 0 to 3600');
    }
    const padText = one(args, 'pad-responses') ?? 'on';
    if (padText !== 'on' && padText !== 'off') throw new UsageError('--pad-responses must be on or off');
    const clientKeysPath = one(args, 'client-keys');
    const keyQuota = positiveInt(one(args, 'client-key-requests-per-minute'), 'client-key-requests-per-minute', MAX_CLIENT_KEY_REQUESTS_PER_MINUTE);
    if (keyQuota !== undefined && clientKeysPath === undefined) throw new UsageError('--client-key-requests-per-minute needs --client-keys');
    checkCollectionsArgs((name: string) => one(args, name), one(args, 'key-broker'));
    return {
      models,
      upstream,
      generation,
      platform,
      target,
      stateDir: resolve(one(args, 'state-dir') ?? '.cloister'),
      rotationMinutes,
      timeoutSeconds,
      maxInputChars,
      level,
      tls: certPath === undefined || keyPath === undefined ? undefined : { certPath: resolve(certPath), keyPath: resolve(keyPath) },
      drainTimeoutSeconds,
      padResponses: padText === 'on',
      clientKeys: clientKeysPath === undefined ? undefined : { path: resolve(clientKeysPath), perMinute: keyQuota ?? DEFAULT_CLIENT_KEY_REQUESTS_PER_MINUTE },
      tdxArg: (name: string) => one(args, name),
      ...keyBrokerArg(one(args, 'key-broker'), one(args, 'fleet-key')),
      guardPolicy: guardPolicyArg(one(args, 'guard-policy')),
      ...guardTaggerArg(one(args, 'guard-tagger'), models),
      collectionsArg: (name: string) => one(args, name),
      ...kmsArg(one(args, 'kms-region'), one(args, 'kms-endpoint')),
      ...egressArg(one(args, 'egress')),
      ...fleetRefreshArg(one(args, 'fleet-refresh-minutes'), one(args, 'fleet-key')),
    };
  } catch (err) {
    if (err instanceof CloisterError && (err.code === 'INVALID_ARGUMENT' || err.code === 'CONFIG_INVALID')) throw new UsageError(args.label(err.message));
    throw err;
  }
}

/** --generator [name=]dir ... with --generator-dtype and the generation limits; undefined without --generator. */
function generationArgs(args: ReturnType<typeof withEnv>): GenerationEngineOptions | undefined {
  const dirs = args.values.get('generator') ?? [];
  const flags = ['generator-dtype', 'max-generations', 'max-generation-queue', 'max-kv-tokens', 'max-new-tokens'];
  if (dirs.length === 0) {
    const stray = flags.find((f) => one(args, f) !== undefined);
    if (stray !== undefined) throw new UsageError(`--${stray} needs --generator`);
    return undefined;
  }
  const dtype = one(args, 'generator-dtype') ?? 'fp32';
  if (dtype !== 'fp32' && dtype !== 'q8' && dtype !== 'q4') throw new UsageError('--generator-dtype must be fp32, q8 or q4');
  const maxActiveGenerations = positiveInt(one(args, 'max-generations'), 'max-generations', 1024);
  const maxQueueDepth = positiveInt(one(args, 'max-generation-queue'), 'max-generation-queue', 1_000_000);
  const maxKvTokens = positiveInt(one(args, 'max-kv-tokens'), 'max-kv-tokens', 10_000_000);
  const maxNewTokens = positiveInt(one(args, 'max-new-tokens'), 'max-new-tokens', 10_000_000);
  return {
    models: dirs.map((d) => ({ ...modelArg(d), dtype })),
    ...(maxActiveGenerations === undefined ? {} : { maxActiveGenerations }),
    ...(maxQueueDepth === undefined ? {} : { maxQueueDepth }),
    ...(maxKvTokens === undefined ? {} : { maxKvTokens }),
    ...(maxNewTokens === undefined ? {} : { maxNewTokens }),
  };
}

function guardTaggerArg(name: string | undefined, models: readonly OnnxModelConfig[]): { guardTagger?: string } {
  if (name === undefined) return {};
  if (!models.some((m) => m.name === name)) throw new UsageError(`--guard-tagger ${name} names no --model (give --model ${name}=DIR, a token-classification model)`);
  return { guardTagger: name };
}

function keyBrokerArg(url: string | undefined, fleetKey: string | undefined): { keyBroker?: string; fleetKey?: string } {
  if (fleetKey !== undefined && url === undefined) throw new UsageError('--fleet-key needs --key-broker');
  if (fleetKey !== undefined && !/^[A-Za-z0-9._-]{1,64}$/.test(fleetKey)) throw new UsageError('--fleet-key must be a key name');
  if (url === undefined) return {};
  if (!/^https?:\/\/[^\s]+$/.test(url)) throw new UsageError('--key-broker must be an http:// or https:// URL');
  return { keyBroker: url, ...(fleetKey === undefined ? {} : { fleetKey }) };
}

function kmsArg(region: string | undefined, endpoint: string | undefined): { kms?: { region: string; endpoint?: string } } {
  if (region === undefined) {
    if (endpoint !== undefined) throw new UsageError('--kms-endpoint needs --kms-region');
    return {};
  }
  if (!/^[a-z]{2}(-[a-z]+)+-\d{1,2}$/.test(region)) throw new UsageError(`--kms-region '${region}' is not an AWS region`);
  if (endpoint !== undefined && !/^https?:\/\/[^\s]+$/.test(endpoint)) throw new UsageError('--kms-endpoint must be an http:// or https:// URL');
  return { kms: { region, ...(endpoint === undefined ? {} : { endpoint }) } };
}

function fleetRefreshArg(text: string | undefined, fleetKey: string | undefined): { fleetRefreshMinutes?: number } {
  if (text === undefined) return {};
  if (fleetKey === undefined) throw new UsageError('--fleet-refresh-minutes needs --fleet-key');
  const n = positiveInt(text, 'fleet-refresh-minutes', 7 * 24 * 60);
  return n === undefined ? {} : { fleetRefreshMinutes: n };
}

function egressArg(text: string | undefined): { egress?: EgressRoute } {
  return text === undefined ? {} : { egress: parseEgressRoute(text) };
}

function isLogLevel(v: string): v is LogLevel {
  return v === 'debug' || v === 'info' || v === 'warn' || v === 'error';
}

async function readPem(path: string, what: string): Promise<Buffer> {
  return Buffer.from(await readFileLimited(path, MAX_CLI_FILE_BYTES, what));
}

export async function run(argv: string[], env: Readonly<Record<string, string | undefined>> = process.env): Promise<number> {
  const config = parseServeConfig(argv, env);
  if (config === 'help') {
    console.log(USAGE);
    return 0;
  }
  const { models, upstream, stateDir, rotationMinutes, timeoutSeconds, maxInputChars, level, target } = config;
  const platformArg = config.platform;
  const limits = timeoutSeconds === undefined ? undefined : { requestTimeoutMs: timeoutSeconds * 1000 };
  // Read before any model loads: a bad keys file fails the start at once, naming the line.
  const clientKeys = config.clientKeys === undefined ? undefined : await ClientKeyTable.load(config.clientKeys.path, { defaultPerMinute: config.clientKeys.perMinute });
  const tls = config.tls === undefined ? undefined : { cert: await readPem(config.tls.certPath, 'TLS certificate'), key: await readPem(config.tls.keyPath, 'TLS key') };
  // Fails closed (PLATFORM_UNAVAILABLE) when the requested TEE is not here, before any model loads.
  const selection = await selectPlatform(platformArg);
  const logger = createLogger({ minLevel: level });

  // Sealed models: their data keys are released to this TEE's evidence, then they are opened in memory.
  const { fetchFleetKeys, openSealedModels } = await import('../../server/sealed-models.js');
  let releaseAttester: Promise<Attester> | undefined;
  const attester = (): Promise<Attester> =>
    (releaseAttester ??= (async () => {
      const { createPlatformAttester } = await import('../../server/platform.js');
      const { codeDigest } = await import('../../server/code-digest.js');
      // Simulated: PCR0 is this code, and the root is the state directory's (a release policy pins both).
      return (await createPlatformAttester(selection, { codeDigest: await codeDigest() }, { simulatedStateDir: stateDir })).attester;
    })());
  const outbound = config.egress === undefined ? {} : { outbound: { egress: config.egress } };
  const opened = await openSealedModels(models, { ...(config.keyBroker === undefined ? {} : { keyBroker: config.keyBroker }), ...(config.kms === undefined ? {} : { kms: config.kms }), attester, ...outbound });
  const fleetKeys = config.fleetKey === undefined || config.keyBroker === undefined ? undefined : await fetchFleetKeys(config.fleetKey, { keyBroker: config.keyBroker, attester: await attester(), ...outbound });

  const engines: Engine[] = [];
  if (models.length > 0) {
    const { OnnxEngine } = await import('../../inference/onnx/engine.js');
    engines.push(new OnnxEngine({ models: opened.models, ...(maxInputChars === undefined ? {} : { maxInputChars }) }));
  }
  if (config.generation !== undefined) {
    const { GenerationEngine } = await import('../../inference/generation/engine.js');
    engines.push(new GenerationEngine({ ...config.generation, ...(maxInputChars === undefined ? {} : { maxInputChars }) }));
  }
  // The upstream start() waits for the engine and runs the canary: nothing listens before it passes.
  if (upstream !== undefined) engines.push(upstream);
  for (const e of engines) await e.start();
  // Sealed collections (src/collections/): after the engines they use (embedder, generation).
  const collections = await collectionsFromArgs(config.collectionsArg, [...engines], models.find((m) => m.task === 'feature-extraction')?.name, (r) => {
    const bad = r.corrupt.length + r.rolledBack.length + r.missing.length;
    logger.log(bad > 0 ? 'warn' : 'info', 'collections.loaded', { collections: r.collections, documents: r.documents, corrupt: r.corrupt.length, truncated: r.truncated, compacted: r.compacted, rolledBack: r.rolledBack.length, missing: r.missing.length });
  }, { url: config.keyBroker, attester, ...outbound });
  if (collections !== undefined) {
    await collections.start();
    engines.push(collections);
  }
  // The engines hold their own copies now: the decrypted model files are zeroed and dropped.
  opened.wipe();

  const keyRotationIntervalMs = rotationMinutes === undefined ? undefined : rotationMinutes * 60_000;
  const tdxCollateral = selection.platform === 'tdx' ? tdxCollateralFromArgs(config.tdxArg) : undefined;
  const pa = await preparePlatform({
    selection,
    engines,
    ...(keyRotationIntervalMs === undefined ? {} : { keyRotationIntervalMs }),
    ...(limits === undefined ? {} : { limits }),
    ...(config.padResponses ? {} : { padResponses: false }),
    ...(config.guardPolicy === 'redact' ? {} : { guardPolicy: config.guardPolicy }),
    ...(config.guardTagger === undefined ? {} : { guardTagger: config.guardTagger }),
    options: {
      // The simulated root is kept in the state directory: development policies survive restarts.
      simulatedStateDir: stateDir,
      ...(tdxCollateral === undefined ? {} : { tee: { tdx: { collateral: (quote: Uint8Array) => tdxCollateral.get(quote) } } }),
    },
  }).catch(
    async (err: unknown) => {
      for (const e of engines) await e.close().catch(() => undefined);
      throw err;
    },
  );
  const platform = pa.selection.platform;

  const server = new CloisterServer({
    engines,
    attester: pa.attester,
    logger,
    ...(keyRotationIntervalMs === undefined ? {} : { keyRotationIntervalMs }),
    ...(limits === undefined ? {} : { limits }),
    ...(tls === undefined ? {} : { tls }),
    ...(config.padResponses ? {} : { padResponses: false }),
    ...(clientKeys === undefined ? {} : { clientKeys }),
    ...(fleetKeys === undefined ? {} : { fleetKeys }),
    guardPolicy: config.guardPolicy,
    ...(config.guardTagger === undefined ? {} : { guardTagger: config.guardTagger }),
  });
  const address = await server.listen(target).catch(async (err: unknown) => {
    for (const e of engines) await e.close().catch(() => undefined);
    throw err;
  });

  // Re-fetch the fleet key on a schedule: a rotation at the broker reaches this replica.
  const fleetRefresh =
    fleetKeys === undefined || config.fleetKey === undefined || config.keyBroker === undefined
      ? undefined
      : await (async () => {
          const { startFleetRefresh, DEFAULT_FLEET_REFRESH_MS } = await import('../../server/fleet-refresh.js');
          const name = config.fleetKey ?? '';
          const broker = config.keyBroker ?? '';
          const releaseAttester = await attester();
          return startFleetRefresh({
            intervalMs: config.fleetRefreshMinutes === undefined ? DEFAULT_FLEET_REFRESH_MS : config.fleetRefreshMinutes * 60_000,
            fetch: () => fetchFleetKeys(name, { keyBroker: broker, attester: releaseAttester, ...outbound }),
            apply: (keys) => server.keys.updateFleet(keys),
            onEvent: (e) => {
              // A change also logs key.rotated (KeyManager onRotate).
              if (e.type === 'fleet-refreshed') logger.log(e.changed ? 'info' : 'debug', 'fleet.refreshed', { keyId: e.keyId });
              else logger.log('warn', 'fleet.refresh-failed', { code: e.code });
            },
          });
        })();

  const lines: string[] = [];
  if (pa.simulated !== undefined) {
    await mkdir(stateDir, { recursive: true });
    const rootPath = resolve(stateDir, 'simulated-root.pem');
    const policyPath = resolve(stateDir, 'policy.json');
    const policy = developmentPolicy({ pcrs: pa.simulated.pcrs, rootSha256Hex: pa.simulated.rootSha256Hex, models: server.router.models() });
    await writeFile(policyPath, `${JSON.stringify(policy, null, 2)}\n`, { mode: 0o644 });
    lines.push(
      BAR,
      'WARNING: platform is SIMULATED. No TEE protects this server: evidence is signed by a',
      'locally generated root, keys live in an ordinary process. For development only.',
      ...(pa.selection.fellBack ? ['(no TEE device was found: --platform auto fell back to simulated)'] : []),
      BAR,
      `simulated root:      ${rootPath}`,
      `development policy:  ${policyPath}`,
    );
  }
  if (pa.selection.warning !== undefined) lines.push(`warning:    ${pa.selection.warning}`);
  const keyFile = config.collectionsArg('collections-key-file');
  if (collections !== undefined && keyFile !== undefined) lines.push(BAR, ...storageKeyWarning(keyFile), BAR);
  const storageKey = config.collectionsArg('collections-key');
  if (collections !== undefined && storageKey !== undefined) lines.push(`collections: storage key ${storageKey} released by ${config.keyBroker ?? ''}; rollback counters at the broker`);
  lines.push(`guard:      PHI/PII output guard, policy ${config.guardPolicy}${config.guardTagger === undefined ? ' (rules)' : `, rules and tagger model ${config.guardTagger}`}`);
  lines.push(`platform:   ${platform}`);
  lines.push(`websocket:  ${address.wsUrl}`);
  if (address.httpUrl !== undefined) {
    lines.push(`http:       ${address.httpUrl}  (GET /v1/evidence, POST /v1/sealed)`);
    lines.push(`operator:   ${address.httpUrl}/healthz  /readyz  /metrics`);
  }
  lines.push(`models:     ${server.router.models().map((m) => `${m.name} (${m.task}${opened.sealed.includes(m.name) ? ', sealed: unsealed in memory' : ''})`).join(', ')}`);
  if (fleetKeys !== undefined) lines.push(`fleet key:  ${config.fleetKey ?? ''} (key id ${fleetKeys[0]?.keyId ?? 0}; the same key config on every replica)`);
  if (clientKeys !== undefined) lines.push(`client keys: ${clientKeys.size} from ${config.clientKeys?.path ?? ''} (required in every request)`);
  const url = address.httpUrl ?? address.wsUrl;
  // The development policy pins the simulated root's SHA-256: that pin is the client's
  // explicit trust, so no --root is needed (src/verifier/verify.ts TrustedRoots).
  const policyArg = pa.simulated === undefined ? 'policy.json' : resolve(stateDir, 'policy.json');
  lines.push('', 'try:', `  npx cloister infer --url ${url} --policy ${policyArg} --text "chest pain radiating to the left arm"`);
  console.log(lines.join('\n'));

  // SIGTERM / SIGINT: stop accepting (the port is released at once), let the requests in
  // flight finish within --drain-timeout-s, then close the engines. A second signal stops at once.
  await untilStopSignal();
  const force = (): void => void server.close();
  process.once('SIGINT', force);
  process.once('SIGTERM', force);
  fleetRefresh?.stop();
  const { drained } = await server.shutdown(config.drainTimeoutSeconds * 1000);
  process.off('SIGINT', force);
  process.off('SIGTERM', force);
  for (const e of engines) await e.close();
  if (!drained) console.error(`cloister serve: stopped with requests still in flight after the drain timeout (${config.drainTimeoutSeconds} s)`);
  return 0;
}
