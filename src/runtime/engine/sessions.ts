/**
 * Opens ONNX Runtime sessions, trying the execution providers in order.
 * onnxruntime-node does not fall back by itself (['cuda','cpu'] fails outright
 * when the CUDA provider cannot load), so each provider gets its own attempt.
 */
import * as ort from 'onnxruntime-node';
import { BindingLoadError, ModelBundleError, ProviderError } from '../../util/errors';
import { gpuProviderHelp, onnxruntimeNodeLibraryPath } from './provider-files';
import { DEFAULT_THREAD_SPINNING, type EngineConfig, type ExecutionProvider, sessionSpinning } from './protocol';

export interface SessionThreading {
  intraOpThreads: number;
  /** let this session's intra-op threads spin between runs */
  spinning: boolean;
}

export interface OpenedSession {
  session: ort.InferenceSession;
  provider: ExecutionProvider;
  failures: Array<{ provider: string; error: string }>;
}

export async function openSession(path: string, providers: ExecutionProvider[], threading: SessionThreading, label: string): Promise<OpenedSession> {
  const { intraOpThreads, spinning } = threading;
  const failures: Array<{ provider: string; error: string }> = [];
  for (const provider of providers) {
    try {
      const session = await ort.InferenceSession.create(path, {
        executionProviders: [provider],
        graphOptimizationLevel: 'all',
        // A provider that cannot load is reported in `failures`; keep ORT's own log quiet about it.
        logSeverityLevel: provider === 'cpu' ? 2 : 4,
        ...(intraOpThreads > 0 ? { intraOpNumThreads: intraOpThreads } : {}),
        // Two sessions, two intra-op pools: see DetectorOptions.threadSpinning.
        extra: { session: { intra_op: { allow_spinning: spinning ? '1' : '0' } } },
      });
      return { session, provider, failures };
    } catch (err) {
      failures.push({ provider, error: (err as Error).message });
    }
  }
  const detail = failures.map((f) => `  ${f.provider}: ${f.error}`).join('\n');
  const help = gpuProviderHelp(onnxruntimeNodeLibraryPath(), failures);
  throw new ProviderError(`No execution provider could open the ${label} model (${path}). Tried:\n${detail}${help ? `\n${help}` : ''}`, failures);
}

/** The backbone and, unless `unetPath` is null, the UNet session; neither is left open on failure. */
export async function openSessionPair(config: EngineConfig, unetPath: string | null): Promise<{ backbone: OpenedSession; unet: OpenedSession | null }> {
  const spinning = sessionSpinning(config.threadSpinning ?? DEFAULT_THREAD_SPINNING);
  const backbone = await openSession(
    config.backbonePath,
    config.executionProviders,
    { intraOpThreads: config.intraOpThreads, spinning: spinning.backbone },
    'backbone',
  );
  if (unetPath === null) return { backbone, unet: null };
  try {
    return {
      backbone,
      unet: await openSession(unetPath, config.executionProviders, { intraOpThreads: config.intraOpThreads, spinning: spinning.unet }, 'UNet'),
    };
  } catch (err) {
    await backbone.session.release();
    throw err;
  }
}

/** ORT's error when it opens `path` on its built-in CPU provider, or undefined when it opens. */
async function cpuOpenError(path: string): Promise<Error | undefined> {
  try {
    const session = await ort.InferenceSession.create(path, {
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      intraOpNumThreads: 1,
      logSeverityLevel: 4,
    });
    await session.release();
    return undefined;
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

/**
 * Tells a broken model file from a provider that cannot load, after no provider opened the
 * models (either engine: the native one runs the same libonnxruntime). The CPU provider is built
 * into ONNX Runtime, so a model that does not open on it is at fault: truncated, not ONNX, an
 * opset this runtime lacks. That gives a ModelBundleError naming the file, with ORT's error as
 * its `cause`; anything else, or models that open on the CPU, gives back `err` unchanged.
 */
export async function blameModelFile(err: unknown, config: EngineConfig): Promise<unknown> {
  if (!(err instanceof ProviderError || err instanceof BindingLoadError)) return err;
  const { backbone, unet } = config.manifest.models;
  const models = [
    { path: config.backbonePath, file: backbone.file, field: '/models/backbone/file' },
    ...(config.unetPath === null ? [] : [{ path: config.unetPath, file: unet.file, field: '/models/unet/file' }]),
  ];
  for (const model of models) {
    const cause = await cpuOpenError(model.path);
    if (cause)
      return new ModelBundleError(
        model.file,
        model.field,
        `model file ${model.file} cannot be loaded by ONNX Runtime ${ort.env.versions.common}: ${cause.message}`,
        { cause },
      );
  }
  return err;
}
