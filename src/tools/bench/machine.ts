/**
 * What a benchmark ran on, and how busy the machine was meanwhile: on a shared
 * machine the other processes' CPU time is part of what a number means.
 */
import { readFileSync, readdirSync } from 'node:fs';
import * as os from 'node:os';
import { performance } from 'node:perf_hooks';
import * as ort from 'onnxruntime-node';
import { addonSource, loadAddon } from '../../binding';
import type { AddonBuildInfo } from '../../binding/addon-types';
import { packageVersion } from '../../util/package-info';

export interface MachineInfo {
  cpuModel: string;
  /** logical CPUs the OS reports */
  cores: number;
  availableParallelism: number;
  platform: string;
  arch: string;
  kernel: string;
  memoryGiB: number;
  node: string;
  invad: string;
  onnxruntime: string;
  /** the execution providers this onnxruntime-node build offers */
  ortBackends: string[];
  addon: AddonBuildInfo & { source: string };
  /** 1/5/15 min load averages when the benchmark started */
  loadAverage: number[];
}

function ortBackends(): string[] {
  const list = (ort as unknown as { listSupportedBackends?: () => Array<{ name: string; bundled: boolean }> }).listSupportedBackends;
  return list ? list().map((b) => (b.bundled ? b.name : `${b.name} (not bundled)`)) : [];
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  const addon = loadAddon().buildInfo();
  const src = addonSource();
  return {
    cpuModel: cpus[0]?.model?.trim() || 'unknown',
    cores: cpus.length,
    availableParallelism: os.availableParallelism(),
    platform: os.platform(),
    arch: os.arch(),
    kernel: os.release(),
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.versions.node,
    invad: packageVersion(),
    onnxruntime: ort.env.versions?.node ?? ort.env.versions?.common ?? 'unknown',
    ortBackends: ortBackends(),
    addon: { ...addon, source: `${src.kind}: ${src.path}` },
    loadAverage: os.loadavg().map((v) => Math.round(v * 100) / 100),
  };
}

/** One line: "AMD EPYC, 2 cores, Linux 6.1, Node 20.19, ORT 1.30.0, addon 0.1.0 (GNU 12.2.0, 2 threads)". */
export function machineLine(m: MachineInfo): string {
  return `${m.cpuModel}, ${m.cores} cores, ${m.platform} ${m.kernel}, ${m.memoryGiB} GiB, Node ${m.node}, onnxruntime-node ${m.onnxruntime}, addon ${m.addon.version} (${m.addon.compiler}, ${m.addon.threads} threads${m.addon.cuda ? ', CUDA' : ''})`;
}

// ------------------------------------------------------------------ CPU load

interface CpuSnapshot {
  at: number;
  /** machine-wide jiffies: busy (user+nice+system+irq+softirq), steal, total */
  busy: number;
  steal: number;
  total: number;
  /** this process (every thread, the engine worker included), microseconds */
  self: NodeJS.CpuUsage;
  /** child processes we measure (e.g. the PyTorch server), jiffies */
  children: number;
}

const TICKS_PER_S = 100; // USER_HZ on Linux

function procStat(): { busy: number; steal: number; total: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0];
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, idle, iowait, irq, softirq, steal] = v;
    // guest time is already counted in user
    const busy = user + nice + system + irq + softirq;
    return { busy, steal: steal ?? 0, total: busy + idle + iowait + (steal ?? 0) };
  } catch {
    return undefined;
  }
}

function pidJiffies(pid: number): number {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]); // utime, stime
  } catch {
    return 0;
  }
}

export interface CpuLoad {
  wallMs: number;
  /** fraction of all cores busy, whoever ran */
  machineBusy: number;
  /** fraction of all cores used by this benchmark (this process and its measured children) */
  benchmark: number;
  /** fraction of all cores used by everything else: the noise this run competed with */
  others: number;
  /** fraction of time the hypervisor took away */
  steal: number;
  loadAverage: number[];
}

/** Measures machine-wide and own CPU time between start and stop (Linux /proc; zeros elsewhere). */
export class CpuMonitor {
  private start: CpuSnapshot;

  constructor(private readonly childPids: () => number[] = () => []) {
    this.start = this.snap();
  }

  private snap(): CpuSnapshot {
    const st = procStat() ?? { busy: 0, steal: 0, total: 0 };
    return { at: performance.now(), ...st, self: process.cpuUsage(), children: this.childPids().reduce((a, p) => a + pidJiffies(p), 0) };
  }

  reset(): void {
    this.start = this.snap();
  }

  read(): CpuLoad {
    const a = this.start;
    const b = this.snap();
    const cores = os.cpus().length;
    const wallMs = b.at - a.at;
    const total = b.total - a.total;
    const selfS = (b.self.user - a.self.user + b.self.system - a.self.system) / 1e6;
    const childS = (b.children - a.children) / TICKS_PER_S;
    const capacityS = (wallMs / 1000) * cores;
    const round = (v: number) => Math.round(Math.min(1, Math.max(0, v)) * 1000) / 1000;
    const machineBusy = total > 0 ? (b.busy - a.busy) / total : NaN;
    const benchmark = capacityS > 0 ? (selfS + childS) / capacityS : NaN;
    return {
      wallMs,
      machineBusy: round(machineBusy),
      benchmark: round(benchmark),
      others: round(machineBusy - benchmark),
      steal: total > 0 ? round((b.steal - a.steal) / total) : 0,
      loadAverage: os.loadavg().map((v) => Math.round(v * 100) / 100),
    };
  }
}

/** Open file descriptors of this process (Linux /proc/self/fd), or null where unavailable. */
export function openFdCount(): number | null {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return null;
  }
}

/** Active libuv handles and requests by type (process.getActiveResourcesInfo()). */
export function activeResources(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1;
  return out;
}

export function rssMiB(): number {
  return process.memoryUsage.rss() / 2 ** 20;
}

/** Peak resident set size of the whole process (main thread, engine worker, native allocations), MiB. */
export function peakRssMiB(): number {
  return process.resourceUsage().maxRSS / 1024;
}
