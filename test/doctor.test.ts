/**
 * GPU users must be able to get ONNX Runtime's provider libraries (issue 13):
 * `invad doctor` and the ProviderError name the files missing from the ONNX
 * Runtime folder and print the fix. Checked with fake library folders.
 */
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { doctorReport } from '../src/tools/cli/commands/doctor';
import { checkProviderFiles, gpuProviderHelp, onnxruntimeNodeLibraryPath, providerLibraryFiles } from '../src/runtime/engine/provider-files';
import { ortLibraryFileName } from '../src/runtime/engine/ort-library';
import { openPipeline } from '../src/runtime/engine/native-engine';
import { openSession } from '../src/runtime/engine/sessions';
import { convBackbone } from '../src/fit/onnx/synthetic';
import type { InvadAddon, NativePipelineOptions } from '../src/binding';
import { tempDir } from './helpers/bundles';

const SHARED = 'libonnxruntime_providers_shared.so';
const CUDA = 'libonnxruntime_providers_cuda.so';
const TRT = 'libonnxruntime_providers_tensorrt.so';

let tmp: ReturnType<typeof tempDir>;
/** a folder with a fake libonnxruntime and no provider libraries */
let bare: string;
/** a folder with every provider library (empty files) */
let full: string;

beforeAll(() => {
  tmp = tempDir('invad-doctor-');
  bare = join(tmp.dir, 'bare');
  full = join(tmp.dir, 'full');
  for (const d of [bare, full]) {
    mkdirSync(d);
    writeFileSync(join(d, 'libonnxruntime.so.1'), 'not a library');
  }
  for (const f of [SHARED, CUDA, TRT]) writeFileSync(join(full, f), '');
});

afterAll(() => tmp?.cleanup());

function withEnv<T>(name: string, value: string | undefined, fn: () => Promise<T>): Promise<T> {
  const old = process.env[name];
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
  return fn().finally(() => {
    if (old === undefined) delete process.env[name];
    else process.env[name] = old;
  });
}

describe('the provider library files', () => {
  test('each GPU provider needs the shared bridge and its own library, per platform', () => {
    expect(providerLibraryFiles('cuda', 'linux')).toEqual([SHARED, CUDA]);
    expect(providerLibraryFiles('tensorrt', 'linux')).toEqual([SHARED, TRT]);
    expect(providerLibraryFiles('cuda', 'win32')).toEqual(['onnxruntime_providers_shared.dll', 'onnxruntime_providers_cuda.dll']);
    expect(providerLibraryFiles('cuda', 'darwin')).toEqual([]);
  });

  test('a folder without them lacks all three; a folder with them lacks none', () => {
    const a = checkProviderFiles(bare, 'linux');
    expect(a.missing).toEqual({ cuda: [SHARED, CUDA], tensorrt: [SHARED, TRT] });
    expect(a.missingFiles).toEqual([SHARED, CUDA, TRT]);
    expect(checkProviderFiles(full, 'linux').missingFiles).toEqual([]);
    expect(checkProviderFiles(bare, 'darwin').supported).toBe(false);
  });

  test('the help names the missing files, the folder and the fix; none when no GPU provider was tried', () => {
    const help = gpuProviderHelp(join(bare, 'libonnxruntime.so.1'), [{ provider: 'tensorrt' }, { provider: 'cuda' }, { provider: 'cpu' }], 'linux')!;
    for (const f of [SHARED, CUDA, TRT, bare]) expect(help).toContain(f);
    expect(help).toContain('--onnxruntime-node-install=cuda12');
    expect(help).toContain('npm approve-scripts onnxruntime-node');
    expect(help).toMatch(/CUDA 12\.x.*cuDNN 9\.x.*TensorRT 10\.x/);
    expect(help).toContain('INVAD_ORT_LIBRARY');
    // Only the tried provider's files.
    expect(gpuProviderHelp(join(bare, 'libonnxruntime.so.1'), [{ provider: 'cuda' }], 'linux')).not.toContain(TRT);
    expect(gpuProviderHelp(join(full, 'libonnxruntime.so.1'), [{ provider: 'cuda' }], 'linux')).toMatch(/present .*still failed to load/);
    expect(gpuProviderHelp(join(bare, 'libonnxruntime.so.1'), [{ provider: 'cpu' }], 'linux')).toBeNull();
  });
});

