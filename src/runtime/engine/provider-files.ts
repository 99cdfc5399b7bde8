/**
 * ONNX Runtime's GPU execution providers live in separate shared libraries next
 * to libonnxruntime. onnxruntime-node does not ship them in its npm package: its
 * install script downloads them (Linux x64, CUDA 12), and that script does not
 * run when npm skips dependencies' install scripts. This module says which files
 * a provider needs, which of them a folder lacks, and how to get them. It loads
 * neither ONNX Runtime nor the addon (doctor and the error paths use it).
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ortLibraryFileName } from './ort-library';

/** The providers that need extra libraries. */
export type GpuProvider = 'cuda' | 'tensorrt';

export const GPU_PROVIDERS: readonly GpuProvider[] = ['cuda', 'tensorrt'];

/** The ONNX Runtime release invad is built and tested against (onnxruntime-node's version). */
export const ORT_TESTED_VERSION = '1.30.0';

/** What the GPU provider libraries of that release need on the machine. */
export const GPU_PROVIDER_REQUIREMENTS = 'CUDA 12.x (libcudart.so.12, libcublas.so.12), cuDNN 9.x, and TensorRT 10.x for the tensorrt provider';

function libName(platform: NodeJS.Platform, stem: string): string {
  return platform === 'win32' ? `${stem}.dll` : platform === 'darwin' ? `lib${stem}.dylib` : `lib${stem}.so`;
}

/**
 * The files `provider` needs in the ONNX Runtime library folder: the shared
 * provider bridge and the provider's own library. Empty on macOS, where ONNX
 * Runtime has no CUDA or TensorRT provider.
 */
export function providerLibraryFiles(provider: GpuProvider, platform: NodeJS.Platform = process.platform): string[] {
  if (platform === 'darwin') return [];
  return [libName(platform, 'onnxruntime_providers_shared'), libName(platform, `onnxruntime_providers_${provider}`)];
}

export interface ProviderFilesCheck {
  /** the folder checked (the one that holds libonnxruntime) */
  folder: string;
  /** per provider, the files it needs that the folder lacks */
  missing: Record<GpuProvider, string[]>;
  /** every needed file the folder lacks, each once */
  missingFiles: string[];
  /** false on platforms without these providers (macOS) */
  supported: boolean;
}

/** Which GPU provider libraries the folder `folder` lacks. */
export function checkProviderFiles(folder: string, platform: NodeJS.Platform = process.platform): ProviderFilesCheck {
  const missing = { cuda: [] as string[], tensorrt: [] as string[] };
  for (const p of GPU_PROVIDERS) missing[p] = providerLibraryFiles(p, platform).filter((f) => !existsSync(join(folder, f)));
  const missingFiles = [...new Set([...missing.cuda, ...missing.tensorrt])];
  return { folder, missing, missingFiles, supported: platform !== 'darwin' };
}

/** onnxruntime-node's own libonnxruntime (what its sessions use, whatever INVAD_ORT_LIBRARY says). */
export function onnxruntimeNodeLibraryPath(): string {
  const pkg = dirname(require.resolve('onnxruntime-node/package.json'));
  return join(pkg, 'bin', 'napi-v6', process.platform, process.arch, ortLibraryFileName());
}

/**
 * The steps that fetch the provider libraries, one per line (no trailing newline).
 * `forOverride`: the folder is an INVAD_ORT_LIBRARY of one's own, so the
 * onnxruntime-node installer would not help it.
 */
export function providerFix(platform: NodeJS.Platform = process.platform, forOverride = false): string {
  if (platform === 'darwin') return 'ONNX Runtime has no CUDA or TensorRT provider on macOS; use the cpu provider.';
  const lines: string[] = [];
  if (forOverride) {
    lines.push(
      `INVAD_ORT_LIBRARY points at a libonnxruntime whose folder lacks these files: use a GPU build of ONNX Runtime (1.16 or newer; ${ORT_TESTED_VERSION} is tested) and keep its libonnxruntime_providers_* files next to it, or unset INVAD_ORT_LIBRARY.`,
    );
  } else if (platform === 'linux' && process.arch === 'x64') {
    lines.push(
      "onnxruntime-node downloads them (from NuGet, Microsoft.ML.OnnxRuntime.Gpu.Linux) in its install script, which did not run or was skipped (npm 11 wants dependencies' install scripts approved; --ignore-scripts and ONNXRUNTIME_NODE_INSTALL=skip skip it). With network access, either:",
      '  node node_modules/onnxruntime-node/script/install.js --onnxruntime-node-install=cuda12',
      '  or: npm approve-scripts onnxruntime-node && ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node',
    );
  } else {
    lines.push(
      `onnxruntime-node has no CUDA provider download for ${platform}-${process.arch}: point INVAD_ORT_LIBRARY at a GPU build of ONNX Runtime whose folder holds these files (native engine).`,
    );
  }
  lines.push(`They need ${GPU_PROVIDER_REQUIREMENTS} on the library path (LD_LIBRARY_PATH on Linux).`);
  if (!forOverride) lines.push('Or set INVAD_ORT_LIBRARY to a GPU build of libonnxruntime of your own whose folder holds them (the native engine only).');
  return lines.join('\n');
}

/**
 * The paragraph a ProviderError gets when a CUDA or TensorRT attempt failed:
 * the files the ONNX Runtime folder lacks and the fix, or, when every file is
 * there, what else the provider needs. null when no GPU provider was tried.
 */
export function gpuProviderHelp(
  libraryPath: string,
  attempted: ReadonlyArray<{ provider: string }>,
  platform: NodeJS.Platform = process.platform,
): string | null {
  const tried = GPU_PROVIDERS.filter((p) => attempted.some((a) => a.provider === p));
  if (tried.length === 0) return null;
  const check = checkProviderFiles(dirname(libraryPath), platform);
  if (!check.supported) return providerFix(platform);
  const missing = [...new Set(tried.flatMap((p) => check.missing[p]))];
  const forOverride = process.env.INVAD_ORT_LIBRARY !== undefined && process.env.INVAD_ORT_LIBRARY !== '' && libraryPath !== onnxruntimeNodeLibraryPathOrNull();
  if (missing.length > 0) {
    return `The ${tried.join(' and ')} provider needs ${missing.join(', ')} in ${check.folder}, which ${missing.length === 1 ? 'is' : 'are'} missing.\nFix: ${providerFix(platform, forOverride)}`;
  }
  return `The provider libraries are present in ${check.folder}; the ${tried.join(' and ')} provider still failed to load, usually because ${GPU_PROVIDER_REQUIREMENTS} are not on the library path, or no GPU is usable (run \`invad doctor\`).`;
}

function onnxruntimeNodeLibraryPathOrNull(): string | null {
  try {
    return onnxruntimeNodeLibraryPath();
  } catch {
    return null;
  }
}
