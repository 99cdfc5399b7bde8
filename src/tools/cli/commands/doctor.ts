/** `invad doctor`: what loaded and what the machine offers, each problem with its fix. */
import { cpus } from 'node:os';
import { dirname } from 'node:path';
import { Command } from 'commander';
import { addonSource, loadAddon } from '../../../binding';
import { packageVersion } from '../../../util/package-info';
import { defaultEngine } from '../../../runtime/detector';
import { ortLibraryPath } from '../../../runtime/engine/ort-library';
import {
  checkProviderFiles,
  GPU_PROVIDERS,
  ORT_TESTED_VERSION,
  onnxruntimeNodeLibraryPath,
  providerFix,
  type ProviderFilesCheck,
} from '../../../runtime/engine/provider-files';

/** "12.4" from cudaDriverGetVersion's 12040. */
function cudaVersion(v: number): string | null {
  return v > 0 ? `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}` : null;
}

/** A problem doctor found, with the steps that fix it (one per line). */
export interface DoctorProblem {
  problem: string;
  fix: string[];
}

/** What the GPU providers need in an ONNX Runtime folder, and what is missing there. */
function providerFilesReport(check: ProviderFilesCheck, forOverride: boolean): Record<string, unknown> {
  if (!check.supported) return { folder: check.folder, note: providerFix() };
  const out: Record<string, unknown> = {
    folder: check.folder,
    missing: check.missingFiles,
    providers: Object.fromEntries(GPU_PROVIDERS.map((p) => [p, check.missing[p].length === 0 ? 'files present' : `missing ${check.missing[p].join(', ')}`])),
  };
  if (check.missingFiles.length > 0) out.fix = providerFix(process.platform, forOverride).split('\n');
  return out;
}

/**
 * The native engine's view: the libonnxruntime it loads, its version, the C API
 * version negotiated with it, the provider libraries in its folder, and whether
 * the CUDA and TensorRT providers can be appended to session options (which
 * loads their libraries).
 */
function nativeEngineReport(addon: ReturnType<typeof loadAddon>, library: string): Record<string, unknown> {
  const overridden = process.env.INVAD_ORT_LIBRARY !== undefined && process.env.INVAD_ORT_LIBRARY !== '';
  const out: Record<string, unknown> = { ortLibrary: library, ...(overridden ? { ortLibraryFrom: 'INVAD_ORT_LIBRARY' } : {}) };
  const build = addon.buildInfo() as ReturnType<typeof addon.buildInfo> & { ortApiVersionMin?: number };
  out.apiVersionsSupported = build.ortApiVersionMin !== undefined ? `${build.ortApiVersionMin} to ${build.ortApiVersion}` : `${build.ortApiVersion} only`;
  const files = checkProviderFiles(dirname(library));
  out.providerFiles = providerFilesReport(files, overridden);
  try {
    out.defaultEngine = defaultEngine(['cpu']);
    const probe = addon.ortProbe(library);
    out.ortVersion = probe.version;
    // The version the addon settled on: the highest the library provides, in the supported range.
    out.apiVersion = probe.apiVersion;
    out.compiledInProviders = probe.availableProviders;
    out.providers = Object.fromEntries(
      probe.providers.map((p) => {
        if (p.ok) return [p.name, 'loads'];
        const missing = p.name === 'cuda' || p.name === 'tensorrt' ? files.missing[p.name] : [];
        return [p.name, `cannot load: ${p.error ?? 'unknown error'}${missing.length ? ` (missing ${missing.join(', ')} in ${files.folder})` : ''}`];
      }),
    );
  } catch (err) {
    out.error = (err as Error).message;
    out.fix = `reinstall onnxruntime-node (${ORT_TESTED_VERSION}), or set INVAD_ORT_LIBRARY to a libonnxruntime of 1.16 or newer`;
  }
  return out;
}

/** Everything doctor prints (a promise for the callers written against the async version). */
export function doctorReport(): Promise<Record<string, unknown>> {
  const report: Record<string, unknown> = {
    invad: packageVersion(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cpu: { model: cpus()[0]?.model ?? 'unknown', cores: cpus().length },
  };
  const problems: DoctorProblem[] = [];
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
    const library = ortLibraryPath();
    report.nativeEngine = nativeEngineReport(addon, library);
    const files = (report.nativeEngine as { providerFiles: { missing?: string[]; fix?: string[] } }).providerFiles;
    if (cuda.available && files.missing && files.missing.length > 0) {
      problems.push({
        problem: `a GPU is usable (${cuda.deviceName}) but ONNX Runtime's GPU provider libraries are missing from ${dirname(library)}: ${files.missing.join(', ')}`,
        fix: files.fix ?? [],
      });
    }
  } catch (err) {
    report.addon = { error: (err as Error).message };
  }
  try {
    // Loaded here, not at start-up (a plain require: a dynamic import() fails under jest's vm).
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const ort = require('onnxruntime-node') as typeof import('onnxruntime-node');
    const library = onnxruntimeNodeLibraryPath();
    report.onnxruntime = {
      version: ort.env.versions.node ?? ort.env.versions.common,
      backends: ort.listSupportedBackends?.() ?? [],
      // onnxruntime-node's own sessions (the onnxruntime-node engine, the reconstruction ablation) load providers from here.
      providerFiles: providerFilesReport(checkProviderFiles(dirname(library)), false),
    };
  } catch (err) {
    report.onnxruntime = { error: (err as Error).message };
  }
  if (problems.length > 0) report.problems = problems;
  return Promise.resolve(report);
}

export function doctorCommand(): Command {
  return new Command('doctor')
    .description(
      'Print the addon build (prebuild or local, CUDA or not), the GPU status, the ONNX Runtime version, the C API version the native engine negotiated, which providers it can load, and the GPU provider libraries missing from the ONNX Runtime folder (with the fix)',
    )
    .action(async () => {
      process.stdout.write(JSON.stringify(await doctorReport(), null, 2) + '\n');
    });
}
