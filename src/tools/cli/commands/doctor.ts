/** `invad doctor`: what loaded and what the machine offers, each problem with its fix. */
import { cpus } from 'node:os';
import { Command } from 'commander';
import { addonSource, loadAddon } from '../../../binding';
import { packageVersion } from '../../../util/package-info';
import { defaultEngine } from '../../../runtime/detector';
import { ortLibraryPath } from '../../../runtime/engine/ort-library';

/** "12.4" from cudaDriverGetVersion's 12040. */
function cudaVersion(v: number): string | null {
  return v > 0 ? `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}` : null;
}

/**
 * The native engine's view: the libonnxruntime it loads, its version through
 * the C API, and whether the CUDA and TensorRT providers can be appended to
 * session options (which loads their libraries).
 */
function nativeEngineReport(addon: ReturnType<typeof loadAddon>): Record<string, unknown> {
  const library = ortLibraryPath();
  const out: Record<string, unknown> = { ortLibrary: library };
  try {
    out.defaultEngine = defaultEngine(['cpu']);
    const probe = addon.ortProbe(library);
    out.ortVersion = probe.version;
    out.apiVersion = probe.apiVersion;
    out.compiledInProviders = probe.availableProviders;
    out.providers = Object.fromEntries(probe.providers.map((p) => [p.name, p.ok ? 'loads' : `cannot load: ${p.error ?? 'unknown error'}`]));
  } catch (err) {
    out.error = (err as Error).message;
    out.fix = 'reinstall onnxruntime-node (1.30 or newer), or set INVAD_ORT_LIBRARY to a libonnxruntime of that version';
  }
  return out;
}

export async function doctorReport(): Promise<Record<string, unknown>> {
  const report: Record<string, unknown> = {
    invad: packageVersion(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cpu: { model: cpus()[0]?.model ?? 'unknown', cores: cpus().length },
  };
  try {
    const addon = loadAddon();
    const build = addon.buildInfo();
    const source = addonSource();
    report.addon = {
      ...build,
      source,
      build: source.kind === 'prebuild' ? 'prebuild' : source.kind === 'override' ? 'INVAD_ADDON_PATH override' : 'local build',
      cudaCompiledIn: build.cuda ? `yes (sm ${build.cudaArchitectures})` : 'no (CPU-only build)',
    };
    const cuda = addon.cudaStatus();
    report.cuda = { ...cuda, driver: cudaVersion(cuda.driverVersion) ?? 'none found', gpu: cuda.available ? cuda.deviceName : `none usable (${cuda.reason})` };
    report.nativeEngine = nativeEngineReport(addon);
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
    .description('Print the addon build (prebuild or local, CUDA or not), the GPU status, the ONNX Runtime version and backends, and which providers the native engine can load')
    .action(async () => {
      process.stdout.write(JSON.stringify(await doctorReport(), null, 2) + '\n');
    });
}
