import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { EventEmitter } from 'node:events';
import { crc32 } from 'node:zlib';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { measureEifFile } from '../../src/image/eif/measure.js';
import { modelDigest } from '../../src/inference/onnx/digest.js';

type Main = (argv: string[], opts: Record<string, unknown>) => Promise<number>;
const repoRoot = resolve(new URL('../..', import.meta.url).pathname);
const buildMod = (await import(new URL('../../scripts/build-enclave.mjs', import.meta.url).href)) as { buildEnclave: Main };
const runMod = (await import(new URL('../../scripts/run-enclave.mjs', import.meta.url).href)) as { runEnclave: Main; DEBUG_WARNING: string };

const work = mkdtempSync(join(tmpdir(), 'cloister-deploy-'));
// The model must sit inside the docker build context (the repository); build/ is ignored by git.
const modelDir = join(repoRoot, 'build', `test-model-${process.pid}`);
afterAll(() => {
  rmSync(work, { recursive: true, force: true });
  rmSync(modelDir, { recursive: true, force: true });
});

/** A minimal valid EIF (kernel, cmdline, two ramdisks), independent of the product parser. */
function eifBytes(tail = 'app'): Buffer {
  const sections = [
    [1, Buffer.from('kernel')],
    [2, Buffer.from('console=ttyS0\0')],
    [3, Buffer.from('bootstrap')],
    [3, Buffer.from(tail)],
  ] as const;
  const header = Buffer.alloc(548);
  header.write('.eif', 0, 'latin1');
  header.writeUInt16BE(4, 4);
  header.writeUInt16BE(sections.length, 26);
  let off = 548;
  const body: Buffer[] = [];
  sections.forEach(([type, data], i) => {
    header.writeBigUInt64BE(BigInt(off), 28 + 8 * i);
    header.writeBigUInt64BE(BigInt(data.length), 284 + 8 * i);
    const sh = Buffer.alloc(12);
    sh.writeUInt16BE(type, 0);
    sh.writeBigUInt64BE(BigInt(data.length), 4);
    body.push(sh, data);
    off += 12 + data.length;
  });
  let crc = crc32(header.subarray(0, 544));
  for (const b of body) crc = crc32(b, crc);
  header.writeUInt32BE(crc, 544);
  return Buffer.concat([header, ...body]);
}
const pcr = (...parts: string[]): string => {
  const inner = createHash('sha384');
  for (const p of parts) inner.update(p);
  return createHash('sha384').update(Buffer.alloc(48)).update(inner.digest()).digest('hex');
};

let bin: string;
let record: string;
const PINNED = 'node:20-bookworm-slim@sha256:' + 'ab'.repeat(32);

/** Writes a stand-in executable that appends its argv (JSON) to the record file, then runs `body`. */
function fakeTool(name: string, body: string): void {
  const file = join(bin, name);
  writeFileSync(
    file,
    `#!${process.execPath}\nconst fs = require('fs');\nconst argv = process.argv.slice(2);\n` +
      `fs.appendFileSync(${JSON.stringify(record)}, JSON.stringify([${JSON.stringify(name)}, ...argv]) + '\\n');\n${body}\n`,
  );
  chmodSync(file, 0o755);
}
const calls = (): string[][] => (existsSync(record) ? readFileSync(record, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as string[]) : []);

