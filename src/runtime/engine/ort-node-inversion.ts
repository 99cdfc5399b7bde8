/**
 * The scoring pipeline on one batch, inside the engine worker. The worker is
 * already off the caller's thread, so it calls the addon's sync kernels: at
 * 8x272x16x16 they take ~0.13 ms where the async hand-off alone costs more
 * (`npm run bench:kernels`).
 *
 * backbone -> S x (UNet, fused DDIM step) -> fused last step + channel-norm
 * reduction -> [Mahalanobis map] -> bilinear resize of each map to its image's size
 * [-> the bundle's mapSmoothing blur, src/runtime/map-smoothing.ts].
 */
import { performance } from 'node:perf_hooks';
import * as ort from 'onnxruntime-node';
import type { ChannelNormResult, InvadAddon } from '../../binding/addon-types';
import type { Manifest } from '../bundle/manifest';
import type { FeatureMap } from '../scores';
import { serializeError, InferenceError } from '../../util/errors';
import { type LatentGaussian, mahalanobisMap } from '../latent-gaussian';
import { mulberry32 } from '../../util/prng';
import { alphasCumprod, type InversionStep } from '../schedule';
import { checkRunDims } from './model-check';
import type { BatchTimings, FeatureMaps, SampleOutput, ScorePlan } from './protocol';
import { type FeatureStatistics, featureGaussianMap, fusedMap, mapMax, patchcoreMap } from '../feature-statistics';
import { upsampleMap } from '../map-smoothing';

export interface PipelineSessions {
  backbone: ort.InferenceSession;
  unet: ort.InferenceSession;
}

const HALF_LOG_2PI = 0.5 * Math.log(2 * Math.PI);

function outputOf(result: ort.InferenceSession.OnnxValueMapType, name: string, file: string): ort.Tensor {
  const t = result[name];
  if (!t) throw new InferenceError(`${file} returned no output named "${name}"`);
  if (t.type !== 'float32') throw new InferenceError(`${file} output "${name}" is ${t.type}, expected float32`);
  return t;
}

/** Runs the backbone and returns the clean features, n x C x h x w. */
export async function extractFeatures(session: ort.InferenceSession, m: Manifest, batch: Float32Array, n: number): Promise<Float32Array> {
  const { backbone } = m.models;
  const input = new ort.Tensor('float32', batch, [n, 3, m.input.height, m.input.width]);
  const out = outputOf(await session.run({ [backbone.inputName]: input }), backbone.outputName, backbone.file);
  checkRunDims(backbone.file, '/features', backbone.outputName, out.dims, [n, m.features.channels, m.features.height, m.features.width]);
  // A fresh copy: the kernels update it in place across steps.
  return new Float32Array(out.data as Float32Array);
}

/** One UNet call: eps_theta(x, t) for the whole batch. */
async function predictEps(unet: ort.InferenceSession, m: Manifest, x: Float32Array, n: number, t: number): Promise<Float32Array> {
  const spec = m.models.unet;
  const f = m.features;
  const dims = [n, f.channels, f.height, f.width];
  const tTensor = new ort.Tensor('int64', new BigInt64Array(n).fill(BigInt(t)), [n]);
  const result = await unet.run({ [spec.xName]: new ort.Tensor('float32', x, dims), [spec.tName]: tTensor });
  const eps = outputOf(result, spec.outputName, spec.file);
  checkRunDims(spec.file, '/features', spec.outputName, eps.dims, dims);
  return eps.data as Float32Array;
}

export interface InversionOutput {
  /** x_T, n x C x h x w */
  latents: Float32Array;
  reduced: ChannelNormResult;
  backboneMs: number;
  unetMs: number[];
  kernelMs: number;
  /** the clean features x_0, n x C x h x w, when asked for (the feature-statistics maps) */
  features?: Float32Array;
}

/** Clean features -> x_T in S network evaluations; the last step is fused with the reduction. */
export async function runInversion(
  sessions: PipelineSessions,
  addon: InvadAddon,
  m: Manifest,
  batch: Float32Array,
  n: number,
  steps: InversionStep[],
  keepFeatures = false,
): Promise<InversionOutput> {
  const t0 = performance.now();
  const x = await extractFeatures(sessions.backbone, m, batch, n);
  const backboneMs = performance.now() - t0;
  // The steps update x in place; the feature-statistics maps need x_0 itself.
  const features = keepFeatures ? new Float32Array(x) : undefined;
  const shape = { n, c: m.features.channels, h: m.features.height, w: m.features.width };
  const unetMs: number[] = [];
  let kernelMs = 0;
  let reduced: ChannelNormResult | undefined;
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i];
    const t1 = performance.now();
    const eps = await predictEps(sessions.unet, m, x, n, step.t);
    const t2 = performance.now();
    if (i === steps.length - 1) reduced = addon.ddimLastStepReduce(x, eps, step.a, step.b, shape);
    else addon.ddimStep(x, eps, step.a, step.b);
    unetMs.push(t2 - t1);
    kernelMs += performance.now() - t2;
  }
  if (!reduced) throw new InferenceError('inversion ran no steps');
  return { latents: x, reduced, backboneMs, unetMs, kernelMs, ...(features ? { features } : {}) };
}

