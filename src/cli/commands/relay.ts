/**
 * `cloister relay`: the parent-instance relay between clients (TCP, optional TLS) and the
 * enclave (vsock through socat, or a Unix socket). Carries ciphertext only; logs counters.
 */
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { parseArgs } from 'node:util';
import { CloisterError } from '../../errors.js';
import { formatRelayMetrics, formatRelayStats, RELAY_DEFAULTS, startRelay } from '../../host/relay.js';
import type { RelayEvent, RelayListen } from '../../host/relay.js';
import { unixConnector, vsockSocatConnector } from '../../host/enclave-leg.js';
import type { EnclaveConnector } from '../../host/enclave-leg.js';
import { MAX_CLI_FILE_BYTES, readFileLimited } from './read-file.js';
import { EGRESS_DEFAULTS, startEgressRelay } from '../../host/egress.js';
import type { EgressEvent, EgressRelay } from '../../host/egress.js';

export const summary = 'relay client connections to the enclave: cloister relay --listen host:port --vsock-cid N --vsock-port P';

const HELP = `usage: cloister relay --listen <host:port | unix:path> (--vsock-cid N --vsock-port P | --unix <path>) [options]
       cloister relay --egress <unix:path | host:port> --allow host:port[,host:port...] [egress options]
       (both in one process: give both sets)

  --listen host:port        where clients connect (e.g. 0.0.0.0:8443), or unix:/path
  --vsock-cid N             enclave CID (nitro-cli run-enclave --enclave-cid)
  --vsock-port P            enclave vsock port the server's bridge listens on
  --unix path               instead of vsock: a Unix socket leading to the enclave
  --socat path              socat executable for the vsock leg (default: socat on PATH)
  --tls-cert f --tls-key f  serve TLS to clients with this PEM certificate chain and key
  --max-connections N       concurrent connections (default ${RELAY_DEFAULTS.maxConnections})
  --max-connections-per-source N  concurrent connections from one client address (default ${RELAY_DEFAULTS.maxConnectionsPerSource})
  --idle-timeout-ms N       close silent connections (default ${RELAY_DEFAULTS.idleTimeoutMs})
  --connect-timeout-ms N    enclave connect timeout (default ${RELAY_DEFAULTS.connectTimeoutMs})
  --handshake-timeout-ms N  TLS handshake timeout (default ${RELAY_DEFAULTS.handshakeTimeoutMs})
  --drain-timeout-ms N      on SIGTERM, wait this long for open connections (default ${RELAY_DEFAULTS.drainTimeoutMs})
  --metrics host:port       serve Prometheus counters at http://host:port/metrics (keep it private)
  --metrics-interval-s N    log a counters line every N seconds (default 60, 0 = off)

Egress (the enclave's outbound streams to AWS KMS or the key broker; docs/KEYS.md):
  --egress unix:path|host:port  where the enclave's streams arrive (behind
                            socat VSOCK-LISTEN:<port>,fork UNIX-CONNECT:<path>); the
                            socket is made mode 0600, a TCP host must be loopback
  --allow host:port,...     the only destinations (lower-case DNS name or IPv4); others: EGRESS_DENIED
  --egress-max-connections N      concurrent streams (default ${EGRESS_DEFAULTS.maxConnections})
  --egress-max-header-bytes N     longest header line (default ${EGRESS_DEFAULTS.maxHeaderBytes})
  --egress-header-timeout-ms N    header deadline (default ${EGRESS_DEFAULTS.headerTimeoutMs})
  --egress-connect-timeout-ms N   destination connect timeout (default ${EGRESS_DEFAULTS.connectTimeoutMs})
  --egress-idle-timeout-ms N      close silent streams (default ${EGRESS_DEFAULTS.idleTimeoutMs})

The relay sees only sealed bytes, their sizes and timing; it never logs content.`;

function int(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new CloisterError('CONFIG_INVALID', `--${name} must be a non-negative integer`);
  return Number(v);
}

