#!/usr/bin/env node
/**
 * Build the Cloister enclave image and its client policy.
 *
 *   node scripts/build-enclave.mjs [--model-dir models/demo/classifier] [--model-name classifier]
 *        [--tag cloister-enclave:latest] [--out build/enclave] [--engine docker|podman]
 *        [--node-image node:20-bookworm-slim@sha256:...] [--debian-snapshot 20250601T000000Z]
 *        [--debian-mirror http://deb.debian.org/debian] [--build-ca proxy-ca.pem]
 *        [--signing-certificate cert.pem --private-key key.pem] [--source-date-epoch N]
 *
 * Steps: docker (or podman) build of Dockerfile.enclave -> nitro-cli build-enclave -> parse
 * nitro-cli's measurements -> measure the produced EIF ourselves (src/image/eif)
 * and refuse to continue unless both agree -> write measurements.json and policy.json.
 * Requires `npm run build` first (the EIF measurement and model digest come from dist/).
 */
import { createHash } from 'node:crypto';
import { createReadStream, mkdirSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { basename, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import {
  INSTALL_HINTS,
  ToolError,
  dockerfileDefaultNodeImage,
  isPinnedImage,
  parseNitroJson,
  parseNitroMeasurements,
  repoRoot,
  requireTool,
  runTool,
  which,
} from './enclave-common.mjs';

async function loadDist() {
  const measure = join(repoRoot, 'dist', 'image', 'eif', 'measure.js');
  const digest = join(repoRoot, 'dist', 'inference', 'onnx', 'digest.js');
  if (!existsSync(measure) || !existsSync(digest)) throw new ToolError('dist/ is missing: run `npm run build` first');
  const [m, d] = await Promise.all([import(pathToFileURL(measure).href), import(pathToFileURL(digest).href)]);
  return { measureEifFile: m.measureEifFile, modelDigest: d.modelDigest };
}

async function sha256File(path) {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk);
  return h.digest('hex');
}

function gitEpoch(env) {
  return runTool('git', ['log', '-1', '--format=%ct'], { env }).then(
    (r) => (r.code === 0 && /^\d+$/.test(r.stdout.trim()) ? r.stdout.trim() : undefined),
    () => undefined,
  );
}

/**
 * Builds the image, the EIF, measurements.json and policy.json. `deps` lets tests supply
 * the EIF measurement and model digest functions (otherwise loaded from dist/).
 */
export async function buildEnclave(argv, { env = process.env, log = (s) => console.error(s), deps } = {}) {
  const { values } = parseArgs({
    args: argv,
    options: {
      'model-dir': { type: 'string', default: 'models/demo/classifier' },
      'model-name': { type: 'string' },
      tag: { type: 'string', default: 'cloister-enclave:latest' },
      out: { type: 'string', default: 'build/enclave' },
      engine: { type: 'string' },
      'node-image': { type: 'string' },
      'debian-snapshot': { type: 'string' },
      'debian-mirror': { type: 'string' },
      'build-ca': { type: 'string' },
      'signing-certificate': { type: 'string' },
      'private-key': { type: 'string' },
      'source-date-epoch': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    log(readFileSync(new URL(import.meta.url), 'utf8').split('*/')[0]);
    return 0;
  }
  // Check every tool before doing any work.
  let engine = values.engine;
  if (engine === undefined) engine = which('docker', env) ? 'docker' : which('podman', env) ? 'podman' : undefined;
  if (engine === undefined) throw new ToolError(`neither 'docker' nor 'podman' found on PATH: ${INSTALL_HINTS.docker}`);
  if (engine !== 'docker' && engine !== 'podman') throw new ToolError('--engine must be docker or podman');
  const enginePath = requireTool(engine, INSTALL_HINTS.docker, env);
  const nitroCli = requireTool('nitro-cli', INSTALL_HINTS['nitro-cli'], env);

  const nodeImage = values['node-image'] ?? dockerfileDefaultNodeImage();
  if (!isPinnedImage(nodeImage)) {
    throw new ToolError(`refusing an unpinned base image ${JSON.stringify(nodeImage)}: give --node-image name@sha256:<64 hex>`);
  }
  const cert = values['signing-certificate'];
  const key = values['private-key'];
  if ((cert === undefined) !== (key === undefined)) throw new ToolError('--signing-certificate and --private-key go together');
  const modelDir = values['model-dir'];
  const modelAbs = resolve(repoRoot, modelDir);
  if (!existsSync(modelAbs)) throw new ToolError(`model directory ${modelDir} does not exist`);
  const modelRel = relative(repoRoot, modelAbs).split(sep).join('/');
  if (modelRel === '' || modelRel.startsWith('..') || isAbsolute(modelRel)) {
    throw new ToolError(`model directory ${modelDir} must be inside the repository (the docker build context)`);
  }
  const modelName = values['model-name'] ?? basename(modelAbs);
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(modelName)) throw new ToolError(`model name ${JSON.stringify(modelName)} must be 1-64 of A-Z a-z 0-9 . _ -`);
  const epoch = values['source-date-epoch'] ?? env.SOURCE_DATE_EPOCH ?? (await gitEpoch(env));
  if (epoch === undefined || !/^\d+$/.test(epoch)) throw new ToolError('no SOURCE_DATE_EPOCH: pass --source-date-epoch or build from a git checkout');
  const outDir = resolve(repoRoot, values.out);
  mkdirSync(outDir, { recursive: true });
  const eifPath = join(outDir, 'cloister.eif');
  const { measureEifFile, modelDigest } = deps ?? (await loadDist());

  const modelSha = Buffer.from(await modelDigest(modelAbs)).toString('hex');

  // 1. Image build. --no-cache keeps a stale layer from leaking into a measured image.
  const buildArgs = [
    'build',
    '--file', join(repoRoot, 'Dockerfile.enclave'),
    '--tag', values.tag,
    '--no-cache',
    '--build-arg', `NODE_IMAGE=${nodeImage}`,
    '--build-arg', `MODEL_DIR=${modelRel}`,
    '--build-arg', `MODEL_NAME=${modelName}`,
    '--build-arg', `SOURCE_DATE_EPOCH=${epoch}`,
    ...(values['debian-snapshot'] ? ['--build-arg', `DEBIAN_SNAPSHOT=${values['debian-snapshot']}`] : []),
    ...(values['debian-mirror'] ? ['--build-arg', `DEBIAN_MIRROR=${values['debian-mirror']}`] : []),
    // A TLS-inspecting proxy's CA for npm: a build secret, never a layer (Dockerfile.enclave).
    ...(values['build-ca'] ? ['--secret', `id=build_ca,src=${resolve(values['build-ca'])}`] : []),
    repoRoot,
  ];
  log(`cloister: ${engine} build ${values.tag}`);
  const built = await runTool(enginePath, buildArgs, { env, inherit: true });
  if (built.code !== 0) throw new ToolError(`${engine} build failed (exit ${built.code})`);
  const inspect = await runTool(enginePath, ['image', 'inspect', '--format', '{{.Id}}', values.tag], { env });
  const imageId = inspect.stdout.trim();
  if (inspect.code !== 0 || !/^sha256:[0-9a-f]{64}$/.test(imageId)) throw new ToolError(`${engine} image inspect did not return an image id`);

  // 2. EIF build.
  const nitroArgs = ['build-enclave', '--docker-uri', values.tag, '--output-file', eifPath];
  if (cert !== undefined) nitroArgs.push('--signing-certificate', resolve(cert), '--private-key', resolve(key));
  log('cloister: nitro-cli build-enclave');
  const nb = await runTool(nitroCli, nitroArgs, { env, inherit: true });
  if (nb.code !== 0) throw new ToolError(`nitro-cli build-enclave failed (exit ${nb.code})`);
  const fromNitro = parseNitroMeasurements(parseNitroJson(nb.stdout, 'build-enclave'));
  if (cert !== undefined && fromNitro.PCR8 === undefined) throw new ToolError('signed build but nitro-cli reported no PCR8');

  // 3. Independent measurement of the produced file; fail closed on any disagreement.
  const ours = measureEifFile(eifPath).measurements;
  const mine = { PCR0: ours.pcr0, PCR1: ours.pcr1, PCR2: ours.pcr2, ...(ours.pcr8 ? { PCR8: ours.pcr8 } : {}) };
  for (const k of new Set([...Object.keys(fromNitro), ...Object.keys(mine)])) {
    if (fromNitro[k] !== mine[k]) {
      throw new ToolError(`${k} mismatch between nitro-cli (${fromNitro[k] ?? 'absent'}) and cloister's EIF measurement (${mine[k] ?? 'absent'}); not writing a policy`);
    }
  }

  // 4. Outputs.
  const eifSha = await sha256File(eifPath);
  const pcrs = { 0: mine.PCR0, 1: mine.PCR1, 2: mine.PCR2, ...(mine.PCR8 ? { 8: mine.PCR8 } : {}) };
  const measurements = {
    version: 1,
    eif: { file: basename(eifPath), sha256: eifSha },
    image: { tag: values.tag, id: imageId, engine, base: nodeImage, sourceDateEpoch: Number(epoch) },
    measurements: { hashAlgorithm: 'SHA384', ...mine },
    models: { [modelName]: modelSha },
    signed: cert !== undefined,
  };
  const policy = { version: 1, platforms: { nitro: { pcrs } }, models: { [modelName]: modelSha } };
  writeFileSync(join(outDir, 'measurements.json'), JSON.stringify(measurements, null, 2) + '\n');
  writeFileSync(join(outDir, 'policy.json'), JSON.stringify(policy, null, 2) + '\n');
  log(`cloister: wrote ${join(values.out, 'cloister.eif')}, measurements.json, policy.json`);
  log(`cloister: PCR0 ${mine.PCR0}`);
  return 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  buildEnclave(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (err) => {
      console.error(`build-enclave: ${err instanceof ToolError ? err.message : err?.stack ?? err}`);
      process.exitCode = 1;
    },
  );
}
