#!/usr/bin/env node
/**
 * Run the enclave and the parent-side relay.
 *
 *   node scripts/run-enclave.mjs [--eif build/enclave/cloister.eif] [--cpu-count 2]
 *        [--memory 4096] [--cid 16] [--vsock-port 5000] [--listen 0.0.0.0:8443]
 *        [--tls-cert f --tls-key f] [--no-relay] [--debug]
 *        [--egress-allow host:port,... [--egress-vsock-port 8000] [--egress-socket path]]
 *
 * nitro-cli run-enclave starts the EIF; then `cloister relay` forwards TCP clients to
 * vsock <cid>:<vsock-port>. On SIGINT/SIGTERM (or when the relay exits) the enclave is
 * terminated. --debug starts the enclave in debug mode with its console attached: its PCRs
 * read as all zeros, and no production policy accepts it.
 * --egress-allow opens the enclave's way out (AWS KMS, the key broker; docs/KEYS.md): socat
 * VSOCK-LISTEN:<egress-vsock-port> -> the Unix socket of `cloister relay --egress`, which
 * connects only to the allowed host:port list. The image must start its end of the bridge
 * (CLOISTER_EGRESS_VSOCK_PORT, enclave/entrypoint.sh).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { INSTALL_HINTS, ToolError, parseNitroJson, repoRoot, requireTool, runTool } from './enclave-common.mjs';

export const DEBUG_WARNING = [
  '',
  '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!',
  '!!  DEBUG MODE: this enclave is NOT confidential.                            !!',
  '!!  The parent instance can read its console, and its attestation documents   !!',
  '!!  report PCR0, PCR1 and PCR2 as all zeros. No production policy accepts it: !!',
  '!!  clients will (correctly) refuse to talk to it. Never send real data here. !!',
  '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!',
  '',
].join('\n');

function positive(name, v) {
  if (!/^\d+$/.test(v) || Number(v) <= 0) throw new ToolError(`--${name} must be a positive integer`);
  return v;
}

export async function runEnclave(argv, { env = process.env, log = (s) => console.error(s), signals = process } = {}) {
  const { values } = parseArgs({
    args: argv,
    options: {
      eif: { type: 'string', default: 'build/enclave/cloister.eif' },
      'cpu-count': { type: 'string', default: '2' },
      memory: { type: 'string', default: '4096' },
      cid: { type: 'string', default: '16' },
      'vsock-port': { type: 'string', default: '5000' },
      listen: { type: 'string', default: '0.0.0.0:8443' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'relay-bin': { type: 'string' },
      'no-relay': { type: 'boolean', default: false },
      debug: { type: 'boolean', default: false },
      'egress-allow': { type: 'string' },
      'egress-vsock-port': { type: 'string', default: '8000' },
      'egress-socket': { type: 'string', default: '/run/cloister/egress.sock' },
    },
    strict: true,
  });
  const nitroCli = requireTool('nitro-cli', INSTALL_HINTS['nitro-cli'], env);
  const eif = resolve(repoRoot, values.eif);
  if (!existsSync(eif)) throw new ToolError(`EIF ${values.eif} not found: run \`npm run build-enclave\` first`);
  const cid = positive('cid', values.cid);
  if (Number(cid) < 4) throw new ToolError('--cid must be at least 4 (0..3 are reserved)');
  const args = [
    'run-enclave',
    '--eif-path', eif,
    '--cpu-count', positive('cpu-count', values['cpu-count']),
    '--memory', positive('memory', values.memory),
    '--enclave-cid', cid,
  ];
  if (values.debug) {
    args.push('--debug-mode');
    log(DEBUG_WARNING);
  }
  const started = await runTool(nitroCli, args, { env, inherit: true });
  if (started.code !== 0) throw new ToolError(`nitro-cli run-enclave failed (exit ${started.code})`);
  const info = parseNitroJson(started.stdout, 'run-enclave');
  const enclaveId = info?.EnclaveID;
  if (typeof enclaveId !== 'string' || enclaveId === '') throw new ToolError('nitro-cli run-enclave returned no EnclaveID');
  if (String(info.EnclaveCID) !== cid) throw new ToolError(`enclave came up with CID ${info.EnclaveCID}, expected ${cid}`);
  log(`cloister: enclave ${enclaveId} running (cid ${cid})`);

  const children = [];
  if (values.debug) {
    children.push(spawn(nitroCli, ['console', '--enclave-id', enclaveId], { env, stdio: ['ignore', 'inherit', 'inherit'] }));
  }
  const relayArgs = ['relay', '--listen', values.listen, '--vsock-cid', cid, '--vsock-port', positive('vsock-port', values['vsock-port'])];
  if (values['tls-cert'] !== undefined) relayArgs.push('--tls-cert', values['tls-cert']);
  if (values['tls-key'] !== undefined) relayArgs.push('--tls-key', values['tls-key']);
  const egressAllow = values['egress-allow'];
  if (egressAllow !== undefined) relayArgs.push('--egress', `unix:${values['egress-socket']}`, '--allow', egressAllow);
  const [relayCmd, ...relayPrefix] =
    values['relay-bin'] !== undefined ? [values['relay-bin']] : [process.execPath, join(repoRoot, 'dist', 'cli', 'main.js')];
  if (values['no-relay']) {
    log(`cloister: start the relay with: ${[relayCmd, ...relayPrefix, ...relayArgs].join(' ')}`);
    // In debug mode stay attached to the console until it closes.
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r() : (c.once('exit', r), c.once('error', r))))));
    return 0;
  }

  const terminate = async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    const t = await runTool(nitroCli, ['terminate-enclave', '--enclave-id', enclaveId], { env });
    log(t.code === 0 ? `cloister: enclave ${enclaveId} terminated` : `cloister: terminate-enclave failed (exit ${t.code})`);
  };
  const relay = spawn(relayCmd, [...relayPrefix, ...relayArgs], { env, stdio: ['ignore', 'inherit', 'inherit'] });
  children.push(relay);
  if (egressAllow !== undefined) {
    // The parent end of the egress bridge: each vsock connection from the enclave to the relay's socket.
    const socat = requireTool('socat', 'install socat (with VSOCK support, Debian/Ubuntu >= 1.7.4)', env);
    const port = positive('egress-vsock-port', values['egress-vsock-port']);
    children.push(spawn(socat, [`VSOCK-LISTEN:${port},fork,reuseaddr`, `UNIX-CONNECT:${values['egress-socket']}`], { env, stdio: ['ignore', 'inherit', 'inherit'] }));
    log(`cloister: egress vsock port ${port} -> ${egressAllow}`);
  }
  const onSignal = () => {
    if (relay.exitCode === null) relay.kill('SIGTERM'); // the relay drains, then exits
  };
  signals.once('SIGINT', onSignal);
  signals.once('SIGTERM', onSignal);
  const code = await new Promise((r) => {
    relay.once('error', (err) => {
      log(`cloister: relay failed to start: ${err.message}`);
      r(1);
    });
    relay.once('exit', (c) => r(c ?? 1));
  });
  signals.off?.('SIGINT', onSignal);
  signals.off?.('SIGTERM', onSignal);
  await terminate();
  return code;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  runEnclave(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (err) => {
      console.error(`run-enclave: ${err instanceof ToolError ? err.message : err?.stack ?? err}`);
      process.exitCode = 1;
    },
  );
}
