/**
 * Helpers shared by build-enclave.mjs and run-enclave.mjs: finding tools on PATH, running
 * them with argv arrays (never a shell), and parsing nitro-cli's JSON output.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { delimiter, join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export class ToolError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ToolError';
  }
}

/** The absolute path of an executable on PATH, or undefined. */
export function which(name, env = process.env) {
  if (name.includes('/')) {
    try {
      accessSync(name, constants.X_OK);
      return name;
    } catch {
      return undefined;
    }
  }
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

export const INSTALL_HINTS = {
  docker: 'install Docker Engine (https://docs.docker.com/engine/install/) or Podman, or pass --engine',
  'nitro-cli':
    'install the AWS Nitro Enclaves CLI on the parent instance (Amazon Linux 2023: `sudo dnf install aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel`; see https://docs.aws.amazon.com/enclaves/latest/user/nitro-enclave-cli-install.html)',
};

export function requireTool(name, hint, env = process.env) {
  const p = which(name, env);
  if (p === undefined) throw new ToolError(`'${name}' not found on PATH: ${hint}`);
  return p;
}

/** Runs a command (argv array, no shell); resolves { code, stdout, stderr }. */
export function runTool(cmd, args, { env = process.env, cwd = repoRoot, inherit = false } = {}) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { env, cwd, stdio: ['ignore', 'pipe', inherit ? 'inherit' : 'pipe'], shell: false });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
      if (stdout.length > 16 * 1024 * 1024) child.kill('SIGKILL');
    });
    child.stderr?.on('data', (d) => {
      stderr += d;
      if (stderr.length > 16 * 1024 * 1024) child.kill('SIGKILL');
    });
    child.on('error', (err) => reject(new ToolError(`could not run ${cmd}: ${err.message}`)));
    child.on('close', (code) => resolvePromise({ code: code ?? 1, stdout, stderr }));
  });
}

/** Extracts the JSON object nitro-cli prints after its progress lines. */
export function parseNitroJson(stdout, what) {
  const start = stdout.search(/^\{/m);
  if (start < 0) throw new ToolError(`nitro-cli ${what}: no JSON in its output`);
  try {
    return JSON.parse(stdout.slice(start));
  } catch (err) {
    throw new ToolError(`nitro-cli ${what}: output is not valid JSON (${err.message})`);
  }
}

const HEX96 = /^[0-9a-f]{96}$/;

/** Parses `nitro-cli build-enclave` / `describe-eif` measurements: { PCR0, PCR1, PCR2, PCR8? }. */
export function parseNitroMeasurements(obj) {
  const m = obj?.Measurements;
  if (m === null || typeof m !== 'object') throw new ToolError('nitro-cli output has no Measurements');
  if (typeof m.HashAlgorithm !== 'string' || !/^Sha384\b/.test(m.HashAlgorithm)) {
    throw new ToolError(`unexpected HashAlgorithm ${JSON.stringify(m.HashAlgorithm)} (expected Sha384)`);
  }
  const out = {};
  for (const k of ['PCR0', 'PCR1', 'PCR2', 'PCR8']) {
    if (m[k] === undefined) continue;
    if (typeof m[k] !== 'string' || !HEX96.test(m[k].toLowerCase())) throw new ToolError(`nitro-cli ${k} is not 96 hex characters`);
    out[k] = m[k].toLowerCase();
  }
  for (const k of ['PCR0', 'PCR1', 'PCR2']) if (out[k] === undefined) throw new ToolError(`nitro-cli output lacks ${k}`);
  return out;
}

/** The NODE_IMAGE default declared in Dockerfile.enclave. */
export function dockerfileDefaultNodeImage(dockerfile = join(repoRoot, 'Dockerfile.enclave')) {
  const m = /^ARG NODE_IMAGE=(\S+)$/m.exec(readFileSync(dockerfile, 'utf8'));
  return m?.[1];
}

/** True when an image reference is pinned by a sha256 digest. */
export function isPinnedImage(ref) {
  return typeof ref === 'string' && /^[^\s@]+@sha256:[0-9a-f]{64}$/.test(ref);
}
