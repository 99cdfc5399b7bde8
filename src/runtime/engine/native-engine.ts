/**
 * The native engine, inside the engine worker: the addon's DeviceResidentPipeline
 * runs backbone -> S x (UNet, fused step) -> fused last step + reduction on the
 * ONNX Runtime C API of the same libonnxruntime that onnxruntime-node ships,
 * with IoBinding over preallocated buffers (on the GPU with the CUDA/TensorRT
 * providers, on the host with the CPU provider). finishSamples still makes the
 * maps (resizes, Mahalanobis) from what it returns.
 *
 * The reconstruction ablation is not part of the native pipeline; it opens
 * onnxruntime-node sessions the first time it is asked for.
 */
import type { InferenceSession } from 'onnxruntime-node';
import type {
  DeviceResidentPipeline,
  InvadAddon,
  NativePipelineOptions,
  NativeProvider,
  NativeRunTimings,
  NativeSessionMetadata,
} from '../../binding/addon-types';
import { BindingLoadError, EngineBrokenError, ProviderError } from '../../util/errors';
import type { InversionStep } from '../schedule';
import { checkBackbone, checkUnet, type SessionMetadata } from './model-check';
import { type InversionOutput, type PipelineSessions, runReconstruction } from './ort-node-inversion';
import { DEFAULT_THREAD_SPINNING, type EngineConfig, type EngineReady, type ExecutionProvider } from './protocol';
import { ortLibraryPath } from './ort-library';
import { openSessionPair } from './sessions';
import { gpuProviderHelp } from './provider-files';

export { ortLibraryFileName, ortLibraryPath } from './ort-library';

const NATIVE_PROVIDERS: readonly ExecutionProvider[] = ['tensorrt', 'cuda', 'cpu'];

/** The pipeline's options for a bundle. */
export function nativePipelineOptions(config: EngineConfig, unetPath: string, providers: NativeProvider[]): NativePipelineOptions {
  const m = config.manifest;
  return {
    ortLibraryPath: config.ortLibraryPath ?? ortLibraryPath(),
    backbonePath: config.backbonePath,
    unetPath,
    backbone: { inputName: m.models.backbone.inputName, outputName: m.models.backbone.outputName },
    unet: { xName: m.models.unet.xName, tName: m.models.unet.tName, outputName: m.models.unet.outputName },
    input: { height: m.input.height, width: m.input.width },
    features: { channels: m.features.channels, height: m.features.height, width: m.features.width },
    providers,
    cpuThreads: config.intraOpThreads,
    cpuSpinning: config.threadSpinning ?? DEFAULT_THREAD_SPINNING,
    cudaDeviceId: config.cudaDeviceId ?? 0,
    ...(config.maxBatch !== undefined ? { maxBatch: config.maxBatch } : {}),
    ...(config.tensorrt ? { tensorrt: { ...config.tensorrt } } : {}),
  };
}

