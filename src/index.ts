/**
 * invad: reconstruction-free visual anomaly detection. Maps an image's backbone
 * features to a diffusion model's last latent by DDIM inversion and scores how
 * typical that latent is under N(0, I).
 */
export { Detector } from './detector';
export type { DetectorOptions, DetectorInfo, ScoreBatchOptions, ScoreOptions, ScoreResult, ScoreTimings } from './detector';
export type { ImageInput, RawImage } from './preprocess';
export type { ScoreComponents } from './score';
export type { ExecutionProvider, ThreadSpinning } from './engine/protocol';
export {
  BindingLoadError,
  DisposedError,
  InferenceError,
  InvadError,
  InvalidArgumentError,
  InvalidInputError,
  ModelBundleError,
  ModelMismatchError,
  ProviderError,
} from './errors';
export type { InvadErrorCode } from './errors';
export { loadBundle } from './bundle/load';
export type { LoadedBundle, LoadBundleOptions } from './bundle/load';
export { writeBundle, writeManifest } from './bundle/write';
export type { BundleContents, ModelSource, WriteBundleOptions } from './bundle/write';
export { MANIFEST_VERSION, validateManifest } from './bundle/manifest';
export type { Manifest, CalibrationSpec, InputSpec, FeatureSpec, ScoreDefinition, AlphaMode, ResizeKernel } from './bundle/manifest';
export { alphasCumprod, inversionSteps, linearBetas, spaceTimesteps } from './schedule';
export type { InversionStep } from './schedule';
export * as metrics from './metrics';
export { calibrateStep, calibrationSpec } from './calibrate';
export type { NormalSample } from './calibrate';
export { FEATURE_NORMALIZATIONS, fit } from './fit';
export type { FeatureNormalization, FitEvent, FitOptions, FitResult } from './fit';
