#!/usr/bin/env node
/**
 * Build the Cloister enclave image reproducibly, without nitro-cli, and publish its
 * measurements.
 *
 *   node scripts/build-image.mjs [--engine buildah|docker|podman] [--tag localhost/cloister-enclave:latest]
 *        [--node-image NAME@sha256:...] [--debian-mirror URL] [--debian-snapshot 20250601T000000Z]
 *        [--build-ca ca.pem (default: $NODE_EXTRA_CA_CERTS)] [--model-dir models/demo/classifier] [--model-name classifier]
 *        [--source-date-epoch N] [--out build/image]
 *        [--kernel bzImage --init init --nsm nsm.ko --cmdline cmdline]   (also build an EIF)
 *        [--check] [--keep] [--skip-build (use the image already tagged --tag)]
 *
 * 1. Builds Dockerfile.enclave with --no-cache and a fixed timestamp (buildah: `buildah bud
 *    --isolation chroot --timestamp $SOURCE_DATE_EPOCH`, as root; docker/podman: `build`).
 * 2. buildah only: mounts the image's root filesystem and reports its size and the share of
 *    node_modules; with --kernel/--init/--nsm/--cmdline, builds an EIF from it
 *    (`cloister eif build`) and reports PCR0/1/2; with --check, starts the server from that
 *    root filesystem exactly with the image's CMD through enclave/entrypoint.sh, as root (as
 *    the Nitro init does), with CLOISTER_PLATFORM=simulated and CLOISTER_VSOCK_PORT=0, and gets
 *    a sealed answer over its Unix socket with `cloister infer`.
 * 3. Writes measurements.json (image id and layer digests, model digest, lock-file digest,
 *    source commit, sizes, PCRs when an EIF was built) and, when an EIF was built, the client
 *    policy.json derived from it.
 * Requires `npm run build` first (model digest, EIF builder and the client come from dist/).
 */
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { ToolError, dockerfileDefaultNodeImage, isPinnedImage, repoRoot, requireTool, runTool, which } from './enclave-common.mjs';

async function loadDist(withEif) {
  const need = { digest: join(repoRoot, 'dist', 'inference', 'onnx', 'digest.js'), code: join(repoRoot, 'dist', 'server', 'code-digest.js') };
  if (withEif) need.build = join(repoRoot, 'dist', 'image', 'eif', 'build.js');
  for (const p of Object.values(need)) if (!existsSync(p)) throw new ToolError(`${relative(repoRoot, p)} is missing: run \`npm run build\` first`);
  const d = await import(pathToFileURL(need.digest).href);
  const c = await import(pathToFileURL(need.code).href);
  const b = need.build === undefined ? {} : await import(pathToFileURL(need.build).href);
  return { modelDigest: d.modelDigest, codeDigest: c.codeDigest, buildEifFromRootfs: b.buildEifFromRootfs };
}

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

/** Bytes of regular files under `dir` (symlinks and directories not counted), without following links. */
export function treeBytes(dir) {
  let total = 0;
  const stack = [dir];
  while (stack.length > 0) {
    const d = stack.pop();
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) stack.push(p);
      else if (e.isFile()) total += lstatSync(p).size;
    }
  }
  return total;
}

const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;

async function git(args) {
  const r = await runTool('git', args).catch(() => ({ code: 1, stdout: '' }));
  return r.code === 0 ? r.stdout.trim() : undefined;
}