/** The native metadata in onnxruntime-node's form, for the shared model checks. */
export function sessionMetadata(meta: NativeSessionMetadata): SessionMetadata {
  const convert = (values: NativeSessionMetadata['inputs']) =>
    values.map((v) =>
      v.isTensor ? { name: v.name, isTensor: true, type: v.type, shape: v.shape ?? [] } : { name: v.name, isTensor: false },
    ) as unknown as InferenceSession.ValueMetadata[];
  return { inputMetadata: convert(meta.inputs), outputMetadata: convert(meta.outputs) };
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** How the addon starts the message of an engine broken by a sticky device error (native/inversion_engine.h kEngineBrokenPrefix). */
export const ENGINE_BROKEN_PREFIX = 'INVAD_ENGINE_BROKEN: ';

/**
 * A run's error in invad's terms: the addon's "engine broken" error (a sticky CUDA
 * error; every later call fails the same way) becomes an EngineBrokenError that says
 * to reload the Detector; anything else is returned as it is.
 */
export function mapRunError(err: unknown): unknown {
  // Not `instanceof Error`: the addon's errors may come from another realm (worker, vm).
  const raw = typeof err === 'string' ? err : (err as { message?: unknown } | null)?.message;
  const message = typeof raw === 'string' ? raw : undefined;
  if (message === undefined || !message.startsWith(ENGINE_BROKEN_PREFIX)) return err;
  const reason = message.slice(ENGINE_BROKEN_PREFIX.length).replace(/\.\s*$/, '');
  return new EngineBrokenError(
    `The native engine is broken and cannot run again: ${reason}. ` +
      'Dispose this Detector and load it again (Detector.load) in a new process: after a sticky CUDA error, CUDA cannot be used again anywhere in the process.',
    { cause: err },
  );
}

/** Opens the addon pipeline and maps its errors to invad's typed errors. */
export function openPipeline(addon: InvadAddon, options: NativePipelineOptions): DeviceResidentPipeline {
  try {
    return new addon.DeviceResidentPipeline(options);
  } catch (err) {
    const attempts = (err as { attempts?: Array<{ session: string; provider: string; error: string }> }).attempts;
    if (Array.isArray(attempts)) {
      const help = gpuProviderHelp(options.ortLibraryPath, attempts);
      throw new ProviderError(help ? `${describe(err)}\n${help}` : describe(err), attempts);
    }
    if (err instanceof TypeError || err instanceof RangeError) throw err;
    throw new BindingLoadError(`The native engine cannot load ONNX Runtime: ${describe(err)}`, [{ path: options.ortLibraryPath, error: describe(err) }]);
  }
}

export class NativeEngine {
  private reconstructionSessions: Promise<PipelineSessions> | undefined;

  private constructor(
    private readonly config: EngineConfig,
    private readonly addon: InvadAddon,
    private readonly pipeline: DeviceResidentPipeline,
    readonly ready: EngineReady,
  ) {}

  /** Opens the pipeline, checks both models against the manifest and reports the providers in use. */
  static open(addon: InvadAddon, config: EngineConfig, unetPath: string): NativeEngine {
    const providers = config.executionProviders.filter((p): p is NativeProvider => NATIVE_PROVIDERS.includes(p));
    const skipped = config.executionProviders
      .filter((p) => !NATIVE_PROVIDERS.includes(p))
      .flatMap((p) =>
        (['backbone', 'unet'] as const).map((session) => ({
          session,
          provider: p,
          error: `the native engine supports ${NATIVE_PROVIDERS.join(', ')}, not ${p}`,
        })),
      );
    if (providers.length === 0) {
      throw new ProviderError(
        `No execution provider of ${config.executionProviders.join(', ')} is supported by the native engine (it supports ${NATIVE_PROVIDERS.join(', ')})`,
        skipped,
      );
    }
    const pipeline = openPipeline(addon, nativePipelineOptions(config, unetPath, providers));
    try {
      const meta = pipeline.metadata();
      const fixed = [checkBackbone(sessionMetadata(meta.backbone), config.manifest), checkUnet(sessionMetadata(meta.unet), config.manifest)].filter(
        (b): b is number => b !== null,
      );
      const p = pipeline.providers();
      const ready: EngineReady = {
        type: 'ready',
        providers: { backbone: p.backbone, unet: p.unet },
        fixedBatch: fixed.length ? Math.min(...fixed) : null,
        fallbacks: [...skipped, ...p.failures],
        engine: 'native',
        device: p.device,
        deviceResident: p.deviceResident,
      };
      return new NativeEngine(config, addon, pipeline, ready);
    } catch (err) {
      pipeline.release();
      throw err;
    }
  }

  /** The clean features, n x C x h x w. */
  async features(batch: Float32Array, n: number): Promise<Float32Array> {
    try {
      return await this.pipeline.featuresAsync(batch, n);
    } catch (err) {
      throw mapRunError(err);
    }
  }

  /** The inversion; `latents` also returns x_T (needed for the Mahalanobis map and for latents()). */
  async inversion(batch: Float32Array, n: number, steps: InversionStep[], latents: boolean): Promise<InversionOutput & { native: NativeRunTimings }> {
    let r: Awaited<ReturnType<DeviceResidentPipeline['runAsync']>>;
    try {
      r = await this.pipeline.runAsync(
        batch,
        n,
        steps.map((s) => ({ t: s.t, a: s.a, b: s.b })),
        { latents },
      );
    } catch (err) {
      throw mapRunError(err);
    }
    return {
      latents: r.latents ?? new Float32Array(0),
      reduced: { l2: r.l2, min: r.min, max: r.max, sumSq: r.sumSq },
      backboneMs: r.timings.backboneMs,
      unetMs: r.timings.unetMs,
      kernelMs: r.timings.kernelMs,
      native: r.timings,
    };
  }

  /** The reconstruction ablation, on onnxruntime-node sessions opened on first use. */
  async reconstruction(batch: Float32Array, n: number, plan: { tStart: number; reconSteps: number; seed: number }, unetPath: string): Promise<InversionOutput> {
    this.reconstructionSessions ??= (async () => {
      const { backbone, unet } = await openSessionPair(this.config, unetPath);
      return { backbone: backbone.session, unet: unet!.session };
    })();
    const sessions = await this.reconstructionSessions.catch((err) => {
      this.reconstructionSessions = undefined;
      throw err;
    });
    return runReconstruction(sessions, this.addon, this.config.manifest, batch, n, plan);
  }

  async release(): Promise<void> {
    this.pipeline.release();
    const s = await this.reconstructionSessions?.catch(() => undefined);
    if (s) await Promise.all([s.backbone.release(), s.unet.release()]);
  }
}