describe('the ProviderError when a GPU provider cannot load', () => {
  test('native engine: the error names the files missing next to the library it was given', () => {
    const attempts = [
      { session: 'backbone', provider: 'cuda', error: 'the CUDA provider could not be loaded' },
      { session: 'backbone', provider: 'cpu', error: 'not asked for' },
    ];
    // A stand-in addon whose pipeline constructor fails the way the real one does.
    const standIn = {
      DeviceResidentPipeline: function DeviceResidentPipeline() {
        throw Object.assign(new Error('no provider could open the backbone'), { attempts });
      },
    } as unknown as InvadAddon;
    const options = { ortLibraryPath: join(bare, 'libonnxruntime.so.1') } as NativePipelineOptions;
    let err: (Error & { code?: string; attempts?: unknown }) | undefined;
    try {
      openPipeline(standIn, options);
    } catch (e) {
      err = e as typeof err;
    }
    expect(err?.code).toBe('ERR_INVAD_PROVIDER');
    expect(err?.attempts).toEqual(attempts);
    expect(err?.message).toContain('no provider could open the backbone');
    expect(err?.message).toContain(`${SHARED}, ${CUDA} in ${bare}`);
    expect(err?.message).toContain('Fix:');
  });

  test("onnxruntime-node sessions: the error names the files missing from onnxruntime-node's folder", async () => {
    const folder = join(onnxruntimeNodeLibraryPath(), '..');
    const missing = checkProviderFiles(folder).missing.cuda;
    const model = join(tmp.dir, 'backbone.onnx');
    writeFileSync(model, convBackbone({ height: 16, width: 16, channels: 4, stride: 4, seed: 1 }));
    const opened = await openSession(model, ['cuda'], { intraOpThreads: 1, spinning: false }, 'backbone').then(
      async (s) => {
        await s.session.release();
        return null;
      },
      (e: Error & { code?: string }) => e,
    );
    if (opened === null) {
      console.warn('\n*** the CUDA provider loads here: nothing to check about missing files ***\n');
      return;
    }
    expect(opened.code).toBe('ERR_INVAD_PROVIDER');
    if (missing.length > 0) {
      for (const f of missing) expect(opened.message).toContain(f);
      expect(opened.message).toContain('--onnxruntime-node-install=cuda12');
    } else {
      expect(opened.message).toMatch(/present .*still failed to load/);
    }
  });
});

describe('invad doctor', () => {
  test('with INVAD_ORT_LIBRARY in a folder without provider libraries: names them and prints the fix', async () => {
    const report = await withEnv('INVAD_ORT_LIBRARY', join(bare, 'libonnxruntime.so.1'), () => doctorReport());
    const native = report.nativeEngine as Record<string, unknown>;
    expect(native.ortLibrary).toBe(join(bare, 'libonnxruntime.so.1'));
    expect(native.ortLibraryFrom).toBe('INVAD_ORT_LIBRARY');
    const files = native.providerFiles as { folder: string; missing: string[]; providers: Record<string, string>; fix: string[] };
    expect(files.folder).toBe(bare);
    expect(files.missing).toEqual([SHARED, CUDA, TRT]);
    expect(files.providers.cuda).toBe(`missing ${SHARED}, ${CUDA}`);
    expect(files.fix.join('\n')).toMatch(/INVAD_ORT_LIBRARY points at a libonnxruntime whose folder lacks these files/);
    expect(files.fix.join('\n')).toMatch(/CUDA 12\.x.*cuDNN 9\.x/);
    // A fake libonnxruntime does not load: said so, with what to do.
    expect(String(native.error)).not.toBe('');
    expect(String(native.fix)).toContain('INVAD_ORT_LIBRARY');
    expect(native.apiVersionsSupported).toMatch(/^\d+( to \d+| only)$/);
  });

  test('with the real ONNX Runtime in a folder that has the provider files: nothing missing, and the negotiated C API version', async () => {
    const dir = join(tmp.dir, 'real');
    mkdirSync(dir);
    symlinkSync(onnxruntimeNodeLibraryPath(), join(dir, ortLibraryFileName()));
    for (const f of [SHARED, CUDA, TRT]) writeFileSync(join(dir, f), '');
    const report = await withEnv('INVAD_ORT_LIBRARY', join(dir, ortLibraryFileName()), () => doctorReport());
    const native = report.nativeEngine as Record<string, unknown>;
    expect(native.error).toBeUndefined();
    expect((native.providerFiles as { missing: string[]; fix?: unknown }).missing).toEqual([]);
    expect((native.providerFiles as { fix?: unknown }).fix).toBeUndefined();
    expect(native.ortVersion).toMatch(/^1\.\d+\.\d+/);
    // The version the addon settled on, within what it supports.
    expect(typeof native.apiVersion).toBe('number');
    const [lo, hi] = String(native.apiVersionsSupported).split(' to ').map(Number);
    expect(native.apiVersion).toBeLessThanOrEqual(hi ?? lo);
    expect(native.apiVersion).toBeGreaterThanOrEqual(lo);
    // The (empty) provider files are there but cannot load: the provider says why, without a missing-file note.
    const providers = native.providers as Record<string, string>;
    expect(providers.cpu).toBe('loads');
    expect(providers.cuda).toMatch(/^cannot load: /);
    expect(providers.cuda).not.toContain('missing');
  });

  test("reports onnxruntime-node's own folder too, and lists a problem only when a GPU is usable", async () => {
    const report = await doctorReport();
    const ort = report.onnxruntime as { providerFiles?: { folder: string; missing: string[] }; error?: string };
    expect(ort.error).toBeUndefined();
    expect(ort.providerFiles?.folder).toBe(join(onnxruntimeNodeLibraryPath(), '..'));
    const cuda = report.cuda as { available: boolean } | undefined;
    const missing = (report.nativeEngine as { providerFiles: { missing: string[] } }).providerFiles.missing;
    if (cuda?.available && missing.length > 0) {
      expect(report.problems).toEqual([expect.objectContaining({ fix: expect.arrayContaining([expect.stringContaining('cuda12')]) })]);
    } else {
      expect(report.problems).toBeUndefined();
    }
  });
});
