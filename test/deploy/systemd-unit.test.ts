/**
 * deploy/cloister.service must let the server attest on SEV-SNP and TDX (configfs-tsm) while
 * staying locked down. `systemd-analyze verify` (Debian package systemd) checks the syntax when
 * it is installed; the settings that attestation depends on are checked here either way.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/vectors.js';

const UNIT = path.join(REPO_ROOT, 'deploy', 'cloister.service');
const text = readFileSync(UNIT, 'utf8');

/** [Section] -> key -> every value (in order), comments and blank lines skipped. */
function parseUnit(src: string): Map<string, Map<string, string[]>> {
  const out = new Map<string, Map<string, string[]>>();
  let section: Map<string, string[]> | undefined;
  for (const raw of src.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const head = /^\[(.+)\]$/.exec(line);
    if (head?.[1] !== undefined) {
      section = new Map();
      out.set(head[1], section);
      continue;
    }
    const eq = line.indexOf('=');
    if (section === undefined || eq < 1) throw new Error(`not a unit line: ${line}`);
    const key = line.slice(0, eq);
    section.set(key, [...(section.get(key) ?? []), line.slice(eq + 1)]);
  }
  return out;
}

const service = parseUnit(text).get('Service') ?? new Map<string, string[]>();
const one = (k: string): string | undefined => service.get(k)?.at(-1);
const all = (k: string): string[] => (service.get(k) ?? []).flatMap((v) => v.split(/\s+/)).filter((v) => v !== '');

function haveSystemdAnalyze(): boolean {
  return spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' }).status === 0;
}

describe('deploy/cloister.service', () => {
  it.skipIf(!haveSystemdAnalyze())('systemd-analyze verify reports nothing about the unit', () => {
    const r = spawnSync('systemd-analyze', ['verify', UNIT], { encoding: 'utf8' });
    const aboutUnit = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.includes('cloister.service'));
    expect(aboutUnit).toEqual([]);
    expect(r.status).toBe(0);
  });

  it('can create configfs-tsm report entries: a static user with CAP_DAC_OVERRIDE only, the report directory writable', () => {
    expect(one('DynamicUser') ?? 'no').toBe('no');
    expect(one('User')).toBe('cloister');
    expect(all('SupplementaryGroups')).toContain('cloister-tee');
    expect(all('AmbientCapabilities')).toEqual(['CAP_DAC_OVERRIDE']);
    expect(all('CapabilityBoundingSet')).toEqual(['CAP_DAC_OVERRIDE']);
    // /sys stays read-only except the one directory the attester writes
    expect(one('ProtectKernelTunables')).toBe('yes');
    expect(all('ReadWritePaths')).toEqual(['-/sys/kernel/config/tsm/report']);
    // a user namespace would void the capability on root-owned configfs files
    expect(one('PrivateUsers')).toBe('no');
    expect(text).toMatch(/Linux 6\.7 or later: configfs-tsm/);
  });

  it('stays locked down otherwise', () => {
    expect(one('NoNewPrivileges')).toBe('yes');
    expect(one('ProtectSystem')).toBe('strict');
    expect(one('ProtectHome')).toBe('yes');
    expect(one('DevicePolicy')).toBe('closed');
    expect(service.get('DeviceAllow')).toEqual(['/dev/sev-guest rw', '/dev/tdx_guest rw']);
    expect(all('InaccessiblePaths')).toEqual(expect.arrayContaining(['-/etc/shadow', '-/root']));
    expect(one('IPAddressDeny')).toBe('any');
    const port = /--listen \S+:(\d+)/.exec(one('ExecStart') ?? '')?.[1];
    expect(one('SocketBindAllow')).toBe(`tcp:${port ?? '?'}`);
    expect(one('ExecStart')).toMatch(/--platform \$\{CLOISTER_PLATFORM\} \$CLOISTER_SERVE_ARGS$/);
  });

  it('the identity it names exists in the sysusers file, and the udev rule gives the devices to its group', () => {
    const sysusers = readFileSync(path.join(REPO_ROOT, 'deploy', 'cloister.sysusers.conf'), 'utf8');
    expect(sysusers).toMatch(/^u cloister /m);
    expect(sysusers).toMatch(/^g cloister-tee /m);
    expect(sysusers).toMatch(/^m cloister cloister-tee$/m);
    const udev = readFileSync(path.join(REPO_ROOT, 'deploy', '60-cloister-tee.rules'), 'utf8');
    expect(udev).toMatch(/KERNEL=="sev-guest", GROUP="cloister-tee", MODE="0660"/);
    expect(udev).toMatch(/KERNEL=="tdx_guest", GROUP="cloister-tee", MODE="0660"/);
  });
});