export function parseHostPort(value: string, flag: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (host === undefined || !Number.isInteger(port) || port > 65535) {
    throw new CloisterError('CONFIG_INVALID', `--${flag} must be host:port (e.g. 0.0.0.0:8443)`);
  }
  return { host, port };
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      listen: { type: 'string' },
      'vsock-cid': { type: 'string' },
      'vsock-port': { type: 'string' },
      unix: { type: 'string' },
      socat: { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'max-connections': { type: 'string' },
      'max-connections-per-source': { type: 'string' },
      'idle-timeout-ms': { type: 'string' },
      'connect-timeout-ms': { type: 'string' },
      'handshake-timeout-ms': { type: 'string' },
      'drain-timeout-ms': { type: 'string' },
      metrics: { type: 'string' },
      'metrics-interval-s': { type: 'string' },
      egress: { type: 'string' },
      allow: { type: 'string' },
      'egress-max-connections': { type: 'string' },
      'egress-max-header-bytes': { type: 'string' },
      'egress-header-timeout-ms': { type: 'string' },
      'egress-connect-timeout-ms': { type: 'string' },
      'egress-idle-timeout-ms': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (values.listen === undefined && values.egress === undefined) {
    console.error(HELP);
    return 2;
  }
  if (values.listen === undefined) return waitAndStop(await startEgress(values));
  const listen: RelayListen = values.listen.startsWith('unix:') ? { path: values.listen.slice(5) } : parseHostPort(values.listen, 'listen');

  const cid = int('vsock-cid', values['vsock-cid']);
  const vport = int('vsock-port', values['vsock-port']);
  let enclave: EnclaveConnector;
  if (values.unix !== undefined) {
    if (cid !== undefined || vport !== undefined) throw new CloisterError('CONFIG_INVALID', 'give either --unix or --vsock-cid/--vsock-port, not both');
    enclave = unixConnector(values.unix);
  } else if (cid !== undefined && vport !== undefined) {
    enclave = vsockSocatConnector(values.socat === undefined ? { cid, port: vport } : { cid, port: vport, socatPath: values.socat });
  } else {
    throw new CloisterError('CONFIG_INVALID', 'give --vsock-cid and --vsock-port, or --unix');
  }
  const certFile = values['tls-cert'];
  const keyFile = values['tls-key'];
  if ((certFile === undefined) !== (keyFile === undefined)) throw new CloisterError('CONFIG_INVALID', '--tls-cert and --tls-key go together');

  const limits: Record<string, number> = {};
  for (const [flag, key] of [
    ['max-connections', 'maxConnections'],
    ['max-connections-per-source', 'maxConnectionsPerSource'],
    ['idle-timeout-ms', 'idleTimeoutMs'],
    ['connect-timeout-ms', 'connectTimeoutMs'],
    ['handshake-timeout-ms', 'handshakeTimeoutMs'],
    ['drain-timeout-ms', 'drainTimeoutMs'],
  ] as const) {
    const v = int(flag, values[flag]);
    if (v !== undefined) limits[key] = v;
  }

  const log = (event: RelayEvent): void => {
    // Per-connection 'closed' events are too chatty for a log; the counters cover them.
    if (event.type !== 'closed') console.error(`cloister relay: ${JSON.stringify(event)}`);
  };
  const egress = await startEgress(values);
  const relay = await startRelay({
    listen,
    enclave,
    ...(certFile !== undefined && keyFile !== undefined ? { tls: { cert: Buffer.from(await readFileLimited(certFile, MAX_CLI_FILE_BYTES, 'TLS certificate')), key: Buffer.from(await readFileLimited(keyFile, MAX_CLI_FILE_BYTES, 'TLS key')) } } : {}),
    ...limits,
    onEvent: log,
  }).catch(async (err: unknown) => {
    await egress?.close();
    throw err;
  });
  console.error(`cloister relay: ${relay.address()} -> ${enclave.description}${certFile !== undefined ? ' (TLS)' : ''}`);

  let metricsServer: Server | undefined;
  if (values.metrics !== undefined) {
    const m = parseHostPort(values.metrics, 'metrics');
    metricsServer = createServer((req, res) => {
      if (req.method === 'GET' && req.url === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(formatRelayMetrics(relay.stats()));
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((r) => metricsServer?.listen(m.port, m.host, r));
  }
  const intervalS = int('metrics-interval-s', values['metrics-interval-s']) ?? 60;
  const ticker = intervalS > 0 ? setInterval(() => console.error(`cloister ${formatRelayStats(relay.stats())}`), intervalS * 1000) : undefined;
  ticker?.unref();

  return new Promise<number>((resolve) => {
    const stop = (signal: string): void => {
      console.error(`cloister relay: ${signal}: draining`);
      if (ticker !== undefined) clearInterval(ticker);
      metricsServer?.close();
      void Promise.all([relay.close(), egress?.close()]).then(() => {
        console.error(`cloister ${formatRelayStats(relay.stats())}`);
        resolve(0);
      });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

type Values = Record<string, string | boolean | undefined>;

/** --egress and its options: the enclave's allow-listed outbound streams; undefined without --egress. */
async function startEgress(values: Values): Promise<EgressRelay | undefined> {
  const str = (k: string): string | undefined => (typeof values[k] === 'string' ? values[k] : undefined);
  const at = str('egress');
  const allow = str('allow');
  const egressFlags = ['egress-max-connections', 'egress-max-header-bytes', 'egress-header-timeout-ms', 'egress-connect-timeout-ms', 'egress-idle-timeout-ms'];
  if (at === undefined) {
    const stray = ['allow', ...egressFlags].find((f) => values[f] !== undefined);
    if (stray !== undefined) throw new CloisterError('CONFIG_INVALID', `--${stray} needs --egress`);
    return undefined;
  }
  if (allow === undefined || allow === '') throw new CloisterError('CONFIG_INVALID', '--egress needs --allow host:port[,host:port...]');
  const limits: Record<string, number> = {};
  for (const [flag, key] of [
    ['egress-max-connections', 'maxConnections'],
    ['egress-max-header-bytes', 'maxHeaderBytes'],
    ['egress-header-timeout-ms', 'headerTimeoutMs'],
    ['egress-connect-timeout-ms', 'connectTimeoutMs'],
    ['egress-idle-timeout-ms', 'idleTimeoutMs'],
  ] as const) {
    const v = int(flag, str(flag));
    if (v !== undefined) limits[key] = v;
  }
  const log = (event: EgressEvent): void => {
    if (event.type !== 'egress-opened') console.error(`cloister relay: ${JSON.stringify(event)}`);
  };
  const egress = await startEgressRelay({ listen: at.startsWith('unix:') ? { path: at.slice(5) } : parseHostPort(at, 'egress'), allow: allow.split(','), ...limits, onEvent: log });
  console.error(`cloister relay: egress ${egress.address()} -> ${egress.allowed().join(', ')}`);
  return egress;
}

function waitAndStop(egress: EgressRelay | undefined): Promise<number> {
  return new Promise<number>((resolve) => {
    const stop = (signal: string): void => {
      console.error(`cloister relay: ${signal}: draining`);
      void (egress?.close() ?? Promise.resolve()).then(() => resolve(0));
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
