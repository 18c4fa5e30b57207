/** What the numbers were measured on: printed with every table and stored in every JSON. */
import os from 'node:os';

export interface MachineInfo {
  readonly cpuModel: string;
  readonly cores: number;
  readonly memoryGiB: number;
  readonly platform: string;
  readonly arch: string;
  readonly node: string;
  readonly date: string;
}

export function machineInfo(now: Date = new Date()): MachineInfo {
  const cpus = os.cpus();
  const models = [...new Set(cpus.map((c) => c.model.trim()))];
  return {
    cpuModel: models.length > 0 ? models.join(' + ') : 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    platform: `${os.type()} ${os.release()}`,
    arch: os.arch(),
    node: process.version,
    date: now.toISOString(),
  };
}

export function describeMachine(m: MachineInfo): string {
  return `${m.cpuModel}, ${m.cores} cores, ${m.memoryGiB} GiB, ${m.platform} ${m.arch}, Node ${m.node}, ${m.date}`;
}
