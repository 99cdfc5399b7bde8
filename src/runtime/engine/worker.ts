/**
 * The engine worker thread. It owns the ONNX Runtime sessions, because
 * onnxruntime-node's run() is synchronous in native code and would otherwise
 * block the caller's event loop for the whole inference (microsoft/onnxruntime#19611).
 * Runs are served one at a time, in arrival order.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadAddon } from '../../binding';
import { performance } from 'node:perf_hooks';
import { BindingLoadError, InferenceError, InvalidArgumentError, serializeError } from '../../util/errors';
import type { LatentGaussian } from '../latent-gaussian';
import { type FeatureStatistics, memoryBank } from '../feature-statistics';
import { readNpy } from '../../util/npy';
import { inversionSteps, type InversionStep } from '../schedule';
import { checkBackbone, checkUnet } from './model-check';
import { batchTimings, extractFeatures, finishSamples, type PipelineSessions, runInversion, runReconstruction } from './ort-node-inversion';
import { NativeEngine } from './native-engine';
import {
  type EngineConfig,
  type EngineReady,
  type ExecutionProvider,
  type FeaturesRequest,
  type MainToWorker,
  type RunRequest,
  sampleTransferList,
  type WorkerToMain,
} from './protocol';
import { blameModelFile, openSessionPair } from './sessions';

const port = parentPort!;
const config = workerData as EngineConfig;
const post = (msg: WorkerToMain, transfer: ArrayBuffer[] = []) => port.postMessage(msg, transfer);

async function open(): Promise<{ sessions: EngineSessions; ready: EngineReady }> {
  const { manifest: m } = config;
  const { backbone, unet } = await openSessionPair(config, config.unetPath);
  const sessions: EngineSessions = { backbone: backbone.session, unet: unet?.session ?? null };
  try {
    const fixed = [checkBackbone(backbone.session, m), unet ? checkUnet(unet.session, m) : null].filter((b): b is number => b !== null);
    const fallbacks = [
      ...backbone.failures.map((f) => ({ session: 'backbone' as const, ...f })),
      ...(unet?.failures ?? []).map((f) => ({ session: 'unet' as const, ...f })),
    ];
    const ready: EngineReady = {
      type: 'ready',
      providers: { backbone: backbone.provider, unet: unet?.provider ?? null },
      fixedBatch: fixed.length ? Math.min(...fixed) : null,
      fallbacks,
      engine: 'onnxruntime-node',
      device: deviceOf([backbone.provider, unet?.provider]),
    };
    return { sessions, ready };
  } catch (err) {
    await releaseAll(sessions);
    throw err;
  }
}

/** "cpu", or the GPU's name (from the addon's CUDA probe) when a session runs on CUDA/TensorRT. */
function deviceOf(providers: Array<ExecutionProvider | undefined>): string {
  if (!providers.some((p) => p === 'cuda' || p === 'tensorrt')) return 'cpu';
  try {
    const status = loadAddon().cudaStatus();
    if (status.deviceName) return status.deviceName;
  } catch {
    // the addon is optional for naming the device
  }
  return `cuda:${config.cudaDeviceId ?? 0}`;
}

interface EngineSessions {
  backbone: PipelineSessions['backbone'];
  unet: PipelineSessions['unet'] | null;
}

async function releaseAll(s: EngineSessions): Promise<void> {
  await Promise.all([s.backbone.release(), s.unet?.release()]);
}

/** Loads the latent-Gaussian statistics for S, if the bundle has them. */
async function loadGaussian(steps: number): Promise<LatentGaussian | undefined> {
  const spec = config.latentGaussian?.find((g) => g.steps === steps);
  if (!spec) return undefined;
  const [mean, precision] = await Promise.all([readNpy(spec.meanPath), readNpy(spec.precisionPath)]);
  const [positions, channels] = mean.shape;
  return { positions, channels, mean: mean.data as Float32Array, precision: precision.data as Float32Array };
}

/** Loads the bundle's feature statistics (issue 17), if it has them. */
async function loadFeatureStatistics(): Promise<FeatureStatistics | undefined> {
  const spec = config.featureStatistics;
  if (!spec) return undefined;
  const stats: FeatureStatistics = {};
  if (spec.gaussian) {
    const [mean, precision] = await Promise.all([readNpy(spec.gaussian.meanPath), readNpy(spec.gaussian.precisionPath)]);
    stats.gaussian = { positions: mean.shape[0], channels: mean.shape[1], mean: mean.data as Float32Array, precision: precision.data as Float32Array };
  }
  if (spec.memoryBank) {
    const bank = await readNpy(spec.memoryBank.path);
    stats.memoryBank = memoryBank(bank.data as Float32Array, bank.shape[0], bank.shape[1], spec.memoryBank.pooling);
  }
  return stats;
}

