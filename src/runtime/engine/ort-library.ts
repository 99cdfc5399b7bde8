/**
 * Where the native engine finds ONNX Runtime. Kept free of onnxruntime-node
 * imports so the main thread can resolve the path without loading ORT.
 */
import { dirname, join, resolve } from 'node:path';

/** File name of the ONNX Runtime shared library onnxruntime-node ships for a platform. */
export function ortLibraryFileName(platform: NodeJS.Platform = process.platform): string {
  if (platform === 'win32') return 'onnxruntime.dll';
  if (platform === 'darwin') return 'libonnxruntime.1.dylib';
  return 'libonnxruntime.so.1';
}

/**
 * The libonnxruntime the native engine loads: onnxruntime-node's own copy
 * (bin/napi-v6/<platform>/<arch>/), so one ORT serves both engines, unless
 * INVAD_ORT_LIBRARY names another (e.g. a GPU build with its provider libraries).
 */
export function ortLibraryPath(): string {
  const override = process.env.INVAD_ORT_LIBRARY;
  if (override !== undefined && override !== '') return resolve(override);
  const pkg = dirname(require.resolve('onnxruntime-node/package.json'));
  return join(pkg, 'bin', 'napi-v6', process.platform, process.arch, ortLibraryFileName());
}
