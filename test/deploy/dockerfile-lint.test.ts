/**
 * CI cannot run docker, so Dockerfile.enclave is linted as text: pinned bases, CMD present,
 * non-root USER, no remote ADD, no secrets passed in, production-only install from the lock
 * file, and the socket / vsock settings consistent with enclave/entrypoint.sh.
 */
import { readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = resolve(new URL('../..', import.meta.url).pathname);
const text = readFileSync(resolve(root, 'Dockerfile.enclave'), 'utf8');
// Join continuation lines, drop comments and blanks.
const lines = text
  .replace(/\\\n/g, ' ')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l !== '' && !l.startsWith('#'));
const instr = (name: string): string[] => lines.filter((l) => l.toUpperCase().startsWith(`${name} `));
// ARG name -> its first declared default (later bare `ARG X` re-declarations inherit it).
const args = new Map<string, string | undefined>();
for (const l of instr('ARG')) {
  const m = /^ARG\s+([A-Z_]+)(?:=(\S+))?/i.exec(l);
  if (m?.[1] !== undefined && args.get(m[1]) === undefined) args.set(m[1], m[2]);
}
const PINNED = /^[^\s@]+@sha256:[0-9a-f]{64}$/;

describe('Dockerfile.enclave lint', () => {
  it('every FROM is a digest-pinned image or an ARG that defaults to one, or an earlier stage', () => {
    const stages: string[] = [];
    const froms = instr('FROM');
    expect(froms.length).toBeGreaterThanOrEqual(2); // multi-stage
    for (const f of froms) {
      const m = /^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(f);
      expect(m, f).not.toBeNull();
      const ref = m?.[1] ?? '';
      const arg = /^\$\{?([A-Z_]+)\}?$/.exec(ref)?.[1];
      const resolved = arg !== undefined ? args.get(arg) : ref;
      if (!stages.includes(ref)) expect(resolved, `FROM ${ref}`).toMatch(PINNED);
      if (m?.[2] !== undefined) stages.push(m[2]);
    }
  });

  it('has a CMD in exec form and no ENTRYPOINT', () => {
    const cmd = instr('CMD');
    expect(cmd).toHaveLength(1);
    const json = JSON.parse(cmd[0]?.slice(4) ?? '') as string[];
    expect(Array.isArray(json)).toBe(true);
    expect(instr('ENTRYPOINT')).toHaveLength(0);
    expect(json[0]).toBe('/opt/cloister/enclave/entrypoint.sh');
    expect(json.slice(1, 3)).toEqual(['/bin/sh', '-c']);
    const line = json[3] ?? '';
    expect(json).toHaveLength(4);
    expect(line).toMatch(/^exec node \/opt\/cloister\/dist\/cli\/main\.js serve /);
    expect(line).toContain('--socket "$CLOISTER_SOCKET"');
    expect(line).toContain('--model "$CLOISTER_MODEL"');
    expect(line).toContain('--state-dir "$CLOISTER_STATE_DIR"');
    expect(line).toMatch(/--platform "\$CLOISTER_PLATFORM"$/);
    // An enclave image attests with the NSM unless the operator says otherwise.
    expect(text).toMatch(/CLOISTER_PLATFORM=nitro\b/);
    expect(text).toMatch(/CLOISTER_STATE_DIR=\/run\/cloister\b/);
  });

  it('the server socket and model in CMD come from the image environment', () => {
    expect(text).toMatch(/CLOISTER_SOCKET=\/run\/cloister\/cloister\.sock/);
    expect(text).toMatch(/CLOISTER_VSOCK_PORT=\d+/);
    expect(text).toContain('CLOISTER_MODEL=/opt/cloister/models/${MODEL_NAME}');
    expect(text).toMatch(/COPY \$\{MODEL_DIR\} \.\/models\/\$\{MODEL_NAME\}/);
  });

  it('runs as a non-root USER, set after the last FROM', () => {
    const lastFrom = lines.map((l) => l.toUpperCase().startsWith('FROM ')).lastIndexOf(true);
    const users = lines.slice(lastFrom).filter((l) => l.toUpperCase().startsWith('USER '));
    expect(users.length).toBeGreaterThanOrEqual(1);
    const user = users.at(-1)?.slice(5).trim().split(':')[0];
    expect(['root', '0', '']).not.toContain(user);
  });

  it('does not ADD remote URLs or archives, and does not curl/wget', () => {
    for (const a of instr('ADD')) expect(a).not.toMatch(/https?:|git@|\.tar/);
    expect(instr('ADD')).toHaveLength(0);
    expect(text).not.toMatch(/\b(curl|wget)\b/);
  });

  it('passes no secrets as ARG/ENV and copies none', () => {
    for (const l of [...instr('ARG'), ...instr('ENV')]) expect(l).not.toMatch(/(SECRET|TOKEN|PASSWORD|API_KEY|AWS_ACCESS|PRIVATE)/i);
    for (const l of [...instr('COPY'), ...instr('ADD')]) expect(l).not.toMatch(/\.pem|\.key\b|\.env|id_rsa|credentials/);
    // The .npmrc that is copied must not hold registry credentials.
    expect(readFileSync(resolve(root, '.npmrc'), 'utf8')).not.toMatch(/_auth|_password|token/i);
  });

  it('installs production dependencies from the lock file, without scripts, in the runtime stage', () => {
    const lastFrom = lines.map((l) => l.toUpperCase().startsWith('FROM ')).lastIndexOf(true);
    const runtime = lines.slice(lastFrom).join('\n');
    expect(runtime).toMatch(/npm ci --omit=dev --ignore-scripts/);
    expect(runtime).not.toMatch(/npm install/);
    expect(runtime).toMatch(/COPY package\.json package-lock\.json/);
    expect(text).toMatch(/node scripts\/build-native\.mjs --required/);
  });

  it('takes SOURCE_DATE_EPOCH, MODEL_DIR and a fixed Debian snapshot as build arguments', () => {
    expect(args.has('SOURCE_DATE_EPOCH')).toBe(true);
    expect(args.get('MODEL_DIR')).toBe('models/demo/classifier');
    expect(args.get('MODEL_NAME')).toBe('classifier');
    expect(args.get('DEBIAN_SNAPSHOT')).toMatch(/^\d{8}T\d{6}Z$/);
    expect(text).toMatch(/snapshot\.debian\.org\/archive\/debian\/\$\{DEBIAN_SNAPSHOT\}/);
  });

  it('the Debian source is a build argument, snapshot.debian.org by default', () => {
    expect(args.has('DEBIAN_MIRROR')).toBe(true);
    expect(args.get('DEBIAN_MIRROR')).toBeUndefined(); // empty: the snapshot
    const sources = lines.filter((l) => l.includes('/etc/apt/sources.list'));
    expect(sources.length).toBe(2);
    for (const l of sources) expect(l).toContain('${DEBIAN_MIRROR:-http://snapshot.debian.org/archive/debian/${DEBIAN_SNAPSHOT}}');
  });

  it('node-gyp uses the base image headers, and the build CA is a secret mount only', () => {
    expect(text).toMatch(/^ENV npm_config_nodedir=\/usr\/local$/m);
    const npmRuns = instr('RUN').filter((l) => /npm[^ ]* ci /.test(l) || l.includes('npm ci '));
    expect(npmRuns).toHaveLength(2);
    for (const l of npmRuns) {
      expect(l).toMatch(/^RUN --mount=type=secret,id=build_ca /);
      // npm 10.8 can exit 0 with an incomplete tree: npm ls must check it.
      expect(l).toMatch(/npm ci [^&]*&& npm ls /);
    }
    for (const l of [...instr('ENV'), ...instr('ARG'), ...instr('COPY')]) expect(l).not.toMatch(/NODE_EXTRA_CA_CERTS|build_ca|\.crt\b/);
  });

  it('the runtime stage keeps only this platform\'s binaries and no build tools', () => {
    const lastFrom = lines.map((l) => l.toUpperCase().startsWith('FROM ')).lastIndexOf(true);
    const runtime = lines.slice(lastFrom).join('\n');
    expect(runtime).not.toMatch(/\b(python3|g\+\+|make|build-essential|node-gyp)\b/);
    expect(runtime).toContain('rm -rf node_modules/onnxruntime-web');
    expect(runtime).toMatch(/find node_modules\/onnxruntime-node\/bin .*! -path "\*\/linux"/);
    expect(runtime).toMatch(/rm -rf \/usr\/local\/include \/usr\/local\/lib\/node_modules/);
    // apt's binary caches differ from build to build: deleted in the same RUN.
    expect(runtime).toContain('/var/cache/apt/*.bin');
  });

  it('.dockerignore keeps secrets and local state out of the context', () => {
    const ignore = readFileSync(resolve(root, '.dockerignore'), 'utf8');
    expect(ignore).toMatch(/^\*\*$/m); // deny by default
    for (const p of ['**/*.pem', '**/*.key', '**/.env']) expect(ignore).toContain(p);
  });

  it('the entrypoint is executable, POSIX sh, and bridges vsock to the socket with socat', () => {
    const ep = resolve(root, 'enclave', 'entrypoint.sh');
    expect(statSync(ep).mode & 0o111).not.toBe(0);
    const sh = readFileSync(ep, 'utf8');
    expect(sh.startsWith('#!/bin/sh\n')).toBe(true);
    expect(sh).toContain('socat "VSOCK-LISTEN:${VSOCK_PORT},fork,reuseaddr" "UNIX-CONNECT:${SOCK}"');
    expect(sh).toMatch(/setpriv .*--no-new-privs/);
  });
});
