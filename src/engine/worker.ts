/**
 * The engine worker thread. It owns the ONNX Runtime sessions, because
 * onnxruntime-node's run() is synchronous in native code and would otherwise
 * block the caller's event loop for the whole inference (microsoft/onnxruntime#19611).
 * Runs are served one at a time, in arrival order.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadAddon } from '../../binding';
import { performance } from 'node:perf_hooks';
import { InferenceError, InvalidArgumentError, serializeError } from '../errors';
import type { LatentGaussian } from '../latent-gaussian';
import { readNpy } from '../npy';
import { inversionSteps, type InversionStep } from '../schedule';
import { checkBackbone, checkUnet } from './model-check';
import { batchTimings, extractFeatures, finishSamples, type PipelineSessions, runInversion, runReconstruction } from './pipeline';
import type { EngineConfig, EngineReady, FeaturesRequest, MainToWorker, RunRequest, WorkerToMain } from './protocol';
import { openSession } from './sessions';

const port = parentPort!;
const config = workerData as EngineConfig;
const post = (msg: WorkerToMain, transfer: ArrayBuffer[] = []) => port.postMessage(msg, transfer);

async function open(): Promise<{ sessions: EngineSessions; ready: EngineReady }> {
  const { manifest: m, executionProviders, intraOpThreads } = config;
  const backbone = await openSession(config.backbonePath, executionProviders, intraOpThreads, 'backbone');
  const unet =
    config.unetPath === null
      ? null
      : await openSession(config.unetPath, executionProviders, intraOpThreads, 'UNet').catch(async (err) => {
          await backbone.session.release();
          throw err;
        });
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
    };
    return { sessions, ready };
  } catch (err) {
    await releaseAll(sessions);
    throw err;
  }
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

async function main(): Promise<void> {
  let opened: Awaited<ReturnType<typeof open>>;
  let addon: ReturnType<typeof loadAddon>;
  try {
    addon = loadAddon();
    opened = await open();
  } catch (err) {
    post({ type: 'init-error', error: serializeError(err) });
    return;
  }
  const { sessions, ready } = opened;
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

  // Runs are chained so that two messages never interleave their awaits.
  let chain: Promise<void> = Promise.resolve();
  const serve = async (req: RunRequest | FeaturesRequest) => {
    try {
      if (req.type === 'features' && !req.steps) {
        const features = await extractFeatures(sessions.backbone, config.manifest, req.batch, req.n);
        post({ type: 'features', id: req.id, features }, [features.buffer as ArrayBuffer]);
        return;
      }
      if (!sessions.unet) throw new InferenceError('this engine was opened for feature extraction only');
      const pipe = { backbone: sessions.backbone, unet: sessions.unet };
      if (req.type !== 'run') {
        const out = await runInversion(pipe, addon, config.manifest, req.batch, req.n, stepsFor(req.steps ?? config.manifest.schedule.defaultSteps));
        post({ type: 'features', id: req.id, features: out.latents }, [out.latents.buffer as ArrayBuffer]);
        return;
      }
      const start = performance.now();
      const plan = req.plan;
      const out =
        plan.mode === 'inversion'
          ? await runInversion(pipe, addon, config.manifest, req.batch, req.n, stepsFor(plan.steps))
          : await runReconstruction(pipe, addon, config.manifest, req.batch, req.n, plan);
      const gaussian = plan.mode === 'inversion' ? await gaussianFor(plan.steps) : undefined;
      if (plan.mode === 'inversion' && plan.map === 'latent-gaussian' && !gaussian) {
        throw new InvalidArgumentError('options.steps', `the bundle has no latent-Gaussian statistics for S = ${plan.steps}`);
      }
      const resizeStart = performance.now();
      const samples = finishSamples(addon, config.manifest, out, req.sizes, plan.mode === 'inversion' ? plan.map : 'l2', gaussian);
      const timings = batchTimings(out, start, resizeStart);
      post({ type: 'result', id: req.id, samples, timings }, samples.flatMap((s) => [s.map, s.featureMaps.l2, s.featureMaps.latentGaussian].filter((a) => a !== undefined).map((a) => a.buffer as ArrayBuffer)));
    } catch (err) {
      post({ type: 'error', id: req.id, error: serializeError(err) });
    }
  };
  port.on('message', (msg: MainToWorker) => {
    if (msg.type === 'run' || msg.type === 'features') {
      chain = chain.then(() => serve(msg));
    } else if (msg.type === 'close') {
      chain = chain.then(async () => {
        await releaseAll(sessions);
        post({ type: 'closed' });
        port.close();
      });
    }
  });
  post(ready);
}

void main();