/** Standard normal samples from a seeded generator (Box-Muller). */
function gaussianNoise(count: number, seed: number): Float32Array {
  const rand = mulberry32(seed);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - rand()));
    const th = 2 * Math.PI * rand();
    out[i] = r * Math.cos(th);
    if (i + 1 < count) out[i + 1] = r * Math.sin(th);
  }
  return out;
}

/**
 * The reconstruction baseline: x_t = sqrt(abar)x0 + sqrt(1-abar)noise at
 * t = tStart*T (seeded noise), then reconSteps deterministic DDIM steps back to
 * t = 0; returns the channel-norm reduction of the error x0 - x0_hat.
 */
export async function runReconstruction(
  sessions: PipelineSessions,
  addon: InvadAddon,
  m: Manifest,
  batch: Float32Array,
  n: number,
  plan: { tStart: number; reconSteps: number; seed: number },
): Promise<InversionOutput> {
  const t0 = performance.now();
  const x0 = await extractFeatures(sessions.backbone, m, batch, n);
  const backboneMs = performance.now() - t0;
  const abar = alphasCumprod(m.schedule);
  const tMax = Math.round(plan.tStart * (m.schedule.trainSteps - 1));
  const ts = Array.from({ length: plan.reconSteps + 1 }, (_, i) => Math.round((tMax * i) / plan.reconSteps));
  const x = new Float32Array(x0);
  addon.ddimStep(x, gaussianNoise(x.length, plan.seed), Math.sqrt(abar[tMax]), Math.sqrt(1 - abar[tMax]));
  const unetMs: number[] = [];
  let kernelMs = 0;
  for (let i = plan.reconSteps; i >= 1; i--) {
    const [t, tPrev] = [ts[i], ts[i - 1]];
    const t1 = performance.now();
    const eps = await predictEps(sessions.unet, m, x, n, t);
    const t2 = performance.now();
    // DDIM update to tPrev: the same a*x + b*eps form as the inversion.
    const a = Math.sqrt(abar[tPrev] / abar[t]);
    const b = Math.sqrt(1 - abar[tPrev]) - (Math.sqrt(abar[tPrev]) * Math.sqrt(1 - abar[t])) / Math.sqrt(abar[t]);
    addon.ddimStep(x, eps, a, b);
    unetMs.push(t2 - t1);
    kernelMs += performance.now() - t2;
  }
  const t3 = performance.now();
  // error = x0 - x0_hat, then the same per-position channel norm.
  addon.ddimStep(x, x0, -1, 1);
  const reduced = addon.channelNorm(x, { n, c: m.features.channels, h: m.features.height, w: m.features.width });
  kernelMs += performance.now() - t3;
  return { latents: x, reduced, backboneMs, unetMs, kernelMs };
}

/**
 * A sample that failed on its own. Each empty map gets its own buffer: the result message
 * transfers every map's buffer, and one buffer listed twice fails the whole batch with
 * "Transfer list contains duplicate ArrayBuffer" (issue 12, finding 6).
 */
function failedSample(base: Omit<SampleOutput, 'featureMaps' | 'map' | 'error'>, message: string): SampleOutput {
  return { ...base, featureMaps: { l2: new Float32Array(0) }, map: new Float32Array(0), error: serializeError(new InferenceError(message)) };
}