function fakeDocker(): void {
  fakeTool('docker', `if (argv[0] === 'image') { console.log('sha256:' + 'cd'.repeat(32)); } process.exit(0);`);
}
function fakeNitro(measurements: Record<string, string>, eif: Buffer): void {
  const eifFile = join(work, `src-${Math.random().toString(16).slice(2)}.eif`);
  writeFileSync(eifFile, eif);
  fakeTool(
    'nitro-cli',
    `const cmd = argv[0];
if (cmd === 'build-enclave') {
  const out = argv[argv.indexOf('--output-file') + 1];
  fs.copyFileSync(${JSON.stringify(eifFile)}, out);
  console.error('Start building the Enclave Image...');
  console.log('Enclave Image successfully created.');
  console.log(JSON.stringify({ Measurements: Object.assign({ HashAlgorithm: 'Sha384 { ... }' }, ${JSON.stringify(measurements)}) }, null, 2));
} else if (cmd === 'run-enclave') {
  console.log('Started enclave with enclave-cid: 16, memory: 4096 MiB, cpu-ids: [1, 3]');
  console.log(JSON.stringify({ EnclaveName: 'cloister', EnclaveID: 'i-0abc-enc0123', ProcessID: 42, EnclaveCID: Number(argv[argv.indexOf('--enclave-cid') + 1]), NumberOfCPUs: 2, CPUIDs: [1, 3], MemoryMiB: 4096 }, null, 2));
} else if (cmd === 'terminate-enclave') {
  console.log(JSON.stringify({ EnclaveID: argv[2], Terminated: true }));
} else if (cmd === 'console') {
  process.exit(0);
}`,
  );
}

beforeEach(() => {
  bin = mkdtempSync(join(work, 'bin-'));
  record = join(bin, 'calls.jsonl');
  mkdirSync(join(modelDir, 'onnx'), { recursive: true });
  writeFileSync(join(modelDir, 'config.json'), '{"model_type":"bert"}');
  writeFileSync(join(modelDir, 'onnx', 'model.onnx'), 'weights');
});

const env = (): NodeJS.ProcessEnv => ({ PATH: bin, HOME: work });
const logs: string[] = [];
const log = (s: string): void => void logs.push(s);