async function buildah(bin, args, what) {
  const r = await runTool(bin, args);
  if (r.code !== 0) throw new ToolError(`buildah ${what} failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  return r.stdout.trim();
}

/**
 * Starts the image's CMD from its root filesystem (buildah run --isolation chroot, root, the
 * server's run directory bind-mounted from a short host path) and asks it for a sealed answer.
 */
async function checkSealedAnswer(bin, container, config, { log, timeoutMs = 180_000 }) {
  const argv = [...(config.Entrypoint ?? []), ...(config.Cmd ?? [])];
  if (argv.length === 0) throw new ToolError('the image has neither ENTRYPOINT nor CMD');
  const env = Object.fromEntries((config.Env ?? []).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  const runDir = env.CLOISTER_SOCKET ? env.CLOISTER_SOCKET.slice(0, env.CLOISTER_SOCKET.lastIndexOf('/')) : '/run/cloister';
  if (env.CLOISTER_STATE_DIR !== runDir) throw new ToolError(`expected CLOISTER_STATE_DIR (${env.CLOISTER_STATE_DIR}) to be the socket's directory ${runDir}`);
  // A short host directory: the socket path must fit sun_path (108 bytes).
  const host = mkdtempSync(join(tmpdir(), 'cl-img-'));
  const sock = join(host, basename(env.CLOISTER_SOCKET ?? 'cloister.sock'));
  const runArgs = [
    'run', '--isolation', 'chroot', '--user', '0:0', '--volume', `${host}:${runDir}`,
    '--env', 'CLOISTER_PLATFORM=simulated', '--env', 'CLOISTER_VSOCK_PORT=0',
    container, '--', ...argv,
  ];
  log(`cloister: starting the image's CMD as root (entrypoint drops to ${env.CLOISTER_USER ?? 'cloister'}): ${argv.join(' ')}`);
  const child = spawn(bin, runArgs, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let output = '';
  const keep = (d) => {
    output = (output + d).slice(-8192);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = null;
  child.on('exit', (code, signal) => (exited = { code, signal }));
  const stop = async () => {
    if (exited !== null) return;
    try {
      process.kill(-child.pid, 'SIGTERM');
    } catch {
      // already gone
    }
    for (let i = 0; i < 100 && exited === null; i++) await new Promise((r) => setTimeout(r, 100));
    if (exited === null) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  };
  try {
    const policy = join(host, 'policy.json');
    for (let waited = 0; !(existsSync(sock) && existsSync(policy)); waited += 200) {
      if (exited !== null) throw new ToolError(`the server from the image exited (${exited.code ?? exited.signal}) before listening:\n${output}`);
      if (waited > timeoutMs) throw new ToolError(`the server from the image did not create ${sock} within ${timeoutMs / 1000}s:\n${output}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const owner = lstatSync(sock).uid;
    if (owner !== 10001) throw new ToolError(`the socket ${sock} belongs to uid ${owner}, not the image's non-root user 10001: the privilege drop did not happen`);
    const text = 'crushing chest pain radiating to the left arm, troponin elevated';
    const cli = join(repoRoot, 'dist', 'cli', 'main.js');
    const r = await runTool(process.execPath, [cli, 'infer', '--url', `ws+unix:${sock}:/`, '--policy', policy, '--text', text, '--json']);
    if (r.code !== 0) throw new ToolError(`cloister infer against the image failed (exit ${r.code}): ${r.stderr.trim()}\nserver output:\n${output}`);
    let result;
    try {
      result = JSON.parse(r.stdout);
    } catch {
      throw new ToolError(`cloister infer printed no JSON: ${r.stdout.slice(0, 200)}`);
    }
    log(`cloister: sealed answer from the image over ${sock}: ${JSON.stringify(result).slice(0, 200)}`);
    return { socket: sock, answer: result };
  } finally {
    await stop();
    rmSync(host, { recursive: true, force: true });
  }
}

export async function buildImage(argv, { env = process.env, log = (s) => console.error(s) } = {}) {
  const { values } = parseArgs({
    args: argv,
    options: {
      engine: { type: 'string' },
      tag: { type: 'string', default: 'localhost/cloister-enclave:latest' },
      'node-image': { type: 'string' },
      'debian-mirror': { type: 'string' },
      'debian-snapshot': { type: 'string' },
      'build-ca': { type: 'string' },
      'model-dir': { type: 'string', default: 'models/demo/classifier' },
      'model-name': { type: 'string' },
      'source-date-epoch': { type: 'string' },
      out: { type: 'string', default: 'build/image' },
      kernel: { type: 'string' },
      init: { type: 'string' },
      nsm: { type: 'string' },
      cmdline: { type: 'string' },
      check: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      'skip-build': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    log(readFileSync(new URL(import.meta.url), 'utf8').split('*/')[0]);
    return 0;
  }
  const engine = values.engine ?? ['buildah', 'docker', 'podman'].find((e) => which(e, env));
  if (engine === undefined) throw new ToolError("none of 'buildah', 'docker', 'podman' found on PATH (Debian: apt-get install buildah)");
  if (!['buildah', 'docker', 'podman'].includes(engine)) throw new ToolError('--engine must be buildah, docker or podman');
  const bin = requireTool(engine, 'install it, or pass --engine', env);
  const eifParts = ['kernel', 'init', 'nsm', 'cmdline'].filter((k) => values[k] !== undefined);
  if (eifParts.length !== 0 && eifParts.length !== 4) throw new ToolError('--kernel, --init, --nsm and --cmdline go together');
  if (engine !== 'buildah' && (values.check || eifParts.length > 0)) throw new ToolError('--check and the EIF build need --engine buildah (they read the image root filesystem)');

  const nodeImage = values['node-image'] ?? dockerfileDefaultNodeImage();
  if (!isPinnedImage(nodeImage)) throw new ToolError(`refusing an unpinned base image ${JSON.stringify(nodeImage)}: give --node-image name@sha256:<64 hex>`);
  const modelAbs = resolve(repoRoot, values['model-dir']);
  if (!existsSync(join(modelAbs, 'config.json'))) throw new ToolError(`model directory ${values['model-dir']} has no config.json (for the demo model: npm run demo-model)`);
  const modelRel = relative(repoRoot, modelAbs).split(sep).join('/');
  if (modelRel === '' || modelRel.startsWith('..') || isAbsolute(modelRel)) throw new ToolError(`model directory ${values['model-dir']} must be inside the repository (the build context)`);
  const modelName = values['model-name'] ?? basename(modelAbs);
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(modelName)) throw new ToolError(`model name ${JSON.stringify(modelName)} must be 1-64 of A-Z a-z 0-9 . _ -`);
  const epoch = values['source-date-epoch'] ?? env.SOURCE_DATE_EPOCH ?? (await git(['log', '-1', '--format=%ct']));
  if (epoch === undefined || !/^\d+$/.test(epoch)) throw new ToolError('no SOURCE_DATE_EPOCH: pass --source-date-epoch or build from a git checkout');
  // The build-time CA (a TLS-inspecting proxy's): --build-ca, else the CA file the host's Node
  // already trusts (NODE_EXTRA_CA_CERTS). Mounted as a build secret, never stored in the image.
  const buildCa = values['build-ca'] ?? (env.NODE_EXTRA_CA_CERTS || undefined);
  if (buildCa !== undefined && !existsSync(buildCa)) throw new ToolError(`build CA file ${buildCa} does not exist`);
  if (buildCa !== undefined) log(`cloister: build-time CA ${buildCa} (build secret build_ca; not in the image)`);
  const { modelDigest, codeDigest, buildEifFromRootfs } = await loadDist(eifParts.length === 4);
  const outDir = resolve(repoRoot, values.out);
  mkdirSync(outDir, { recursive: true });

  // 1. Build. --no-cache: a stale layer must never leak into a measured image.
  const started = Date.now();
  const common = [
    '--file', join(repoRoot, 'Dockerfile.enclave'), '--tag', values.tag, '--no-cache',
    '--build-arg', `NODE_IMAGE=${nodeImage}`, '--build-arg', `MODEL_DIR=${modelRel}`,
    '--build-arg', `MODEL_NAME=${modelName}`, '--build-arg', `SOURCE_DATE_EPOCH=${epoch}`,
    ...(values['debian-mirror'] ? ['--build-arg', `DEBIAN_MIRROR=${values['debian-mirror']}`] : []),
    ...(values['debian-snapshot'] ? ['--build-arg', `DEBIAN_SNAPSHOT=${values['debian-snapshot']}`] : []),
    ...(buildCa !== undefined ? ['--secret', `id=build_ca,src=${resolve(buildCa)}`] : []),
  ];
  const buildArgs =
    engine === 'buildah'
      ? ['bud', '--isolation', 'chroot', '--timestamp', epoch, '--layers=false', ...common, repoRoot]
      : ['build', ...common, repoRoot];
  if (!values['skip-build']) {
    log(`cloister: ${engine} ${buildArgs.join(' ')}`);
    const built = await runTool(bin, buildArgs, { env: { ...env, SOURCE_DATE_EPOCH: epoch }, inherit: true });
    if (built.code !== 0) throw new ToolError(`${engine} build failed (exit ${built.code})`);
  }
  const buildSeconds = Math.round((Date.now() - started) / 1000);

  // 2. What was built.
  const snapshot = values['debian-snapshot'] ?? /^ARG DEBIAN_SNAPSHOT=(\S+)$/m.exec(readFileSync(join(repoRoot, 'Dockerfile.enclave'), 'utf8'))?.[1];
  const version = (await runTool(bin, ['--version'], { env }).catch(() => ({ stdout: '' }))).stdout.trim();
  const image = {
    tag: values.tag,
    engine,
    engineVersion: version || null,
    base: nodeImage,
    // Where apt's packages came from: a plain mirror is only reproducible while it serves the same packages.
    debian: values['debian-mirror'] ? { mirror: values['debian-mirror'] } : { snapshot: snapshot ?? null },
    sourceDateEpoch: Number(epoch),
    buildSeconds,
  };
  if (engine === 'buildah') {
    const inspect = JSON.parse(await buildah(bin, ['inspect', '--type', 'image', values.tag], 'inspect'));
    image.id = `sha256:${inspect.FromImageID}`;
    image.layers = inspect.OCIv1?.rootfs?.diff_ids ?? [];
  } else {
    const r = await runTool(bin, ['image', 'inspect', '--format', '{{.Id}}', values.tag], { env });
    image.id = r.stdout.trim();
  }
  if (!/^sha256:[0-9a-f]{64}$/.test(image.id)) throw new ToolError(`${engine} did not report an image id`);
  log(`cloister: image ${values.tag} id ${image.id} (built in ${buildSeconds} s)`);
  for (const [i, l] of (image.layers ?? []).entries()) log(`cloister: layer ${i} ${l}`);

  const lockSha = sha256(readFileSync(join(repoRoot, 'package-lock.json')));
  const commit = await git(['rev-parse', 'HEAD']);
  const dirty = (await git(['status', '--porcelain', '--untracked-files=no'])) !== '';
  const measurements = {
    version: 1,
    source: { commit: commit ?? null, dirty, lockFileSha256: lockSha },
    image,
    models: { [modelName]: Buffer.from(await modelDigest(modelAbs)).toString('hex') },
  };

  let policy;
  let check;
  if (engine === 'buildah') {
    const container = await buildah(bin, ['from', '--pull-never', values.tag], 'from');
    try {
      const rootfs = await buildah(bin, ['mount', container], 'mount');
      const config = JSON.parse(await buildah(bin, ['inspect', '--type', 'container', container], 'inspect')).OCIv1?.config ?? {};
      const total = treeBytes(rootfs);
      const nodeModules = treeBytes(join(rootfs, 'opt', 'cloister', 'node_modules'));
      image.size = { rootfsBytes: total, nodeModulesBytes: nodeModules, nodeModulesShare: Number((nodeModules / total).toFixed(3)) };
      // The code digest (dist/*.js + package-lock.json, src/server/code-digest.ts) of the image's
      // /opt/cloister: with --check it must equal this checkout's, i.e. the image runs this commit's code.
      image.codeDigest = Buffer.from(await codeDigest({ packageRoot: join(rootfs, 'opt', 'cloister') })).toString('hex');
      if (values.check) {
        const local = Buffer.from(await codeDigest({ packageRoot: repoRoot })).toString('hex');
        if (local !== image.codeDigest) {
          throw new ToolError(`the image's code digest ${image.codeDigest} differs from this checkout's ${local}: the image does not run this checkout's dist/ (run \`npm run build\` and rebuild)`);
        }
        log(`cloister: the image runs this checkout's code (code digest ${local})`);
      }
      log(`cloister: image root filesystem ${mb(total)}, of which node_modules ${mb(nodeModules)} (${((100 * nodeModules) / total).toFixed(0)} %)`);
      if (eifParts.length === 4) {
        const eifPath = join(outDir, 'cloister.eif');
        const eif = await buildEifFromRootfs({
          rootfs,
          cmd: config.Cmd ?? config.Entrypoint ?? [],
          env: config.Env ?? [],
          kernel: resolve(values.kernel),
          init: resolve(values.init),
          nsm: resolve(values.nsm),
          cmdline: readFileSync(resolve(values.cmdline), 'utf8'),
          out: eifPath,
          mtime: Number(epoch),
        });
        const m = eif.measurements;
        measurements.eif = { file: basename(eifPath), sha256: eif.fileSha256, bytes: eif.bytes };
        measurements.measurements = { hashAlgorithm: 'SHA384', PCR0: m.pcr0, PCR1: m.pcr1, PCR2: m.pcr2 };
        policy = { version: 1, platforms: { nitro: { pcrs: { 0: m.pcr0, 1: m.pcr1, 2: m.pcr2 } } }, models: measurements.models };
        log(`cloister: EIF ${relative(repoRoot, eifPath)} sha256 ${eif.fileSha256}`);
        for (const k of ['pcr0', 'pcr1', 'pcr2']) log(`cloister: ${k.toUpperCase()} ${m[k]}`);
      }
      if (values.check) check = await checkSealedAnswer(bin, container, config, { log });
    } finally {
      if (!values.keep) await runTool(bin, ['rm', container]);
    }
  }

  writeFileSync(join(outDir, 'measurements.json'), JSON.stringify(measurements, null, 2) + '\n');
  if (policy !== undefined) writeFileSync(join(outDir, 'policy.json'), JSON.stringify(policy, null, 2) + '\n');
  log(`cloister: wrote ${relative(repoRoot, join(outDir, 'measurements.json'))}${policy ? ' and policy.json' : ''}`);
  if (check !== undefined) log('cloister: image check passed (sealed answer from the server started from the image)');
  return 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  buildImage(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (err) => {
      console.error(`build-image: ${err instanceof ToolError ? err.message : (err?.stack ?? err)}`);
      process.exitCode = 1;
    },
  );
}
