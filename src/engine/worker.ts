/**
 * The engine worker thread. It owns the ONNX Runtime sessions, because
 * onnxruntime-node's run() is synchronous in native code and would otherwise
 * block the caller's event loop for the whole inference (microsoft/onnxruntime#19611).
 * Runs are served one at a time, in arrival order.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadAddon } from '../../binding';
import { InferenceError, serializeError } from '../errors';
import { inversionSteps, type InversionStep } from '../schedule';
import { checkBackbone, checkUnet } from './model-check';
import { extractFeatures, type PipelineSessions, runPipeline } from './pipeline';
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

  // Runs are chained so that two messages never interleave their awaits.
  let chain: Promise<void> = Promise.resolve();
  const serve = async (req: RunRequest | FeaturesRequest) => {
    try {
      if (req.type === 'features') {
        const features = await extractFeatures(sessions.backbone, config.manifest, req.batch, req.n);
        post({ type: 'features', id: req.id, features }, [features.buffer as ArrayBuffer]);
        return;
      }
      if (!sessions.unet) throw new InferenceError('this engine was opened for feature extraction only');
      const out = await runPipeline({ backbone: sessions.backbone, unet: sessions.unet }, addon, config.manifest, req.batch, req.n, req.sizes, stepsFor(req.steps));
      post({ type: 'result', id: req.id, ...out }, out.samples.map((s) => s.map.buffer as ArrayBuffer));
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