describe('scripts/build-enclave.mjs (stand-in docker and nitro-cli)', () => {
  const good = { PCR0: pcr('kernel', 'console=ttyS0\0', 'bootstrap', 'app'), PCR1: pcr('kernel', 'console=ttyS0\0', 'bootstrap'), PCR2: pcr('app') };

  it('builds, cross-checks the PCRs and writes measurements.json and policy.json', async () => {
    fakeDocker();
    fakeNitro(good, eifBytes());
    const out = join(work, 'out-ok');
    const code = await buildMod.buildEnclave(
      ['--model-dir', modelDir, '--model-name', 'demo', '--out', out, '--node-image', PINNED, '--source-date-epoch', '1700000000', '--tag', 'cloister:test'],
      { env: env(), log, deps: { measureEifFile, modelDigest } },
    );
    expect(code).toBe(0);
    const [build, inspect, nitro] = calls();
    expect(build?.slice(0, 7)).toEqual(['docker', 'build', '--file', join(repoRoot, 'Dockerfile.enclave'), '--tag', 'cloister:test', '--no-cache']);
    expect(build).toContain(`NODE_IMAGE=${PINNED}`);
    expect(build).toContain(`MODEL_DIR=build/test-model-${process.pid}`);
    expect(build).toContain('MODEL_NAME=demo');
    expect(build).toContain('SOURCE_DATE_EPOCH=1700000000');
    expect(build?.at(-1)).toBe(repoRoot);
    expect(inspect).toEqual(['docker', 'image', 'inspect', '--format', '{{.Id}}', 'cloister:test']);
    expect(nitro).toEqual(['nitro-cli', 'build-enclave', '--docker-uri', 'cloister:test', '--output-file', join(out, 'cloister.eif')]);
    const digest = Buffer.from(await modelDigest(modelDir)).toString('hex');
    const policy = JSON.parse(readFileSync(join(out, 'policy.json'), 'utf8')) as unknown;
    expect(policy).toEqual({ version: 1, platforms: { nitro: { pcrs: { 0: good.PCR0, 1: good.PCR1, 2: good.PCR2 } } }, models: { demo: digest } });
    const m = JSON.parse(readFileSync(join(out, 'measurements.json'), 'utf8')) as Record<string, Record<string, unknown>>;
    expect(m['measurements']).toEqual({ hashAlgorithm: 'SHA384', ...good });
    expect(m['image']?.['id']).toBe('sha256:' + 'cd'.repeat(32));
    expect(m['eif']?.['sha256']).toBe(createHash('sha256').update(eifBytes()).digest('hex'));
  });

  it('passes the signing certificate and key to nitro-cli and demands PCR8', async () => {
    fakeDocker();
    fakeNitro(good, eifBytes()); // unsigned EIF, no PCR8 reported
    await expect(
      buildMod.buildEnclave(
        ['--model-dir', modelDir, '--out', join(work, 'out-signed'), '--node-image', PINNED, '--source-date-epoch', '1', '--signing-certificate', 'c.pem', '--private-key', 'k.pem'],
        { env: env(), log, deps: { measureEifFile, modelDigest } },
      ),
    ).rejects.toThrow(/no PCR8/);
    const nitro = calls().find((c) => c[0] === 'nitro-cli');
    expect(nitro).toContain('--signing-certificate');
    expect(nitro?.[nitro.indexOf('--private-key') + 1]).toBe(resolve(repoRoot, 'k.pem'));
  });

  it('refuses to write a policy when nitro-cli and our measurement disagree', async () => {
    fakeDocker();
    fakeNitro({ ...good, PCR2: pcr('something else') }, eifBytes());
    const out = join(work, 'out-mismatch');
    await expect(
      buildMod.buildEnclave(['--model-dir', modelDir, '--out', out, '--node-image', PINNED, '--source-date-epoch', '1'], {
        env: env(),
        log,
        deps: { measureEifFile, modelDigest },
      }),
    ).rejects.toThrow(/PCR2 mismatch/);
    expect(existsSync(join(out, 'policy.json'))).toBe(false);
  });

  it('names what to install when docker/podman or nitro-cli is missing', async () => {
    const args = ['--model-dir', modelDir, '--node-image', PINNED, '--source-date-epoch', '1'];
    await expect(buildMod.buildEnclave(args, { env: env(), log })).rejects.toThrow(/neither 'docker' nor 'podman'.*install Docker/);
    fakeDocker();
    await expect(buildMod.buildEnclave(args, { env: env(), log })).rejects.toThrow(/'nitro-cli' not found.*aws-nitro-enclaves-cli/);
    expect(calls().filter((c) => c[0] === 'docker')).toEqual([]); // nothing ran before the checks
  });

  it('refuses an unpinned base image, half a signing pair, and a model outside the context', async () => {
    fakeDocker();
    fakeNitro(good, eifBytes());
    const base = ['--model-dir', modelDir, '--source-date-epoch', '1'];
    await expect(buildMod.buildEnclave([...base, '--node-image', 'node:20-bookworm-slim'], { env: env(), log })).rejects.toThrow(/unpinned/);
    await expect(buildMod.buildEnclave([...base, '--node-image', PINNED, '--private-key', 'k.pem'], { env: env(), log })).rejects.toThrow(/go together/);
    await expect(buildMod.buildEnclave(['--model-dir', work, '--node-image', PINNED, '--source-date-epoch', '1'], { env: env(), log })).rejects.toThrow(
      /inside the repository/,
    );
    expect(calls()).toEqual([]);
  });

  it('the Dockerfile default base image is pinned', async () => {
    const common = (await import(new URL('../../scripts/enclave-common.mjs', import.meta.url).href)) as {
      dockerfileDefaultNodeImage: () => string | undefined;
      isPinnedImage: (s: string | undefined) => boolean;
    };
    expect(common.isPinnedImage(common.dockerfileDefaultNodeImage())).toBe(true);
    expect(common.isPinnedImage('node:20@sha256:abc')).toBe(false);
  });
});