/** Per-sample scores and maps from an inversion (or reconstruction) output; a sample with non-finite values fails alone. */
export function finishSamples(
  addon: InvadAddon,
  m: Manifest,
  out: InversionOutput,
  sizes: Array<{ width: number; height: number }>,
  mapFrom: FeatureMap,
  gaussian: LatentGaussian | undefined,
  extra: FeatureExtras = {},
): SampleOutput[] {
  const { channels: c, height: h, width: w } = m.features;
  const plane = h * w;
  const d = c * plane;
  // Bilinear to the image, then the bundle's mapSmoothing when it has one (issue 17).
  const resize = (map: Float32Array, size: { width: number; height: number }) => upsampleMap(addon, m, map, size);
  if (extra.backboneOnly) return finishFeatureSamples(m, out.features!, sizes, mapFrom, extra, resize);
  return sizes.map((size, i): SampleOutput => {
    const sumSq = out.reduced.sumSq[i];
    const l2Min = out.reduced.min[i];
    const l2Max = out.reduced.max[i];
    const base = { spatialRange: l2Max - l2Min, nll: 0.5 * sumSq + d * HALF_LOG_2PI, l2Min, l2Max };
    if (!Number.isFinite(sumSq) || !Number.isFinite(l2Max) || !Number.isFinite(l2Min)) {
      return failedSample(base, `the model produced non-finite values for sample ${i} (NaN or Infinity in the inverted latent)`);
    }
    const l2 = out.reduced.l2.slice(i * plane, (i + 1) * plane);
    const feats = featureParts(out.features?.subarray(i * d, (i + 1) * d), m, extra);
    if (!feats.ok) return failedSample(base, `${feats.error} of sample ${i}`);
    if (!gaussian) {
      const maps: FeatureMaps = { l2, ...feats.maps };
      return { ...base, ...feats.parts, featureMaps: maps, map: resize(maps[mapFrom] ?? l2, size) };
    }
    const maha = mahalanobisMap(out.latents.subarray(i * d, (i + 1) * d), gaussian);
    const latentGaussian = maha.reduce((a, v) => Math.max(a, v), -Infinity);
    // A finite latent can still overflow float32 in the Mahalanobis map (huge precision or mean).
    if (!Number.isFinite(latentGaussian)) {
      return failedSample(
        base,
        `the latent-Gaussian map of sample ${i} is not finite (max ${latentGaussian}): the latent statistics or the model output are out of range`,
      );
    }
    const maps: FeatureMaps = { l2, latentGaussian: maha, ...feats.maps };
    if (extra.fuse && maps.featureGaussian) maps.fused = fusedMap(maha, maps.featureGaussian, extra.fuse);
    const shown = maps[mapFrom];
    if (!shown) return failedSample(base, `the ${mapFrom} map of sample ${i} cannot be made: the bundle lacks its feature statistics or calibration`);
    return { ...base, latentGaussian, ...feats.parts, featureMaps: maps, map: resize(shown, size) };
  });
}

/** What finishSamples makes beside the latent maps (issue 17). */
export interface FeatureExtras {
  stats?: FeatureStatistics;
  /** the feature-statistics maps to compute from `out.features` */
  featureMaps?: Array<'featureGaussian' | 'patchcore'>;
  /** no latent: `out.features` only */
  backboneOnly?: boolean;
  fuse?: Extract<ScorePlan, { mode: 'inversion' }>['fuse'];
}

type FeatureParts =
  | { ok: true; parts: { featureGaussian?: number; patchcore?: number }; maps: Pick<FeatureMaps, 'featureGaussian' | 'patchcore'> }
  | { ok: false; error: string };

/** The feature-statistics maps of one sample's x_0 [c, h*w], and their maxima. */
function featureParts(x0: Float32Array | undefined, m: Manifest, extra: FeatureExtras): FeatureParts {
  const parts: { featureGaussian?: number; patchcore?: number } = {};
  const maps: Pick<FeatureMaps, 'featureGaussian' | 'patchcore'> = {};
  if (!x0 || !extra.stats) return { ok: true, parts, maps };
  const { channels: c, height: h, width: w } = m.features;
  for (const kind of extra.featureMaps ?? []) {
    let map: Float32Array | undefined;
    if (kind === 'featureGaussian' && extra.stats.gaussian) map = featureGaussianMap(x0, extra.stats.gaussian);
    if (kind === 'patchcore' && extra.stats.memoryBank) map = patchcoreMap(x0, c, h, w, extra.stats.memoryBank);
    if (!map) continue;
    const max = mapMax(map);
    if (!Number.isFinite(max)) return { ok: false, error: `the ${kind} map is not finite (max ${max})` };
    maps[kind] = map;
    parts[kind] = max;
  }
  return { ok: true, parts, maps };
}

/** Samples of a backbone-only run (the baselines): the feature-statistics parts and maps; SP and NLL are 0. */
function finishFeatureSamples(
  m: Manifest,
  features: Float32Array,
  sizes: Array<{ width: number; height: number }>,
  mapFrom: FeatureMap,
  extra: FeatureExtras,
  resize: (map: Float32Array, size: { width: number; height: number }) => Float32Array,
): SampleOutput[] {
  const d = m.features.channels * m.features.height * m.features.width;
  return sizes.map((size, i): SampleOutput => {
    const base = { spatialRange: 0, nll: 0, l2Min: 0, l2Max: 0 };
    const x0 = features.subarray(i * d, (i + 1) * d);
    for (let k = 0; k < x0.length; k++) {
      if (!Number.isFinite(x0[k])) return failedSample(base, `the backbone produced non-finite values for sample ${i}`);
    }
    const feats = featureParts(x0, m, extra);
    if (!feats.ok) return failedSample(base, `${feats.error} of sample ${i}`);
    const maps: FeatureMaps = { l2: new Float32Array(0), ...feats.maps };
    const shown = maps[mapFrom];
    if (!shown) return failedSample(base, `the ${mapFrom} map of sample ${i} cannot be made: the bundle lacks its feature statistics`);
    return { ...base, ...feats.parts, featureMaps: maps, map: resize(shown, size) };
  });
}

export function batchTimings(out: InversionOutput, start: number, resizeStart: number): BatchTimings {
  const end = performance.now();
  return { backboneMs: out.backboneMs, unetMs: out.unetMs, kernelMs: out.kernelMs, resizeMs: end - resizeStart, engineMs: end - start };
}
