/**
 * `cloister serve`: run the server with ONNX models on TCP or a Unix socket.
 *
 *   cloister serve --model [name=]dir [--model ...] [--embedder [name=]dir]
 *                  [--listen host:port | --socket path]
 *                  [--platform auto|simulated|nitro|sev-snp|tdx] [--state-dir dir]
 *                  [--key-rotation-minutes n] [--request-timeout-s n] [--log-level debug|info|warn|error]
 *
 * Platform selection is src/server/platform.ts (shared TEE detection; auto falls back to
 * SIMULATED only when no TEE interface is there at all). On the simulated platform PCR0
 * measures this package's code (dist/*.js + package-lock.json, src/server/code-digest.ts),
 * and serve writes the run's root certificate and a development policy matching this server
 * (which pins that root's SHA-256, so clients need no --root) into the state dir, and says
 * loudly that nothing is attested.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { CloisterError } from '../../errors.js';
import type { OnnxModelConfig } from '../../inference/onnx/engine.js';
import { developmentPolicy } from '../../client/dev-policy.js';
import { createLogger } from '../../server/log.js';
import type { LogLevel } from '../../server/log.js';
import { isPlatformChoice, preparePlatform, selectPlatform } from '../../server/platform.js';
import { CloisterServer } from '../../server/server.js';
import type { ListenTarget } from '../../server/server.js';
import { one, parseArgs } from './args.js';
import type { Engine } from '../../inference/types.js';
import { UPSTREAM_SERVE_FLAGS, UPSTREAM_SERVE_USAGE, upstreamFromArgs } from '../../inference/upstream/index.js';
import { TDX_COLLATERAL_FLAGS, tdxCollateralFromArgs } from './tdx-collateral-args.js';

export const summary = 'run the Cloister server (sealed, attested inference)';

const USAGE = `usage: cloister serve --model [name=]dir [--model ...] [--embedder [name=]dir]
                      [--listen host:port | --socket path]
                      [--platform auto|simulated|nitro|sev-snp|tdx] [--state-dir dir]
                      [--key-rotation-minutes n] [--request-timeout-s n] [--log-level debug|info|warn|error]

  --model      a Hugging Face-layout ONNX model directory (task from its config.json)
  --embedder   a feature-extraction model directory
  --listen     TCP address (default 127.0.0.1:8443)
  --socket     Unix socket path instead of TCP (e.g. bridged to vsock in an enclave)
  --platform   TEE to attest with (default auto: detect, else SIMULATED with a warning)
  --state-dir  where the simulated root and development policy are written (default .cloister)
  --request-timeout-s  deadline of one request, streaming included (default 60; raise it for long generations)

TDX collateral (attached to the evidence so clients can verify offline; docs/DEPLOY.md):
  --tdx-collateral FILE|none          read it from FILE (re-read at each refresh), or attach none
                                      (clients then fetch it: verify --pccs / SDK tdx.pcs)
  --tdx-pccs-url URL                  else fetch from Intel PCS or this PCCS
                                      (default https://api.trustedservices.intel.com)
  --tdx-collateral-refresh-minutes N  refresh at least this often (default 60; also 24 h before it expires)
  --tdx-pcs-timeout-s N               per PCS request (default 15)

${UPSTREAM_SERVE_USAGE}`;

function modelArg(arg: string, task?: OnnxModelConfig['task']): OnnxModelConfig {
  const eq = arg.indexOf('=');
  const dir = resolve(eq === -1 ? arg : arg.slice(eq + 1));
  const name = eq === -1 ? basename(dir) : arg.slice(0, eq);
  if (name === '' || !/^[A-Za-z0-9._-]{1,64}$/.test(name)) throw new CloisterError('INVALID_ARGUMENT', `bad model name '${name}'`);
  return task === undefined ? { name, dir } : { name, dir, task };
}

function listenArg(listen: string | undefined, socket: string | undefined): ListenTarget {
  if (listen !== undefined && socket !== undefined) throw new CloisterError('INVALID_ARGUMENT', 'give --listen or --socket, not both');
  if (socket !== undefined) return { path: resolve(socket) };
  const text = listen ?? '127.0.0.1:8443';
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(text);
  const port = Number(m?.[2]);
  if (m === null || m[1] === undefined || !(port >= 0 && port <= 65535)) throw new CloisterError('INVALID_ARGUMENT', '--listen must be host:port');
  return { host: m[1].replace(/^\[|\]$/g, ''), port };
}

const BAR = '='.repeat(78);

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, {
    values: ['model', 'embedder', 'listen', 'socket', 'platform', 'state-dir', 'key-rotation-minutes', 'request-timeout-s', 'log-level', ...UPSTREAM_SERVE_FLAGS, ...TDX_COLLATERAL_FLAGS],
    multi: ['model', 'embedder'],
  });
  if (args.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  const models = [...(args.values.get('model') ?? []).map((m) => modelArg(m)), ...(args.values.get('embedder') ?? []).map((m) => modelArg(m, 'feature-extraction'))];
  const upstream = upstreamFromArgs((name) => one(args, name));
  if (models.length === 0 && upstream === undefined) throw new CloisterError('INVALID_ARGUMENT', `give at least one --model, --embedder or --upstream\n\n${USAGE}`);
  const platformArg = one(args, 'platform') ?? 'auto';
  if (!isPlatformChoice(platformArg)) {
    throw new CloisterError('INVALID_ARGUMENT', '--platform must be auto, simulated, nitro, sev-snp or tdx');
  }
  const target = listenArg(one(args, 'listen'), one(args, 'socket'));
  const stateDir = resolve(one(args, 'state-dir') ?? '.cloister');
  const rotationText = one(args, 'key-rotation-minutes');
  const rotationMinutes = rotationText === undefined ? undefined : Number(rotationText);
  if (rotationMinutes !== undefined && !(Number.isInteger(rotationMinutes) && rotationMinutes >= 1)) {
    throw new CloisterError('INVALID_ARGUMENT', '--key-rotation-minutes must be a positive integer');
  }
  const timeoutText = one(args, 'request-timeout-s');
  const timeoutSeconds = timeoutText === undefined ? undefined : Number(timeoutText);
  if (timeoutSeconds !== undefined && !(Number.isInteger(timeoutSeconds) && timeoutSeconds >= 1 && timeoutSeconds <= 86_400)) {
    throw new CloisterError('INVALID_ARGUMENT', '--request-timeout-s must be an integer from 1 to 86400');
  }
  const limits = timeoutSeconds === undefined ? undefined : { requestTimeoutMs: timeoutSeconds * 1000 };
  // Fails closed (PLATFORM_UNAVAILABLE) when the requested TEE is not here, before any model loads.
  const selection = await selectPlatform(platformArg);
  const level = (one(args, 'log-level') ?? 'info') as LogLevel;
  if (!['debug', 'info', 'warn', 'error'].includes(level)) throw new CloisterError('INVALID_ARGUMENT', 'bad --log-level');
  const logger = createLogger({ minLevel: level });

  const engines: Engine[] = [];
  if (models.length > 0) {
    const { OnnxEngine } = await import('../../inference/onnx/engine.js');
    engines.push(new OnnxEngine({ models }));
  }
  // The upstream start() waits for the engine and runs the canary: nothing listens before it passes.
  if (upstream !== undefined) engines.push(upstream);
  for (const e of engines) await e.start();

  const keyRotationIntervalMs = rotationMinutes === undefined ? undefined : rotationMinutes * 60_000;
  const tdxCollateral = selection.platform === 'tdx' ? tdxCollateralFromArgs((name) => one(args, name)) : undefined;
  const pa = await preparePlatform({
    selection,
    engines,
    ...(tdxCollateral === undefined ? {} : { options: { tee: { tdx: { collateral: (quote: Uint8Array) => tdxCollateral.get(quote) } } } }),
    ...(keyRotationIntervalMs === undefined ? {} : { keyRotationIntervalMs }),
    ...(limits === undefined ? {} : { limits }),
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
  });
  const address = await server.listen(target);

  const lines: string[] = [];
  if (pa.simulated !== undefined) {
    await mkdir(stateDir, { recursive: true });
    const rootPath = resolve(stateDir, 'simulated-root.pem');
    const policyPath = resolve(stateDir, 'policy.json');
    await writeFile(rootPath, pa.simulated.rootPem, { mode: 0o644 });
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
  lines.push(`platform:   ${platform}`);
  lines.push(`websocket:  ${address.wsUrl}`);
  if (address.httpUrl !== undefined) lines.push(`http:       ${address.httpUrl}  (GET /v1/evidence, POST /v1/sealed)`);
  lines.push(`models:     ${server.router.models().map((m) => `${m.name} (${m.task})`).join(', ')}`);
  const url = address.httpUrl ?? address.wsUrl;
  // The development policy pins the simulated root's SHA-256: that pin is the client's
  // explicit trust, so no --root is needed (src/attestation/verify.ts TrustedRoots).
  const policyArg = pa.simulated === undefined ? 'policy.json' : resolve(stateDir, 'policy.json');
  lines.push('', 'try:', `  npx cloister infer --url ${url} --policy ${policyArg} --text "chest pain radiating to the left arm"`);
  console.log(lines.join('\n'));

  await new Promise<void>((done) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      done();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await server.close();
  for (const e of engines) await e.close();
  return 0;
}