async function main(): Promise<void> {
  let sessions: EngineSessions | null = null;
  let native: NativeEngine | null = null;
  let ready: EngineReady;
  let addon: ReturnType<typeof loadAddon>;
  try {
    addon = loadAddon();
    // The native engine needs both models; a backbone-only engine always uses onnxruntime-node.
    let fallback: string | undefined;
    if (config.engine === 'native' && config.unetPath !== null) {
      try {
        native = NativeEngine.open(addon, config, config.unetPath);
      } catch (err) {
        if (!(config.engineFallback && err instanceof BindingLoadError)) throw err;
        fallback = `native engine unavailable, using onnxruntime-node: ${err.message}`;
      }
    }
    if (native) {
      ready = native.ready;
    } else {
      const opened = await open();
      sessions = opened.sessions;
      ready = fallback === undefined ? opened.ready : { ...opened.ready, engineFallback: fallback };
    }
  } catch (err) {
    // A model ORT cannot load is the bundle's fault, not the provider's (issue 12).
    post({ type: 'init-error', error: serializeError(await blameModelFile(err, config)) });
    return;
  }
  const stepsCache = new Map<number, InversionStep[]>();
  const stepsFor = (s: number) => {
    let steps = stepsCache.get(s);
    if (!steps) stepsCache.set(s, (steps = inversionSteps(s, config.manifest.schedule)));
    return steps;
  };
  const gaussians = new Map<number, Promise<LatentGaussian | undefined>>();
  const gaussianFor = (steps: number) => {
    let g = gaussians.get(steps);
    if (!g) gaussians.set(steps, (g = loadGaussian(steps)));
    return g;
  };

  let featureStats: Promise<FeatureStatistics | undefined> | undefined;
  const featureStatsFor = () => (featureStats ??= loadFeatureStatistics());

  // Runs are chained so that two messages never interleave their awaits.
  let chain: Promise<void> = Promise.resolve();
  const serve = async (req: RunRequest | FeaturesRequest) => {
    try {
      // steps undefined: the clean features; the Detector checks steps >= 1 for the latents.
      if (req.type === 'features' && req.steps === undefined) {
        const features = native ? await native.features(req.batch, req.n) : await extractFeatures(sessions!.backbone, config.manifest, req.batch, req.n);
        post({ type: 'features', id: req.id, features }, [features.buffer as ArrayBuffer]);
        return;
      }
      const unetPath = config.unetPath;
      if (!native && !sessions?.unet) throw new InferenceError('this engine was opened for feature extraction only');
      const pipe = () => ({ backbone: sessions!.backbone, unet: sessions!.unet! });
      const invert = async (steps: InversionStep[], latents: boolean, keepFeatures = false) => {
        if (!native) return runInversion(pipe(), addon, config.manifest, req.batch, req.n, steps, keepFeatures);
        // The native pipeline returns x_T only: x_0 for the feature maps costs one more backbone run there.
        const features = keepFeatures ? await native.features(req.batch, req.n) : undefined;
        const out = await native.inversion(req.batch, req.n, steps, latents);
        return features ? { ...out, features } : out;
      };
      if (req.type !== 'run') {
        const out = await invert(stepsFor(req.steps ?? config.manifest.schedule.defaultSteps), true);
        post({ type: 'features', id: req.id, features: out.latents }, [out.latents.buffer as ArrayBuffer]);
        return;
      }
      const start = performance.now();
      const plan = req.plan;
      const featureMaps = plan.mode === 'inversion' ? (plan.featureMaps ?? []) : [];
      const stats = featureMaps.length > 0 ? await featureStatsFor() : undefined;
      if (plan.mode === 'inversion' && plan.backboneOnly) {
        // The baselines: the backbone alone, no UNet call.
        const t0 = performance.now();
        const features = native ? await native.features(req.batch, req.n) : await extractFeatures(sessions!.backbone, config.manifest, req.batch, req.n);
        const empty = new Float32Array(0);
        const out = {
          latents: empty,
          reduced: { l2: empty, min: empty, max: empty, sumSq: new Float64Array(0) },
          backboneMs: performance.now() - t0,
          unetMs: [],
          kernelMs: 0,
          features,
        };
        const resizeStart = performance.now();
        const samples = finishSamples(addon, config.manifest, out, req.sizes, plan.map, undefined, { stats, featureMaps, backboneOnly: true });
        post({ type: 'result', id: req.id, samples, timings: batchTimings(out, start, resizeStart) }, sampleTransferList(samples));
        return;
      }
      const wantsLatent = plan.mode === 'inversion' && (plan.map === 'latentGaussian' || plan.map === 'fused' || plan.allMaps);
      const gaussian = wantsLatent ? await gaussianFor(plan.steps) : undefined;
      const out =
        plan.mode === 'inversion'
          ? await invert(stepsFor(plan.steps), gaussian !== undefined, stats !== undefined)
          : native
            ? await native.reconstruction(req.batch, req.n, plan, unetPath!)
            : await runReconstruction(pipe(), addon, config.manifest, req.batch, req.n, plan);
      if (plan.mode === 'inversion' && plan.map === 'latentGaussian' && !gaussian) {
        throw new InvalidArgumentError('options.steps', `the bundle has no latent-Gaussian statistics for S = ${plan.steps}`);
      }
      const resizeStart = performance.now();
      const extras = plan.mode === 'inversion' ? { stats, featureMaps, ...(plan.fuse ? { fuse: plan.fuse } : {}) } : {};
      const samples = finishSamples(addon, config.manifest, out, req.sizes, plan.mode === 'inversion' ? plan.map : 'l2', gaussian, extras);
      const timings = batchTimings(out, start, resizeStart);
      post({ type: 'result', id: req.id, samples, timings }, sampleTransferList(samples));
    } catch (err) {
      post({ type: 'error', id: req.id, error: serializeError(err) });
    }
  };
  port.on('message', (msg: MainToWorker) => {
    if (msg.type === 'run' || msg.type === 'features') {
      chain = chain.then(() => serve(msg));
    } else if (msg.type === 'close') {
      chain = chain.then(async () => {
        if (native) await native.release();
        if (sessions) await releaseAll(sessions);
        post({ type: 'closed' });
        port.close();
      });
    }
  });
  post(ready);
}

void main();
