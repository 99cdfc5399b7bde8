/**
 * Map post-processing (issue 17, item 2): the bundle's `mapSmoothing`, a Gaussian blur of the
 * anomaly map after its bilinear resize to the image, as PaDiM and PatchCore smooth theirs
 * (sigma 4 px at 224). Both engines make their maps through {@link upsampleMap}, and so does
 * `invad eval`; calibration takes the pixel thresholds on smoothed maps too
 * ({@link calibrationMapValues}).
 *
 * The blur runs in the addon (gaussianBlur: separable, truncated at 4 sigma, scipy's 'reflect'
 * borders, CPU and CUDA kernels sharing native/kernel_math.h).
 */
import type { InvadAddon } from '../binding/addon-types';
import type { Manifest, MapSmoothingSpec } from './bundle/manifest';

/** The addon's largest sigma (native/map_smoothing.h kMaxBlurSigma); larger ones are clamped to it. */
export const MAX_BLUR_SIGMA = 1024;

/**
 * The smallest sigma passed to the addon. Any sigma under 0.125 has radius 0 (floor(4 sigma +
 * 0.5)), a copy of the map, but the addon refuses 0, which a tiny sigmaPx (5e-324 passes the
 * schema) scaled to a small image or a large atInputSize underflows to (found by npm run fuzz).
 */
const MIN_BLUR_SIGMA = 1e-3;

/** The largest `--map-smoothing` sigma, in pixels at the model input (the manifest schema's sigmaPx maximum). */
export const MAX_SMOOTHING_SIGMA = 64;

type Size = { width: number; height: number };

/** Sigma in pixels at the model input: sigmaPx at atInputSize, scaled to the input's shorter side. */
export function sigmaAtInput(spec: MapSmoothingSpec, input: Size): number {
  return (spec.sigmaPx * Math.min(input.width, input.height)) / spec.atInputSize;
}

/**
 * Sigma along each axis of a map of `size` pixels: the model input's sigma scaled by the image's
 * size over the input's along that axis (the image is stretched to the input, so this is the
 * blur at the input carried to the image), each at most MAX_BLUR_SIGMA and at least
 * MIN_BLUR_SIGMA (the same copy a smaller sigma would give).
 */
export function smoothingSigmas(spec: MapSmoothingSpec, input: Size, size: Size): { sigmaY: number; sigmaX: number } {
  const s = sigmaAtInput(spec, input);
  return {
    sigmaY: Math.min(MAX_BLUR_SIGMA, Math.max(MIN_BLUR_SIGMA, (s * size.height) / input.height)),
    sigmaX: Math.min(MAX_BLUR_SIGMA, Math.max(MIN_BLUR_SIGMA, (s * size.width) / input.width)),
  };
}

/** The manifest entry for `sigma` pixels at the bundle's model input; none for 0. */
export function mapSmoothingSpec(sigma: number, input: Size): MapSmoothingSpec | undefined {
  return sigma > 0 ? { kind: 'gaussian', sigmaPx: sigma, atInputSize: Math.min(input.width, input.height) } : undefined;
}

/**
 * A feature-grid map resized (bilinear) to `size`, then blurred when the bundle sets
 * mapSmoothing. Without it the result is the bilinear resize alone, bit for bit.
 */
export function upsampleMap(addon: InvadAddon, m: Pick<Manifest, 'features' | 'input' | 'mapSmoothing'>, map: Float32Array, size: Size): Float32Array {
  const { height: h, width: w } = m.features;
  const resized = addon.resizeBilinear(map, 1, h, w, size.height, size.width);
  if (!m.mapSmoothing) return resized;
  const { sigmaY, sigmaX } = smoothingSigmas(m.mapSmoothing, m.input, size);
  return addon.gaussianBlur(resized, 1, size.height, size.width, sigmaY, sigmaX);
}

/**
 * The values a pixel threshold is taken over, for smoothed maps: each feature-grid map resized to
 * the model input and blurred there, sampled every floor(sigma) pixels along each axis (the blur
 * makes neighbours within sigma nearly equal, and a full-resolution sample of every normal would
 * not fit in memory). Without smoothing: the feature-grid maps themselves, as before.
 */
export function calibrationMapValues(
  addon: InvadAddon,
  m: Pick<Manifest, 'features' | 'input'>,
  spec: MapSmoothingSpec | undefined,
  maps: readonly Float32Array[],
): Float32Array[] {
  if (!spec) return [...maps];
  const input = { width: m.input.width, height: m.input.height };
  const stride = Math.max(1, Math.floor(sigmaAtInput(spec, input)));
  const start = Math.floor(stride / 2);
  const ys = Math.ceil((input.height - start) / stride);
  const xs = Math.ceil((input.width - start) / stride);
  return maps.map((map) => {
    const full = upsampleMap(addon, { ...m, mapSmoothing: spec }, map, input);
    const out = new Float32Array(ys * xs);
    for (let j = 0; j < ys; j++) for (let i = 0; i < xs; i++) out[j * xs + i] = full[(start + j * stride) * input.width + start + i * stride];
    return out;
  });
}