describe('scripts/run-enclave.mjs (stand-in nitro-cli and relay)', () => {
  function eifFile(): string {
    const f = join(work, 'run.eif');
    writeFileSync(f, eifBytes());
    return f;
  }

  it('runs the enclave, starts the relay with the matching CID, terminates on relay exit', async () => {
    fakeNitro({}, eifBytes());
    fakeTool('fake-relay', 'process.exit(0);');
    const code = await runMod.runEnclave(
      ['--eif', eifFile(), '--cpu-count', '2', '--memory', '4096', '--cid', '16', '--listen', '127.0.0.1:8443', '--relay-bin', join(bin, 'fake-relay')],
      { env: env(), log, signals: new EventEmitter() },
    );
    expect(code).toBe(0);
    const c = calls();
    expect(c[0]).toEqual(['nitro-cli', 'run-enclave', '--eif-path', join(work, 'run.eif'), '--cpu-count', '2', '--memory', '4096', '--enclave-cid', '16']);
    expect(c[1]).toEqual(['fake-relay', 'relay', '--listen', '127.0.0.1:8443', '--vsock-cid', '16', '--vsock-port', '5000']);
    expect(c[2]).toEqual(['nitro-cli', 'terminate-enclave', '--enclave-id', 'i-0abc-enc0123']);
  });

  it('--egress-allow starts the parent end of the egress bridge (socat VSOCK-LISTEN to the relay socket) and passes --egress/--allow to the relay', async () => {
    fakeNitro({}, eifBytes());
    // The relay stays up a moment so that socat has started (and recorded its argv) before terminate.
    fakeTool('fake-relay', 'setTimeout(() => process.exit(0), 500);');
    fakeTool('socat', 'setTimeout(() => process.exit(0), 10000);');
    const code = await runMod.runEnclave(
      ['--eif', eifFile(), '--cid', '16', '--listen', '127.0.0.1:8443', '--relay-bin', join(bin, 'fake-relay'), '--egress-allow', 'kms.us-east-1.amazonaws.com:443', '--egress-vsock-port', '8001', '--egress-socket', '/tmp/cloister-egress-test.sock'],
      { env: env(), log, signals: new EventEmitter() },
    );
    expect(code).toBe(0);
    const c = calls();
    expect(c).toContainEqual(['fake-relay', 'relay', '--listen', '127.0.0.1:8443', '--vsock-cid', '16', '--vsock-port', '5000', '--egress', 'unix:/tmp/cloister-egress-test.sock', '--allow', 'kms.us-east-1.amazonaws.com:443']);
    expect(c).toContainEqual(['socat', 'VSOCK-LISTEN:8001,fork,reuseaddr', 'UNIX-CONNECT:/tmp/cloister-egress-test.sock']);
  });

  it('--debug adds --debug-mode, attaches the console and warns loudly', async () => {
    fakeNitro({}, eifBytes());
    logs.length = 0;
    const code = await runMod.runEnclave(['--eif', eifFile(), '--debug', '--no-relay'], { env: env(), log, signals: new EventEmitter() });
    expect(code).toBe(0);
    expect(calls()[0]).toContain('--debug-mode');
    // What the operator is shown, read from the log itself (not from the exported constant).
    const shown = logs.join('\n');
    expect(shown).toContain(runMod.DEBUG_WARNING);
    expect(shown).toMatch(/all zeros/);
    expect(shown).toMatch(/No production policy accepts it/);
    expect(calls().some((x) => x[0] === 'nitro-cli' && x[1] === 'console' && x[3] === 'i-0abc-enc0123')).toBe(true);
  });

  it('fails clearly without nitro-cli, without the EIF, or with a reserved CID', async () => {
    await expect(runMod.runEnclave(['--eif', eifFile()], { env: env(), log })).rejects.toThrow(/'nitro-cli' not found/);
    fakeNitro({}, eifBytes());
    await expect(runMod.runEnclave(['--eif', join(work, 'nope.eif')], { env: env(), log })).rejects.toThrow(/build-enclave/);
    await expect(runMod.runEnclave(['--eif', eifFile(), '--cid', '3'], { env: env(), log })).rejects.toThrow(/reserved/);
    expect(calls()).toEqual([]);
  });
});
