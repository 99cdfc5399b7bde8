/** `invad doctor`: what loaded and what the machine offers, each problem with its fix. */
import { cpus } from 'node:os';
import { Command } from 'commander';
import { addonSource, loadAddon } from '../../../binding';
import { packageVersion } from '../../package-info';

export async function doctorReport(): Promise<Record<string, unknown>> {
  const report: Record<string, unknown> = {
    invad: packageVersion(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cpu: { model: cpus()[0]?.model ?? 'unknown', cores: cpus().length },
  };
  try {
    const addon = loadAddon();
    report.addon = { ...addon.buildInfo(), source: addonSource() };
    report.cuda = addon.cudaStatus();
  } catch (err) {
    report.addon = { error: (err as Error).message };
  }
  try {
    const ort = await import('onnxruntime-node');
    report.onnxruntime = { version: ort.env.versions.node ?? ort.env.versions.common, backends: ort.listSupportedBackends?.() ?? [] };
  } catch (err) {
    report.onnxruntime = { error: (err as Error).message };
  }
  return report;
}

export function doctorCommand(): Command {
  return new Command('doctor')
    .description('Print the addon build (prebuild or local, CUDA or not), the GPU status and the ONNX Runtime version and backends')
    .action(async () => {
      process.stdout.write(JSON.stringify(await doctorReport(), null, 2) + '\n');
    });
}
